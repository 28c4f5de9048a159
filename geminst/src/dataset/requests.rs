//! requests.parquet: one row per request. In Gemini a connection carries exactly one request, so
//! a connection's costs are its request's costs. The rows come from the server's request log where
//! the server writes one (geminst's own and the servers in servers/), else from the load
//! generator's own records of what it sent; either way they are joined with the tracer's
//! connections by 4-tuple, and the load generator's records (latency, the client's view) are
//! joined to the log's rows by the client's address. Columns in docs/schema.md.

use serde::Serialize;

use super::{
    Table,
    serverlog::{Record, canonical},
    timeseries::TimeRow,
};
use crate::{load, trace::ConnRow};

/// Where a table's rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowSource {
    /// The server's request log: one row per connection it accepted.
    Log,
    /// The load generator's records: one row per request it sent.
    Load,
}

impl RowSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Load => "load",
        }
    }
}

/// How the sources matched up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Lines in the server's log (connections it accepted); 0 without a log.
    pub log_records: u64,
    /// Requests the load generator sent (0 when its records were not given).
    pub load_requests: u64,
    /// Connections the tracer saw accepted on the server's ports.
    pub ebpf_connections: u64,
    /// Rows of requests.parquet with a traced connection.
    pub joined: u64,
    /// Log records with no traced connection (e.g. accepted before the trace started).
    pub log_only: u64,
    /// Rows with the load generator's record of the request.
    pub load_joined: u64,
    /// Traced connections on the server's ports in no row (e.g. still open at the end).
    pub ebpf_only: u64,
}

/// One request: its log record and the load generator's record where there are, and the tracer's
/// connection when found (index into the connections given to `join`).
#[derive(Debug, Clone)]
pub struct Joined<'a> {
    pub log: Option<&'a Record>,
    pub client: Option<&'a load::Record>,
    pub conn: Option<usize>,
}

/// What joining gave: the counts, and the means over the joined requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinSummary {
    pub counts: Reconciliation,
    pub per_request: PerRequest,
}

/// Means over the rows with a traced connection, as `geminst run` prints them and run.json keeps
/// them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerRequest {
    pub requests: u64,
    /// The tracer's CPU time charged to the connection, and the server's own measure (None when
    /// no row has one: servers that write no log).
    pub cpu_us: f64,
    pub log_cpu_us: Option<f64>,
    pub energy_mj: f64,
    /// Gemini bytes: the request line, and the response header and body.
    pub app_request_bytes: f64,
    pub app_response_bytes: f64,
    /// Socket-layer (TLS record) bytes the server received and sent.
    pub socket_received_bytes: f64,
    pub socket_sent_bytes: f64,
}

impl Joined<'_> {
    /// Request line bytes, from the server's log or else the client's.
    pub fn request_bytes(&self) -> u64 {
        self.log.map(|l| l.request_bytes).or(self.client.map(|c| c.request_bytes)).unwrap_or(0)
    }

    pub fn response_header_bytes(&self) -> u64 {
        self.log
            .map(|l| l.response_header_bytes)
            .or(self.client.map(|c| c.response_header_bytes))
            .unwrap_or(0)
    }

    pub fn response_body_bytes(&self) -> u64 {
        self.log.map(|l| l.response_body_bytes).or(self.client.map(|c| c.response_body_bytes)).unwrap_or(0)
    }
}

impl PerRequest {
    /// The means of `rows` joined with `conns`, whose energies are `conn_energy_j`.
    pub fn of(rows: &[Joined], conns: &[ConnRow], conn_energy_j: &[f64]) -> Self {
        let joined: Vec<(&Joined, &ConnRow, f64)> =
            rows.iter().filter_map(|j| j.conn.map(|i| (j, &conns[i], conn_energy_j[i]))).collect();
        let n = joined.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Joined, &ConnRow, f64) -> f64| {
            joined.iter().map(|&(j, c, e)| f(j, c, e)).sum::<f64>() / n
        };
        let logged: Vec<u64> = joined.iter().filter_map(|(j, _, _)| j.log.map(|l| l.cpu_ns)).collect();
        Self {
            requests: joined.len() as u64,
            cpu_us: mean(&|_, c, _| c.cpu_ns as f64 / 1e3),
            log_cpu_us: (!logged.is_empty())
                .then(|| logged.iter().sum::<u64>() as f64 / 1e3 / logged.len() as f64),
            energy_mj: mean(&|_, _, e| e * 1e3),
            app_request_bytes: mean(&|j, _, _| j.request_bytes() as f64),
            app_response_bytes: mean(&|j, _, _| (j.response_header_bytes() + j.response_body_bytes()) as f64),
            socket_received_bytes: mean(&|_, c, _| c.sock_recv_bytes as f64),
            socket_sent_bytes: mean(&|_, c, _| c.sock_send_bytes as f64),
        }
    }
}

