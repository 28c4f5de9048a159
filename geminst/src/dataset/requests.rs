//! requests.parquet: the server's log joined with the tracer's connections by 4-tuple. In Gemini
//! a connection carries exactly one request, so a connection's costs are its request's costs.
//! Columns in docs/schema.md.

use serde::Serialize;

use super::{
    Table,
    serverlog::{Record, canonical},
    timeseries::TimeRow,
};
use crate::trace::ConnRow;

/// How the two sides matched up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Lines in the server's log (connections it accepted).
    pub log_records: u64,
    /// Connections the tracer saw accepted on the server's ports.
    pub ebpf_connections: u64,
    /// Rows of requests.parquet with both sides.
    pub joined: u64,
    /// Log records with no traced connection (e.g. accepted before the trace started).
    pub log_only: u64,
    /// Traced connections on the server's ports with no log record (e.g. still open at the end).
    pub ebpf_only: u64,
}

/// One request: its log record and, when found, the tracer's connection (index into the
/// connections given to `join`).
#[derive(Debug, Clone)]
pub struct Joined<'a> {
    pub log: &'a Record,
    pub conn: Option<usize>,
}

/// What joining the log gave: the counts, and the means over the joined requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinSummary {
    pub counts: Reconciliation,
    pub per_request: PerRequest,
}

/// Means over the joined requests (those with both a log record and a traced connection), as
/// `geminst run` prints them and run.json keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerRequest {
    pub requests: u64,
    /// The tracer's CPU time charged to the connection, and the server's own measure.
    pub cpu_us: f64,
    pub log_cpu_us: f64,
    pub energy_mj: f64,
    /// Gemini bytes: the request line, and the response header and body.
    pub app_request_bytes: f64,
    pub app_response_bytes: f64,
    /// Socket-layer (TLS record) bytes the server received and sent.
    pub socket_received_bytes: f64,
    pub socket_sent_bytes: f64,
}

impl PerRequest {
    /// The means of `rows` joined with `conns`, whose energies are `conn_energy_j`.
    pub fn of(rows: &[Joined], conns: &[ConnRow], conn_energy_j: &[f64]) -> Self {
        let joined: Vec<(&Record, &ConnRow, f64)> =
            rows.iter().filter_map(|j| j.conn.map(|i| (j.log, &conns[i], conn_energy_j[i]))).collect();
        let n = joined.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Record, &ConnRow, f64) -> f64| {
            joined.iter().map(|&(l, c, e)| f(l, c, e)).sum::<f64>() / n
        };
        Self {
            requests: joined.len() as u64,
            cpu_us: mean(&|_, c, _| c.cpu_ns as f64 / 1e3),
            log_cpu_us: mean(&|l, _, _| l.cpu_ns as f64 / 1e3),
            energy_mj: mean(&|_, _, e| e * 1e3),
            app_request_bytes: mean(&|l, _, _| l.request_bytes as f64),
            app_response_bytes: mean(&|l, _, _| (l.response_header_bytes + l.response_body_bytes) as f64),
            socket_received_bytes: mean(&|_, c, _| c.sock_recv_bytes as f64),
            socket_sent_bytes: mean(&|_, c, _| c.sock_send_bytes as f64),
        }
    }
}

