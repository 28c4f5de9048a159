//! The data-set writer on a measurement built by hand, with no kernel, capture or root involved:
//! the files pyarrow reads back (schema and every value) must equal the golden copies in
//! testdata/golden/dataset/. Run with GEMINST_BLESS=1 to write them anew after a deliberate
//! change, and read the diff before committing it.

use std::path::Path;

use geminst::{
    capture::{CaptureOutput, ConnWire, DirWire, certs::CertChain},
    dataset::{Measurement, Requests, RunInfo, timeseries::Sample, write_run},
    energy::{CpuPowerModel, MachineInterval, PowerLog, PowerSourceInfo},
    load,
    trace::{ConnRow, Counts, EbpfMeasurement, StopReason, ThreadRow},
};
use serde_json::Value;

use crate::util;

/// One request the server logged whose connection the tracer and the capture saw, one the server
/// logged with no traced connection (accepted before the trace), in the format of
/// docs/request-log.md.
const LOG: &str = r#"{"req_id":1,"peer_addr":"127.0.0.1:52158","local_addr":"127.0.0.1:19651","accept_mono_ns":1000200,"accept_unix_ns":1795322420545865591,"handshake_mono_ns":1002000,"handshake_unix_ns":1795322420547656753,"request_mono_ns":1002100,"request_unix_ns":1795322420547711454,"done_mono_ns":1002300,"done_unix_ns":1795322420547943841,"sni":"localhost","url":"gemini://localhost:19651/_bench/bytes/1024","status":20,"meta":"text/plain","request_bytes":45,"response_header_bytes":15,"response_body_bytes":1024,"tcp_bytes_read":574,"tcp_bytes_written":1831,"tls_version":"TLSv1.3","tls_cipher":"TLS13_AES_128_GCM_SHA256","tls_resumed":false,"tids":[101],"cpu_ns":1240000,"polls":1,"error":null}
{"req_id":2,"peer_addr":"127.0.0.1:52170","local_addr":"127.0.0.1:19651","accept_mono_ns":900,"accept_unix_ns":1795322420544865591,"handshake_mono_ns":null,"handshake_unix_ns":null,"request_mono_ns":null,"request_unix_ns":null,"done_mono_ns":1500000,"done_unix_ns":1795322420546865591,"sni":null,"url":null,"status":null,"meta":null,"request_bytes":0,"response_header_bytes":0,"response_body_bytes":0,"tcp_bytes_read":0,"tcp_bytes_written":0,"tls_version":null,"tls_cipher":null,"tls_resumed":null,"tids":[100],"cpu_ns":30000,"polls":2,"error":"handshake: timed out"}
not a log record
"#;

fn conn(id: u64, remote_port: Option<u16>, created_ns: u64) -> ConnRow {
    ConnRow {
        conn_id: id,
        tgid: Some(100),
        local_ip: remote_port.map(|_| "127.0.0.1".into()),
        local_port: remote_port.map(|_| 19651),
        remote_ip: remote_port.map(|_| "127.0.0.1".into()),
        remote_port,
        passive: remote_port.is_some(),
        created_ns,
        ..ConnRow::default()
    }
}

fn wire(client_port: u16, first_ns: u64, up: (u64, u64, u64), down: (u64, u64, u64)) -> ConnWire {
    let dir = |(packets, frame_bytes, payload): (u64, u64, u64)| DirWire {
        packets,
        frame_bytes,
        ip_header_bytes: 20 * packets,
        tcp_header_bytes: frame_bytes - 14 * packets - 20 * packets - payload,
        tcp_payload_bytes: payload,
        syn: true,
        fin: true,
        mss_option: Some(65495),
        ..DirWire::default()
    };
    ConnWire {
        server: "127.0.0.1:19651".parse().unwrap(),
        client: format!("127.0.0.1:{client_port}").parse().unwrap(),
        first_ns,
        last_ns: first_ns + 2_500,
        handshake_seen: true,
        to_server: dir(up),
        to_client: dir(down),
    }
}

