//! geminst's integration tests: one binary, a module per capability. Tests start the real binary
//! (`util::geminst()`), bind to 127.0.0.1 on ports they choose, stop what they start, and bound
//! every wait. Tests named `root_*` need root: in CI they run and never skip; elsewhere they skip
//! with a printed reason when not root.

mod util;

mod capture;
mod dataset;
mod load;
mod run;
mod serve;
mod trace;