/// Joins log records with connections on (local address, peer address). When a port pair was
/// used more than once, each record takes the unused connection created last before its accept.
pub fn join<'a>(log: &'a [Record], conns: &'a [ConnRow]) -> (Vec<Joined<'a>>, Reconciliation) {
    let mut order: Vec<&Record> = log.iter().collect();
    order.sort_by_key(|r| (r.accept_mono_ns, r.req_id));
    let picks = super::tuples::match_by_key(
        &order,
        conns,
        |r| Some((canonical(r.local_addr), canonical(r.peer_addr))),
        ConnRow::tuple,
        |r, c| {
            // Created before the accept: the closer the better; after it: only if nothing else.
            if c.created_ns <= r.accept_mono_ns {
                (0, r.accept_mono_ns - c.created_ns)
            } else {
                (1, c.created_ns - r.accept_mono_ns)
            }
        },
    );
    let mut used = vec![false; conns.len()];
    for i in picks.iter().flatten() {
        used[*i] = true;
    }
    let rows: Vec<Joined> = order.iter().zip(&picks).map(|(r, &conn)| Joined { log: r, conn }).collect();
    let server_ports: Vec<u16> = {
        let mut p: Vec<u16> = log.iter().map(|r| r.local_addr.port()).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let on_server: Vec<usize> = (0..conns.len())
        .filter(|&i| conns[i].passive && conns[i].local_port.is_some_and(|p| server_ports.contains(&p)))
        .collect();
    let joined = rows.iter().filter(|j| j.conn.is_some()).count() as u64;
    let recon = Reconciliation {
        log_records: log.len() as u64,
        ebpf_connections: on_server.len() as u64,
        joined,
        log_only: log.len() as u64 - joined,
        ebpf_only: on_server.iter().filter(|&&i| !used[i]).count() as u64,
    };
    (rows, recon)
}

/// Fills the time series' `requests_done` from the log's completion times.
pub fn fill_requests_done(series: &mut [TimeRow], log: &[Record]) {
    let mut done: Vec<u64> = log.iter().map(|r| r.done_mono_ns).collect();
    done.sort_unstable();
    for row in series {
        let from = done.partition_point(|&t| t < row.start_ns);
        let to = done.partition_point(|&t| t < row.end_ns);
        row.requests_done = Some((to - from) as u64);
    }
}

pub const FILE: &str = "requests.parquet";

/// Adds the log's columns and the tracer's per-connection columns of `rows` (joined with `conns`,
/// whose energies are `conn_energy_j`) to `t`.
pub fn columns(t: &mut Table, rows: &[Joined], conns: &[ConnRow], conn_energy_j: &[f64]) {
    let l = |f: fn(&Record) -> u64| rows.iter().map(move |j| f(j.log));
    let conn = |j: &Joined| j.conn.map(|i| &conns[i]);
    let c = |f: fn(&ConnRow) -> u64| rows.iter().map(move |j| conn(j).map(f));
    t.u64("req_id", l(|r| r.req_id))
        .str("peer_addr", rows.iter().map(|j| j.log.peer_addr.to_string()))
        .str("local_addr", rows.iter().map(|j| j.log.local_addr.to_string()))
        .u64("accept_ns", l(|r| r.accept_mono_ns))
        .opt_u64("handshake_ns", rows.iter().map(|j| j.log.handshake_mono_ns))
        .opt_u64("request_ns", rows.iter().map(|j| j.log.request_mono_ns))
        .u64("done_ns", l(|r| r.done_mono_ns))
        .u64("accept_unix_ns", l(|r| r.accept_unix_ns))
        .opt_str("sni", rows.iter().map(|j| j.log.sni.as_deref()))
        .opt_str("url", rows.iter().map(|j| j.log.url.as_deref()))
        .opt_u32("status", rows.iter().map(|j| j.log.status.map(u32::from)))
        .opt_str("meta", rows.iter().map(|j| j.log.meta.as_deref()))
        .u64("request_bytes", l(|r| r.request_bytes))
        .u64("response_header_bytes", l(|r| r.response_header_bytes))
        .u64("response_body_bytes", l(|r| r.response_body_bytes))
        .u64("log_tcp_bytes_read", l(|r| r.tcp_bytes_read))
        .u64("log_tcp_bytes_written", l(|r| r.tcp_bytes_written))
        .opt_str("tls_version", rows.iter().map(|j| j.log.tls_version.as_deref()))
        .opt_str("tls_cipher", rows.iter().map(|j| j.log.tls_cipher.as_deref()))
        .opt_u32("tls_resumed", rows.iter().map(|j| j.log.tls_resumed.map(u32::from)))
        .u64("log_cpu_ns", l(|r| r.cpu_ns))
        .str(
            "log_tids",
            rows.iter().map(|j| j.log.tids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")),
        )
        .opt_str("error", rows.iter().map(|j| j.log.error.as_deref()))
        .opt_u64("conn_id", c(|c| c.conn_id))
        .opt_u64("cpu_ns", c(|c| c.cpu_ns))
        .opt_u64("sock_send_bytes", c(|c| c.sock_send_bytes))
        .opt_u64("sock_recv_bytes", c(|c| c.sock_recv_bytes))
        .opt_u64("retransmits", c(|c| c.retransmits))
        .opt_u64("file_read_bytes", c(|c| c.file_read_bytes))
        .opt_u64("file_write_bytes", c(|c| c.file_write_bytes))
        .opt_u64("block_read_bytes", c(|c| c.block_read_bytes))
        .opt_u64("block_write_bytes", c(|c| c.block_write_bytes))
        .opt_u64("established_ns", rows.iter().map(|j| conn(j).and_then(|c| c.established_ns)))
        .opt_u64("closed_ns", rows.iter().map(|j| conn(j).and_then(|c| c.closed_ns)))
        .opt_f64("energy_j", rows.iter().map(|j| j.conn.map(|i| conn_energy_j[i])));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, peer: &str, accept: u64) -> Record {
        let mut r: Record = serde_json::from_str(super::super::serverlog::tests_line()).unwrap();
        r.req_id = id;
        r.peer_addr = peer.parse().unwrap();
        r.accept_mono_ns = accept;
        r.done_mono_ns = accept + 50;
        r
    }

    fn conn(id: u64, remote_port: u16, created: u64) -> ConnRow {
        ConnRow::accepted_on_loopback(id, remote_port, created)
    }

    #[test]
    fn joins_by_tuple_and_takes_the_latest_reuse_before_accept() {
        let log = vec![
            record(1, "127.0.0.1:40000", 1_000),
            record(2, "[::ffff:127.0.0.1]:40001", 2_000),
            record(3, "127.0.0.1:40000", 9_000),
            record(4, "127.0.0.1:49999", 9_500),
        ];
        let conns =
            vec![conn(10, 40000, 900), conn(11, 40001, 1_900), conn(12, 40000, 8_900), conn(13, 40002, 100)];
        let (rows, recon) = join(&log, &conns);
        let ids: Vec<(u64, Option<u64>)> =
            rows.iter().map(|j| (j.log.req_id, j.conn.map(|i| conns[i].conn_id))).collect();
        assert_eq!(ids, vec![(1, Some(10)), (2, Some(11)), (3, Some(12)), (4, None)]);
        assert_eq!(
            recon,
            Reconciliation { log_records: 4, ebpf_connections: 4, joined: 3, log_only: 1, ebpf_only: 1 }
        );
    }

    #[test]
    fn requests_done_counts_completions_per_interval() {
        let log =
            vec![record(1, "127.0.0.1:1", 0), record(2, "127.0.0.1:2", 100), record(3, "127.0.0.1:3", 150)];
        let mut series = vec![
            TimeRow { start_ns: 0, end_ns: 100, ..TimeRow::default() },
            TimeRow { start_ns: 100, end_ns: 200, ..TimeRow::default() },
            TimeRow { start_ns: 200, end_ns: 300, ..TimeRow::default() },
        ];
        fill_requests_done(&mut series, &log);
        // Done at 50, 150 and 200.
        let done: Vec<Option<u64>> = series.iter().map(|r| r.requests_done).collect();
        assert_eq!(done, vec![Some(1), Some(1), Some(1)]);
    }
}