/// The rows of requests.parquet. With the server's `log`, one row per log record, joined with the
/// connections on (local address, peer address): when a port pair was used more than once, each
/// record takes the unused connection created last before its accept; the load generator's
/// records are joined to them by the client's address, nearest connect first. Without a log, one
/// row per load record, joined with the connections on (server address, client address), nearest
/// in time. `server_ports` are the ports the tracer followed, for the count of connections no row
/// took.
pub fn join<'a>(
    log: Option<&'a [Record]>,
    clients: &'a [load::Record],
    conns: &'a [ConnRow],
    server_ports: &[u16],
) -> (Vec<Joined<'a>>, Reconciliation) {
    let rows = match log {
        Some(log) => join_log(log, clients, conns),
        None => join_clients(clients, conns),
    };
    let mut used = vec![false; conns.len()];
    for i in rows.iter().filter_map(|j| j.conn) {
        used[i] = true;
    }
    let mut ports: Vec<u16> = server_ports.to_vec();
    ports.extend(log.into_iter().flatten().map(|r| r.local_addr.port()));
    ports.sort_unstable();
    ports.dedup();
    let on_server: Vec<usize> = (0..conns.len())
        .filter(|&i| conns[i].passive && conns[i].local_port.is_some_and(|p| ports.contains(&p)))
        .collect();
    let joined = rows.iter().filter(|j| j.conn.is_some()).count() as u64;
    let log_records = log.map_or(0, |l| l.len() as u64);
    let recon = Reconciliation {
        log_records,
        load_requests: clients.len() as u64,
        ebpf_connections: on_server.len() as u64,
        joined,
        log_only: if log.is_some() { rows.iter().filter(|j| j.conn.is_none()).count() as u64 } else { 0 },
        load_joined: rows.iter().filter(|j| j.client.is_some()).count() as u64,
        ebpf_only: on_server.iter().filter(|&&i| !used[i]).count() as u64,
    };
    (rows, recon)
}

fn join_log<'a>(log: &'a [Record], clients: &'a [load::Record], conns: &'a [ConnRow]) -> Vec<Joined<'a>> {
    let mut order: Vec<&Record> = log.iter().collect();
    order.sort_by_key(|r| (r.accept_mono_ns, r.req_id));
    let conn_picks = super::tuples::match_by_key(
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
    // The client's own address is the log's peer (also behind a proxy that passes it on).
    let client_picks = super::tuples::match_by_key(
        &order,
        clients,
        |r| Some(canonical(r.peer_addr)),
        |c| c.local_addr.map(canonical),
        |r, c| c.connect_ns.unwrap_or(c.scheduled_ns).abs_diff(r.accept_mono_ns),
    );
    order
        .iter()
        .zip(conn_picks.iter().zip(&client_picks))
        .map(|(r, (&conn, &client))| Joined { log: Some(r), client: client.map(|i| &clients[i]), conn })
        .collect()
}

fn join_clients<'a>(clients: &'a [load::Record], conns: &'a [ConnRow]) -> Vec<Joined<'a>> {
    let picks = super::tuples::match_by_key(
        clients,
        conns,
        |c| Some((canonical(c.peer_addr), canonical(c.local_addr?))),
        ConnRow::tuple,
        |c, k| k.created_ns.abs_diff(c.connect_ns.unwrap_or(c.scheduled_ns)),
    );
    clients.iter().zip(picks).map(|(c, conn)| Joined { log: None, client: Some(c), conn }).collect()
}

/// Fills the time series' `requests_done` from the completion times of the rows: the server's
/// log's where there is one, else the load generator's.
pub fn fill_requests_done(series: &mut [TimeRow], rows: &[Joined]) {
    let mut done: Vec<u64> = rows
        .iter()
        .filter_map(|j| match j.log {
            Some(l) => Some(l.done_mono_ns),
            None => j.client.filter(|c| c.completed()).and_then(|c| c.done_ns),
        })
        .collect();
    done.sort_unstable();
    for row in series {
        let from = done.partition_point(|&t| t < row.start_ns);
        let to = done.partition_point(|&t| t < row.end_ns);
        row.requests_done = Some((to - from) as u64);
    }
}

