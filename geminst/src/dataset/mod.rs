//! The data set: the Parquet files and run.json a trace or run writes, their schemas (documented
//! in docs/schema.md), and the join of the tracer, the capture and the server's log.

pub mod connections;
pub mod files;
pub mod parquet;
pub mod requests;
pub mod runinfo;
pub mod serverlog;
pub mod threads;
pub mod timeseries;
pub mod tuples;

pub use files::write_atomic;
pub use parquet::Table;
pub use runinfo::RunInfo;
