//! Wire bytes: a libpcap capture that counts, per TCP connection and direction, frames, IP and TCP
//! header bytes, payload, retransmissions and the TLS record layer; and `geminst calc`, which
//! predicts the same quantities from the protocol specifications. See docs/wire-bytes.md.
//!
//! The public face: [`Capture`] (start on an interface, stop to get [`CaptureOutput`]),
//! [`TlsRecordParser`] for one direction's record stream, and
//! [`calc::predict`] for a prediction.

pub mod calc;
mod calc_args;
pub mod certs;
mod columns;
mod connection;
pub mod packet;
mod sniffer;
mod stream;
mod tcp_model;
pub mod tls_records;

pub use calc_args::{CalcArgs, calc_command};
pub use columns::{add_wire_columns, connections_table, wire_column_names};
pub use connection::{ConnWire, DirWire, Skipped};
pub use sniffer::{
    Capture, CaptureConfig, CaptureOutput, CaptureStats, DEFAULT_BUFFER_BYTES, DEFAULT_SNAPLEN, WireTotals,
};
pub use tls_records::{RecordTally, TlsCounts, TlsRecordParser};