/// A trace of one server process: two threads, a served connection, one the log does not know,
/// one to elsewhere without a tuple; a capture that saw the served one and one the tracer did not;
/// the meter's two intervals and the time series' two samples.
fn measurement() -> Measurement {
    let mut served = conn(1, Some(52158), 1_000_000);
    served.established_ns = Some(1_000_100);
    served.closed_ns = Some(1_002_300);
    served.sock_send_bytes = 1831;
    served.sock_recv_bytes = 574;
    served.sock_sends = 3;
    served.sock_recvs = 2;
    served.cpu_ns = 1_250_000;
    served.tids = "101".into();
    let mut unlogged = conn(2, Some(52160), 1_100_000);
    unlogged.cpu_ns = 40_000;
    let mut database = conn(3, None, 1_200_000);
    database.passive = false;
    database.sock_send_bytes = 100;
    database.cpu_ns = 10_000;
    let thread = |tid: u32, oncpu_ns: u64, conn_cpu_ns: u64| ThreadRow {
        tgid: 100,
        tid,
        comm: format!("worker-{tid}"),
        oncpu_ns,
        voluntary_switches: 4,
        involuntary_switches: 1,
        wait_ns: 2_000,
        first_seen_ns: 1_000,
        last_seen_ns: 2_000_000,
        seen_at_start: true,
        conn_cpu_ns,
        ..ThreadRow::default()
    };
    let counts = |cpu_ns: u64, connections_closed: u64| Counts {
        cpu_ns,
        sock_send_bytes: 1931,
        sock_recv_bytes: 574,
        connections_closed,
        ..Counts::default()
    };
    Measurement {
        ebpf: EbpfMeasurement {
            threads: vec![thread(100, 300_000, 50_000), thread(101, 1_300_000, 1_250_000)],
            connections: vec![served, unlogged, database],
            lost: [("ebpf.conn_map_full".to_string(), 0), ("ebpf.slice_lost".to_string(), 1)].into(),
            start_ns: 1_000,
            end_ns: 2_001_000,
            pids: vec![100],
            ports: vec![19651],
            final_counts: counts(1_600_000, 1),
            ..EbpfMeasurement::default()
        },
        capture: Some(CaptureOutput {
            connections: vec![
                wire(52158, 1_000_010, (7, 1044, 574), (5, 2169, 1831)),
                wire(52999, 1_500_000, (1, 74, 0), (1, 74, 0)),
            ],
            stats: Default::default(),
        }),
        capture_problem: None,
        power: PowerLog {
            source: PowerSourceInfo {
                source: "model",
                rapl_domains: None,
                rapl_unavailable: Some("no powercap interface".into()),
                model: CpuPowerModel::new(2, 1.0, 4.0).unwrap(),
                attribution: "test",
            },
            intervals: vec![
                MachineInterval {
                    start_ns: 1_000,
                    end_ns: 1_001_000,
                    busy_cpu_ns: 2_000_000,
                    energy_j: 0.008,
                },
                MachineInterval {
                    start_ns: 1_001_000,
                    end_ns: 2_001_000,
                    busy_cpu_ns: 1_000_000,
                    energy_j: 0.005,
                },
            ],
        },
        samples: vec![
            Sample {
                end_ns: 1_001_000,
                counts: counts(1_000_000, 0),
                rss_bytes: Some(8 << 20),
                wire: Some(geminst::capture::WireTotals { packets: 10, frame_bytes: 3000 }),
            },
            Sample {
                end_ns: 2_001_000,
                counts: counts(1_600_000, 1),
                rss_bytes: Some(9 << 20),
                wire: Some(geminst::capture::WireTotals { packets: 14, frame_bytes: 3361 }),
            },
        ],
    }
}

/// The load generator's record of request 1, as it saw it from the client's end.
fn client() -> load::Record {
    let mut c = load::Record::new(
        0,
        0,
        "gemini://localhost:19651/_bench/bytes/1024".into(),
        999_000,
        "127.0.0.1:19651".parse().unwrap(),
    );
    c.local_addr = Some("127.0.0.1:52158".parse().unwrap());
    c.start_ns = Some(999_500);
    c.connect_ns = Some(1_000_150);
    c.handshake_ns = Some(1_002_050);
    c.first_byte_ns = Some(1_002_250);
    c.done_ns = Some(1_002_400);
    c.status = Some(20);
    c.meta = Some("text/plain".into());
    c.request_bytes = 45;
    c.response_header_bytes = 15;
    c.response_body_bytes = 1024;
    c.tcp_bytes_sent = 574;
    c.tcp_bytes_received = 1831;
    c
}

/// Every column of a Parquet file as pyarrow reads it: name, type, nullability, values.
const DUMP: &str = r#"
import json, sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(json.dumps({
    "schema": [[f.name, str(f.type), f.nullable] for f in t.schema],
    "rows": t.to_pylist(),
}, indent=1, sort_keys=True))
"#;

fn golden_dir() -> std::path::PathBuf {
    util::repo_root().join("testdata/golden/dataset")
}