pub const FILE: &str = "requests.parquet";

/// Adds the columns of `rows` from their three sources (the log, the load generator, the tracer's
/// connection in `conns`, whose energies are `conn_energy_j`) to `t`; `source` says which one the
/// rows came from.
pub fn columns(t: &mut Table, rows: &[Joined], source: RowSource, conns: &[ConnRow], conn_energy_j: &[f64]) {
    let log = |f: fn(&Record) -> u64| rows.iter().map(move |j| j.log.map(f));
    let log_opt = |f: fn(&Record) -> Option<u64>| rows.iter().map(move |j| j.log.and_then(f));
    let client = |f: fn(&load::Record) -> Option<u64>| rows.iter().map(move |j| j.client.and_then(f));
    let conn = |j: &Joined| j.conn.map(|i| &conns[i]);
    let c = |f: fn(&ConnRow) -> u64| rows.iter().map(move |j| conn(j).map(f));
    // The request as the server logged it, or else as the client sent and read it.
    let either = |l: fn(&Record) -> Option<String>, k: fn(&load::Record) -> Option<String>| {
        rows.iter().map(move |j| j.log.map_or_else(|| j.client.and_then(k), l)).collect::<Vec<_>>()
    };
    t.str("source", rows.iter().map(|_| source.as_str()))
        .opt_u64("req_id", log(|r| r.req_id))
        .opt_str(
            "peer_addr",
            either(|r| Some(r.peer_addr.to_string()), |c| c.local_addr.map(|a| a.to_string())),
        )
        .opt_str("local_addr", either(|r| Some(r.local_addr.to_string()), |c| Some(c.peer_addr.to_string())))
        .opt_u64("accept_ns", log(|r| r.accept_mono_ns))
        .opt_u64("handshake_ns", log_opt(|r| r.handshake_mono_ns))
        .opt_u64("request_ns", log_opt(|r| r.request_mono_ns))
        .opt_u64("done_ns", log(|r| r.done_mono_ns))
        .opt_u64("accept_unix_ns", log(|r| r.accept_unix_ns))
        .opt_str("sni", rows.iter().map(|j| j.log.and_then(|l| l.sni.as_deref())))
        .opt_str("url", either(|r| r.url.clone(), |c| Some(c.url.to_string())))
        .opt_u32(
            "status",
            rows.iter()
                .map(|j| j.log.map_or_else(|| j.client.and_then(|c| c.status), |l| l.status).map(u32::from)),
        )
        .opt_str("meta", either(|r| r.meta.clone(), |c| c.meta.clone()))
        .u64("request_bytes", rows.iter().map(Joined::request_bytes))
        .u64("response_header_bytes", rows.iter().map(Joined::response_header_bytes))
        .u64("response_body_bytes", rows.iter().map(Joined::response_body_bytes))
        .opt_u64("log_tcp_bytes_read", log(|r| r.tcp_bytes_read))
        .opt_u64("log_tcp_bytes_written", log(|r| r.tcp_bytes_written))
        .opt_str(
            "tls_version",
            either(
                |r| r.tls_version.as_deref().map(String::from),
                |c| c.tls_version.map(|v| v.as_str().into()),
            ),
        )
        .opt_str(
            "tls_cipher",
            either(|r| r.tls_cipher.as_deref().map(String::from), |c| c.tls_cipher.map(String::from)),
        )
        .opt_bool(
            "tls_resumed",
            rows.iter()
                .map(|j| j.log.map_or_else(|| j.client.and_then(|c| c.tls_resumed), |l| l.tls_resumed)),
        )
        .opt_u64("log_cpu_ns", log(|r| r.cpu_ns))
        .opt_str(
            "log_tids",
            rows.iter()
                .map(|j| j.log.map(|l| l.tids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))),
        )
        .opt_str(
            "error",
            either(|r| r.error.clone(), |c| c.error.as_ref().map(|e| format!("{}: {}", e.kind, e.message))),
        )
        .opt_u64("client_seq", rows.iter().map(|j| j.client.map(|c| c.seq)))
        .opt_u64("client_scheduled_ns", client(|c| Some(c.scheduled_ns)))
        .opt_u64("client_start_ns", client(|c| c.start_ns))
        .opt_u64("client_connect_ns", client(|c| c.connect_ns))
        .opt_u64("client_handshake_ns", client(|c| c.handshake_ns))
        .opt_u64("client_first_byte_ns", client(|c| c.first_byte_ns))
        .opt_u64("client_done_ns", client(|c| c.done_ns))
        .opt_u64("latency_ns", client(|c| c.latency_ns()))
        .opt_u64("client_tcp_bytes_sent", client(|c| Some(c.tcp_bytes_sent)))
        .opt_u64("client_tcp_bytes_received", client(|c| Some(c.tcp_bytes_received)))
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
    use std::sync::Arc;

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

    fn client(seq: u64, local_port: u16, connect_ns: u64) -> load::Record {
        let mut c = load::Record::new(seq, 0, Arc::from("/x"), connect_ns, "127.0.0.1:1965".parse().unwrap());
        c.local_addr = Some(format!("127.0.0.1:{local_port}").parse().unwrap());
        c.connect_ns = Some(connect_ns);
        c.done_ns = Some(connect_ns + 70);
        c.status = Some(20);
        c
    }

    fn ids<'a>(rows: &[Joined<'a>], conns: &[ConnRow]) -> Vec<(Option<u64>, Option<u64>, Option<u64>)> {
        rows.iter()
            .map(|j| (j.log.map(|l| l.req_id), j.client.map(|c| c.seq), j.conn.map(|i| conns[i].conn_id)))
            .collect()
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
        let (rows, recon) = join(Some(&log), &[], &conns, &[]);
        let ids: Vec<(u64, Option<u64>)> =
            rows.iter().map(|j| (j.log.unwrap().req_id, j.conn.map(|i| conns[i].conn_id))).collect();
        assert_eq!(ids, vec![(1, Some(10)), (2, Some(11)), (3, Some(12)), (4, None)]);
        assert_eq!(
            recon,
            Reconciliation {
                log_records: 4,
                ebpf_connections: 4,
                joined: 3,
                log_only: 1,
                ebpf_only: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn load_records_join_the_log_by_client_address_and_stand_alone_without_it() {
        let log = vec![record(1, "127.0.0.1:40000", 1_000), record(2, "127.0.0.1:40000", 9_000)];
        let conns = vec![conn(10, 40000, 900), conn(12, 40000, 8_900), conn(13, 40005, 5_000)];
        // The client reused its port: each record goes to the log line nearest its connect.
        let clients = vec![client(0, 40000, 950), client(1, 40000, 8_950), client(2, 40005, 4_990)];
        let (rows, recon) = join(Some(&log), &clients, &conns, &[1965]);
        assert_eq!(ids(&rows, &conns), vec![(Some(1), Some(0), Some(10)), (Some(2), Some(1), Some(12))]);
        assert_eq!((recon.load_requests, recon.load_joined, recon.ebpf_only), (3, 2, 1));

        // No log: a row per load record, each with its connection.
        let (rows, recon) = join(None, &clients, &conns, &[1965]);
        assert_eq!(
            ids(&rows, &conns),
            vec![(None, Some(0), Some(10)), (None, Some(1), Some(12)), (None, Some(2), Some(13))]
        );
        assert_eq!((recon.log_records, recon.joined, recon.log_only, recon.ebpf_only), (0, 3, 0, 0));
        let mut series = vec![TimeRow { start_ns: 0, end_ns: 5_000, ..TimeRow::default() }];
        fill_requests_done(&mut series, &rows);
        assert_eq!(series[0].requests_done, Some(1), "done at 1020, 9020 and 5060: two after the interval");
    }

    #[test]
    fn requests_done_counts_completions_per_interval() {
        let log =
            vec![record(1, "127.0.0.1:1", 0), record(2, "127.0.0.1:2", 100), record(3, "127.0.0.1:3", 150)];
        let (rows, _) = join(Some(&log), &[], &[], &[]);
        let mut series = vec![
            TimeRow { start_ns: 0, end_ns: 100, ..TimeRow::default() },
            TimeRow { start_ns: 100, end_ns: 200, ..TimeRow::default() },
            TimeRow { start_ns: 200, end_ns: 300, ..TimeRow::default() },
        ];
        fill_requests_done(&mut series, &rows);
        // Done at 50, 150 and 200.
        let done: Vec<Option<u64>> = series.iter().map(|r| r.requests_done).collect();
        assert_eq!(done, vec![Some(1), Some(1), Some(1)]);
    }
}
