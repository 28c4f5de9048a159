//! geminst: relates the energy a server spends to the work it does.
//!
//! One module per capability, each with a small public face; docs/architecture.md draws the
//! pipeline. The measuring pieces (`trace`, `capture`, `energy`) each return a typed result;
//! `session` runs them together, `dataset` assembles and writes what they measured, and `run`
//! composes a whole run. The server never depends on the tracer and the tracer never depends on
//! the server: they meet only in the request-log format (`dataset::serverlog`) and in `run`.

pub mod capture;
pub mod clock;
pub mod dataset;
pub mod energy;
pub mod exit;
pub mod load;
pub mod run;
pub mod serve;
pub mod session;
pub mod signals;
pub mod trace;