/// Checks a dump's schema against docs/schema.md: every column in order, its type, and whether it
/// may be null ("uint64, null").
fn check_documented_types(file: &str, dump: &str) {
    let dump: Value = serde_json::from_str(dump).unwrap();
    let written: Vec<(String, String, bool)> = dump["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into(), f[2].as_bool().unwrap()))
        .collect();
    let documented: Vec<(String, String, bool)> =
        util::documented_table_in("docs/schema.md", &format!("## {file}"))
            .into_iter()
            .map(|(name, ty)| {
                let nullable = ty.ends_with(", null");
                (name, ty.trim_end_matches(", null").to_string(), nullable)
            })
            .collect();
    assert_eq!(written, documented, "{file}: (column, type, nullable) differ from docs/schema.md");
}

fn compare(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("GEMINST_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (GEMINST_BLESS=1 writes it)", path.display()));
    let (want, got): (Value, Value) =
        (serde_json::from_str(&want).unwrap(), serde_json::from_str(actual).unwrap());
    assert_eq!(got, want, "{name} differs from its golden copy in {}", golden_dir().display());
}

#[test]
fn dataset_writer_matches_its_golden_files() {
    let dir = util::temp_dir("dataset-golden");
    let log = dir.join("server-log.jsonl");
    std::fs::write(&log, LOG).unwrap();
    let cert = CertChain { der_bytes: vec![350], key: "ECDSA P-256".into(), signature_bytes: 71 };
    let m = measurement();
    let mut info = RunInfo::begin();
    let clients = vec![client()];
    let requests = Requests { server_log: Some(&log), clients: &clients, cert: &cert, predict: true };
    let join = write_run(&dir, &mut info, &m, StopReason::Duration, Some(2.0), requests).unwrap();
    let join = join.expect("a log was given");
    // The join's counts follow from the inputs: two log lines, two traced connections on the
    // server's port, one of them joined.
    assert_eq!((join.counts.log_records, join.counts.ebpf_connections, join.counts.joined), (2, 2, 1));
    assert_eq!((join.counts.log_only, join.counts.ebpf_only), (1, 1));
    assert_eq!((join.counts.load_requests, join.counts.load_joined), (1, 1));
    assert_eq!(info.lost["log.malformed_lines"], 1);
    for file in ["requests", "connections", "threads", "timeseries"] {
        let parquet = dir.join(format!("{file}.parquet"));
        let dump = util::python(DUMP, &[parquet.to_str().unwrap()]);
        check_documented_types(&format!("{file}.parquet"), &dump);
        compare(&format!("{file}.json"), &dump);
    }
    // The run.json sections that do not depend on the machine or the moment.
    info.write(&dir).unwrap();
    let run: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let stable = serde_json::json!({
        "lost": run["lost"], "notes": run["notes"], "join": run["join"], "per_request": run["per_request"],
        "power": run["power"], "trace": run["trace"], "stopped_by": run["stopped_by"],
    });
    compare("run.json", &serde_json::to_string_pretty(&stable).unwrap());
    assert!(!Path::new(&dir.join("requests.parquet.tmp")).exists());
}

#[test]
fn dataset_writer_without_a_server_log_has_a_row_per_load_request() {
    let dir = util::temp_dir("dataset-golden-load");
    let cert = CertChain { der_bytes: vec![350], key: "ECDSA P-256".into(), signature_bytes: 71 };
    let m = measurement();
    // Request 1 as before; one on connection 2, which no log knows; one that never connected.
    let mut second = client();
    second.seq = 1;
    second.local_addr = Some("127.0.0.1:52160".parse().unwrap());
    second.connect_ns = Some(1_100_050);
    second.done_ns = Some(1_300_000);
    let mut failed = load::Record::new(
        2,
        0,
        "gemini://localhost:19651/x".into(),
        1_500_000,
        "127.0.0.1:19651".parse().unwrap(),
    );
    failed.error = Some(load::RequestError { kind: load::ErrorKind::Connect, message: "refused".into() });
    let clients = vec![client(), second, failed];
    let requests = Requests { server_log: None, clients: &clients, cert: &cert, predict: false };
    let mut info = RunInfo::begin();
    let join = write_run(&dir, &mut info, &m, StopReason::Duration, Some(2.0), requests).unwrap().unwrap();
    assert_eq!((join.counts.log_records, join.counts.load_requests, join.counts.joined), (0, 3, 2));
    assert_eq!((join.counts.ebpf_only, join.per_request.requests), (0, 2));
    assert_eq!(join.per_request.log_cpu_us, None, "no server log, no server's own measure");
    let parquet = dir.join("requests.parquet");
    let dump = util::python(DUMP, &[parquet.to_str().unwrap()]);
    check_documented_types("requests.parquet", &dump);
    compare("requests-load.json", &dump);
}
