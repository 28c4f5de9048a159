//! `geminst trace`: attributes on-CPU time, socket, block and file I/O to each thread and TCP
//! connection of one or more running processes, with eBPF programs that aggregate in kernel maps.
//!
//! The public face: [`Tracer`] (start, poll, stop), which returns what the eBPF programs measured
//! ([`EbpfMeasurement`]); the arguments; and [`command`], the CLI, which runs a measuring session
//! (`session.rs`) and writes its data set (`dataset/`).

mod args;
mod btf;
mod command;
mod measurement;
mod offsets;
mod probes;
pub mod procfs;
mod rows;
mod summary;
pub mod tracefs;
mod tracer;

pub use args::{MeasureArgs, TraceArgs};
pub use command::command;
pub use measurement::{ConnRow, Counts, EbpfMeasurement, ThreadRow, socket_addr};
pub use probes::ProgramStats;
pub use summary::print_programs;
pub use tracer::{StopReason, TraceConfig, Tracer, require_root};
