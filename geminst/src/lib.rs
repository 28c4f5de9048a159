//! geminst: relates the energy a server spends to the work it does.
//!
//! One module per capability, each with a small public face; see ../shared/DESIGN.md and the
//! README. The server never depends on the tracer and the tracer never depends on the server:
//! they meet only in the request-log format (`serve::log`) and in `run`.

pub mod capture;
pub mod clock;
pub mod dataset;
pub mod energy;
pub mod exit;
pub mod load;
pub mod run;
pub mod serve;
pub mod signals;
pub mod trace;
