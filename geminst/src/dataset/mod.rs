//! The data set: the Parquet files and run.json a trace or run writes, their schemas (documented
//! in docs/schema.md), and the steps that make it from a measurement: the wire match, the log join,
//! the energy attribution (`assemble`), then the files (`write`).

pub mod assemble;
pub mod attribution;
pub mod connections;
pub mod describe;
pub mod files;
pub mod measurement;
pub mod parquet;
pub mod requests;
pub mod runinfo;
pub mod serverlog;
pub mod threads;
pub mod timeseries;
pub mod tuples;
pub mod wire;
mod write;

pub use assemble::{DataSet, RequestInputs, assemble};
pub use files::write_atomic;
pub use measurement::Measurement;
pub use parquet::Table;
pub use runinfo::RunInfo;
pub use write::{Requests, write_run};
