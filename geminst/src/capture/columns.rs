//! The capture's counts as data-set columns, for connections.parquet and requests.parquet: one row
//! per connection, in the order given, so the join can put them beside the eBPF socket bytes.
//!
//! Names: `wire_` then the direction (`c2s` client to server, `s2c` server to client) then the
//! counter with its unit, e.g. `wire_s2c_tcp_payload_bytes`, `wire_c2s_tls_handshake_records`.
//! A connection that is absent (a request the capture did not see) is a null in every column.

use super::connection::{ConnWire, DirWire};
use crate::dataset::Table;

/// One counter of a direction: its column suffix and how to read it.
type Counter = (&'static str, fn(&DirWire) -> u64);

const COUNTERS: &[Counter] = &[
    ("packets", |d| d.packets),
    ("frame_bytes", |d| d.frame_bytes),
    ("ip_header_bytes", |d| d.ip_header_bytes),
    ("tcp_header_bytes", |d| d.tcp_header_bytes),
    ("tcp_payload_bytes", |d| d.tcp_payload_bytes),
    ("unique_payload_bytes", |d| d.unique_payload_bytes()),
    ("retransmitted_payload_bytes", |d| d.retransmitted_payload_bytes),
    ("retransmitted_packets", |d| d.retransmitted_packets),
    ("retransmitted_frame_bytes", |d| d.retransmitted_frame_bytes),
    ("pure_acks", |d| d.pure_acks),
    ("tls_handshake_records", |d| d.tls.handshake.records),
    ("tls_handshake_bytes", |d| d.tls.handshake.bytes),
    ("tls_change_cipher_spec_records", |d| d.tls.change_cipher_spec.records),
    ("tls_change_cipher_spec_bytes", |d| d.tls.change_cipher_spec.bytes),
    ("tls_alert_records", |d| d.tls.alert.records),
    ("tls_alert_bytes", |d| d.tls.alert.bytes),
    ("tls_application_data_records", |d| d.tls.application_data.records),
    ("tls_application_data_bytes", |d| d.tls.application_data.bytes),
    ("tls_unclassified_bytes", |d| d.tls.unclassified_bytes),
];

/// Flags of a direction: column suffix and reader.
type Flag = (&'static str, fn(&DirWire) -> bool);

const FLAGS: &[Flag] = &[
    ("syn", |d| d.syn),
    ("fin", |d| d.fin),
    ("rst", |d| d.rst),
    ("tls_truncated", |d| d.tls.truncated),
    ("tls_lost_sync", |d| d.tls.lost_sync),
];

/// The names of the columns [`add_wire_columns`] adds, in order.
pub fn wire_column_names() -> Vec<String> {
    let mut names = vec!["wire_first_ns".to_string(), "wire_last_ns".into(), "wire_handshake_seen".into()];
    for dir in ["c2s", "s2c"] {
        names.extend(COUNTERS.iter().map(|(n, _)| format!("wire_{dir}_{n}")));
        names.extend(FLAGS.iter().map(|(n, _)| format!("wire_{dir}_{n}")));
    }
    names
}

/// Appends the wire columns for `rows` (one per row of `table`; `None` where the capture saw no
/// connection). Counters are UInt64; flags are UInt32 0 or 1 (`Table` has no nullable Boolean
/// column yet); all are null where the connection is absent.
pub fn add_wire_columns(table: &mut Table, rows: &[Option<&ConnWire>]) {
    table.opt_u64("wire_first_ns", rows.iter().map(|c| c.map(|c| c.first_ns)));
    table.opt_u64("wire_last_ns", rows.iter().map(|c| c.map(|c| c.last_ns)));
    table.opt_u32("wire_handshake_seen", rows.iter().map(|c| c.map(|c| u32::from(c.handshake_seen))));
    for (dir, pick) in [("c2s", to_server as fn(&ConnWire) -> &DirWire), ("s2c", to_client)] {
        for (name, get) in COUNTERS {
            table.opt_u64(&format!("wire_{dir}_{name}"), rows.iter().map(|c| c.map(|c| get(pick(c)))));
        }
        for (name, get) in FLAGS {
            table.opt_u32(
                &format!("wire_{dir}_{name}"),
                rows.iter().map(|c| c.map(|c| u32::from(get(pick(c))))),
            );
        }
    }
}

fn to_server(c: &ConnWire) -> &DirWire {
    &c.to_server
}

fn to_client(c: &ConnWire) -> &DirWire {
    &c.to_client
}

/// A table of connections as the capture saw them: the 4-tuple, then the wire columns.
pub fn connections_table(conns: &[ConnWire]) -> Table {
    let mut t = Table::new();
    t.str("server_ip", conns.iter().map(|c| c.server.ip().to_string()))
        .u32("server_port", conns.iter().map(|c| u32::from(c.server.port())))
        .str("client_ip", conns.iter().map(|c| c.client.ip().to_string()))
        .u32("client_port", conns.iter().map(|c| u32::from(c.client.port())));
    let rows: Vec<Option<&ConnWire>> = conns.iter().map(Some).collect();
    add_wire_columns(&mut t, &rows);
    t
}
