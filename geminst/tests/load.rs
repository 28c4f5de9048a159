//! Integration tests of the load capability: `geminst load` run as a process against a stand-in
//! server (tests/load/standin.rs) that records what it received, and against Jetforce. Figures
//! are checked against the server's own account and against pyarrow reading `--out`.

mod standin;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::Command,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Duration,
};

use serde_json::Value;
use standin::{Config, StandIn};

use crate::util;

/// Load tests that judge timing run alone among the load tests (and hold `util::serial()`
/// against the other capabilities' measuring tests); the others share.
static TIMING: RwLock<()> = RwLock::new(());

fn timing_alone() -> (RwLockWriteGuard<'static, ()>, std::sync::MutexGuard<'static, ()>) {
    let mine = TIMING.write().unwrap_or_else(|e| e.into_inner());
    (mine, util::serial())
}

fn shared() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(|e| e.into_inner())
}

/// Runs `geminst load ARGS` to its end; returns (exit code, stdout, stderr).
fn load(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(util::geminst());
    cmd.arg("load").args(args);
    let (status, out, err) = util::spawn(&mut cmd).output(Duration::from_secs(60));
    (status.code().unwrap_or(-1), out, err)
}

/// Runs with `--json --quiet` and returns the exit code and the parsed summary.
fn load_json(args: &[&str]) -> (i32, Value, String) {
    let mut all = args.to_vec();
    all.extend(["--json", "--quiet"]);
    let (code, out, err) = load(&all);
    let summary =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {out}\n{err}"));
    (code, summary, err)
}

/// The columns of a Parquet file as read by pyarrow: column name → list of values.
fn parquet(path: &Path) -> BTreeMap<String, Vec<Value>> {
    let script = "import json, sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(json.dumps({'schema': {f.name: str(f.type) for f in t.schema}, 'columns': t.to_pydict()}))";
    let out = util::python(script, &[path.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let cols = v["columns"].as_object().unwrap();
    cols.iter().map(|(k, v)| (k.clone(), v.as_array().unwrap().clone())).collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not an unsigned integer"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[test]
fn request_and_response_sizes_are_exact() {
    let _shared = shared();
    let server = StandIn::start(Config::default());
    let dir = util::temp_dir("load-sizes");
    let out = dir.join("r.parquet");
    let base = server.url("/");
    let (code, summary, err) = load_json(&[
        &base,
        "--response-bytes",
        "5000",
        "--request-bytes",
        "300",
        "--concurrency",
        "2",
        "--count",
        "20",
        // Two runtime threads: the dispatcher on one, requests on both.
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(summary["threads"], 2);
    let seen = server.wait_seen(20, Duration::from_secs(10));
    assert_eq!(seen.len(), 20);
    let prefix = format!("{}_bench/bytes/5000?pad=", base);
    for s in &seen {
        assert_eq!(s.request.len(), 300, "{:?}", String::from_utf8_lossy(&s.request));
        assert!(s.request.ends_with(b"\r\n") && s.request.starts_with(prefix.as_bytes()));
        assert_eq!((s.status, s.body_bytes, s.error.as_deref()), (20, 5000, None));
    }
    assert_eq!(summary["requests"]["ok"], 20);
    assert_eq!(summary["bytes"]["response_body"], 100_000);
    assert_eq!(summary["bytes"]["request"], 6000);

    let cols = parquet(&out);
    let n = cols["seq"].len();
    assert_eq!(n, 20);
    let by_peer: HashMap<String, &standin::Seen> = seen.iter().map(|s| (s.peer.to_string(), s)).collect();
    for (i, _) in cols["seq"].iter().enumerate() {
        let col = |name: &str| &cols[name][i];
        assert_eq!(u(col("status")), 20);
        assert_eq!(u(col("request_bytes")), 300);
        assert_eq!(u(col("response_body_bytes")), 5000);
        assert_eq!(u(col("response_header_bytes")), "20 application/octet-stream\r\n".len() as u64);
        assert_eq!(col("tls_version"), "1.3");
        assert_eq!(col("tls_cipher"), "TLS13_AES_128_GCM_SHA256");
        assert_eq!(col("tls_close_notify"), true);
        assert!(col("error_kind").is_null() && col("error").is_null());
        // The server's account of the same connection, joined on the client's socket address.
        let s = by_peer[col("local_addr").as_str().unwrap()];
        assert_eq!(s.cipher.as_deref(), col("tls_cipher").as_str());
        assert_eq!(u(col("tcp_bytes_sent")), s.tcp_bytes_received, "row {i}");
        assert_eq!(u(col("tcp_bytes_received")), s.tcp_bytes_sent, "row {i}");
        assert_eq!(col("peer_addr").as_str().unwrap(), server.addr.to_string());
        let times: Vec<u64> =
            ["scheduled_ns", "start_ns", "connect_ns", "handshake_ns", "first_byte_ns", "done_ns"]
                .iter()
                .map(|c| u(col(c)))
                .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "stages out of order: {times:?}");
        assert_eq!(u(col("latency_ns")), times[5] - times[0]);
        assert_eq!(u(col("start_lag_ns")), times[1] - times[0]);
        // Closed loop: a request is due when it starts, so it cannot start late.
        assert_eq!(u(col("start_lag_ns")), 0, "closed loop, row {i}");
        // The server accepted the connection between the client's start and its connect.
        assert!(times[1] <= s.accept_ns && s.accept_ns <= times[2] + 50_000_000, "accept {}", s.accept_ns);
    }
}

#[test]
fn every_request_size_from_unpadded_to_the_limit() {
    let _shared = shared();
    let server = StandIn::start(Config::default());
    let url = server.url("/_bench/bytes/10");
    let unpadded = url.len() + 2;
    let sizes = [unpadded, unpadded + 1, unpadded + 4, unpadded + 5, unpadded + 6, 1026];
    for size in sizes {
        let (code, summary, err) = load_json(&[&url, "--request-bytes", &size.to_string(), "--count", "2"]);
        assert_eq!(code, 0, "size {size}: {summary}\n{err}");
    }
    let seen = server.wait_seen(2 * sizes.len(), Duration::from_secs(10));
    let mut got: Vec<usize> = seen.iter().map(|s| s.request.len()).collect();
    got.sort();
    let mut want: Vec<usize> = sizes.iter().flat_map(|&s| [s, s]).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(seen.iter().all(|s| s.status == 20 && s.body_bytes == 10));

    // Sizes that cannot be sent are refused before anything is sent, with exit code 2.
    let (code, _, err) = load(&[&url, "--request-bytes", "1027", "--count", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("1027") && err.contains("1026"), "{err}");
    let (code, _, err) = load(&[&url, "--request-bytes", &(unpadded - 1).to_string(), "--count", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("smaller than the {unpadded} bytes")), "{err}");
    assert_eq!(server.seen().len(), 2 * sizes.len());
}

/// Least-squares slope of times (ns) against their index: ns per request.
fn slope(times: &[u64]) -> f64 {
    let n = times.len() as f64;
    let t0 = times[0] as f64;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for (i, &t) in times.iter().enumerate() {
        let (x, y) = (i as f64, t as f64 - t0);
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    (n * sxy - sx * sy) / (n * sxx - sx * sx)
}

#[test]
fn open_loop_keeps_its_rate() {
    let _alone = timing_alone();
    let server = StandIn::start(Config::default());
    let dir = util::temp_dir("load-rate");
    let out = dir.join("r.parquet");
    let (code, summary, err) = load_json(&[
        &server.url("/"),
        "--rate",
        "200",
        "--duration",
        "4",
        "--response-bytes",
        "1000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{summary}\n{err}");
    // The server's own count and clock.
    let seen = server.wait_seen(800, Duration::from_secs(10));
    assert_eq!(seen.len(), 800);
    let mut accepts: Vec<u64> = seen.iter().map(|s| s.accept_ns).collect();
    accepts.sort();
    let server_rate = 1e9 / slope(&accepts);
    eprintln!("rate seen by the server: {server_rate:.3}/s (target 200)");
    assert!((server_rate - 200.0).abs() / 200.0 < 0.01, "server saw {server_rate}/s");
    // The tool's report of its own starts.
    let achieved = num(&summary["achieved_rate"]);
    eprintln!("achieved rate reported by the tool: {achieved:.3}/s");
    assert!((achieved - 200.0).abs() / 200.0 < 0.01, "achieved {achieved}");
    eprintln!("start lag: {}", summary["start_lag"]);
    // The schedule itself: exactly 5 ms apart from one origin, in seq order.
    let cols = parquet(&out);
    let sched: Vec<u64> = cols["scheduled_ns"].iter().map(u).collect();
    assert_eq!(sched.len(), 800);
    for (i, &s) in sched.iter().enumerate() {
        assert_eq!(s - sched[0], i as u64 * 5_000_000, "request {i}");
    }
    let seqs: Vec<u64> = cols["seq"].iter().map(u).collect();
    assert_eq!(seqs, (0..800).collect::<Vec<_>>());
}

#[test]
fn latency_includes_a_server_stall() {
    let _alone = timing_alone();
    let stall = Config { stall: Some((Duration::from_secs(1), Duration::from_secs(1))), ..Config::default() };
    let dir = util::temp_dir("load-stall");

    // Open loop: requests due during the stall keep their scheduled start, so they carry the
    // wait; about a third of them fall in it and p99 is close to the whole second.
    let server = StandIn::start(stall.clone());
    let out = dir.join("open.parquet");
    let (code, open, err) = load_json(&[
        &server.url("/_bench/bytes/100"),
        "--rate",
        "100",
        "--duration",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{open}\n{err}");
    let p99 = u(&open["latency"]["p99_ns"]);
    eprintln!("open loop: {}", open["latency"]);
    assert!(p99 >= 900_000_000, "open-loop p99 {p99} ns hides the stall");
    assert!(p99 < 2_000_000_000, "open-loop p99 {p99} ns is more than the stall explains");
    // The same percentile computed from the rows by numpy, not by the tool.
    let script = "import sys, numpy, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1]).to_pydict()\n\
                  lat = [d - s for d, s in zip(t['done_ns'], t['scheduled_ns'])]\n\
                  print(int(numpy.percentile(lat, 99)))";
    let numpy_p99: f64 = util::python(script, &[out.to_str().unwrap()]).trim().parse().unwrap();
    assert!((numpy_p99 - p99 as f64).abs() / numpy_p99 < 0.01, "numpy p99 {numpy_p99} vs {p99}");
    drop(server);

    // Closed loop against the same stall: each connection waits once and the rest of the run
    // never sees it, so p99 stays small while the max shows the second: what a closed-loop
    // tool would report.
    let server = StandIn::start(stall);
    let (code, closed, err) =
        load_json(&[&server.url("/_bench/bytes/100"), "--concurrency", "2", "--duration", "3"]);
    assert_eq!(code, 0, "{closed}\n{err}");
    eprintln!("closed loop: {}", closed["latency"]);
    assert!(u(&closed["latency"]["max_ns"]) >= 900_000_000, "{closed}");
    assert!(u(&closed["latency"]["p99_ns"]) < p99 / 2, "{closed}");
}

#[test]
fn refused_connections_are_counted_not_fatal() {
    let _shared = shared();
    // A port that was free a moment ago: nothing listens there.
    let port = util::free_port();
    let dir = util::temp_dir("load-refused");
    let out = dir.join("r.parquet");
    let url = format!("gemini://127.0.0.1:{port}/");
    let (code, summary, err) =
        load_json(&[&url, "--rate", "40", "--duration", "0.5", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(summary["requests"]["scheduled"], 20);
    assert_eq!(summary["by_error"]["connect"], 20);
    let cols = parquet(&out);
    assert_eq!(cols["seq"].len(), 20);
    assert!(cols["error_kind"].iter().all(|k| k == "connect"));
    assert!(cols["status"].iter().all(Value::is_null));
    assert!(cols["connect_ns"].iter().all(Value::is_null));
    assert!(cols["error"].iter().all(|e| e.as_str().unwrap().contains("refused")), "{:?}", cols["error"]);
}

#[test]
fn other_statuses_are_answers_but_fail_the_run() {
    let _shared = shared();
    // The stand-in answers 51 (not found) to anything but its bench routes.
    let server = StandIn::start(Config::default());
    let (code, summary, err) = load_json(&[&server.url("/missing"), "--count", "3"]);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(summary["by_status"]["51"], 3);
    assert_eq!(summary["by_error"], serde_json::json!({}));
    assert_eq!(
        (summary["requests"]["completed"].clone(), summary["requests"]["ok"].clone()),
        (3.into(), 0.into())
    );
    assert!(server.wait_seen(3, Duration::from_secs(5)).iter().all(|x| x.status == 51));
}

#[test]
fn overload_and_timeouts_are_errors_of_their_own() {
    let _shared = shared();
    // A server that answers nothing for 3 s: requests time out after 1 s, and with at most 5 in
    // flight the other requests due in the first half second cannot start.
    let server =
        StandIn::start(Config { stall: Some((Duration::ZERO, Duration::from_secs(3))), ..Config::default() });
    let dir = util::temp_dir("load-overload");
    let out = dir.join("r.parquet");
    let (code, summary, err) = load_json(&[
        &server.url("/_bench/bytes/1"),
        "--rate",
        "100",
        "--duration",
        "0.5",
        "--max-in-flight",
        "5",
        "--timeout",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(summary["by_error"]["timeout"], 5, "{summary}");
    assert_eq!(summary["by_error"]["overload"], 45, "{summary}");
    let cols = parquet(&out);
    let sched: Vec<u64> = cols["scheduled_ns"].iter().map(u).collect();
    // Requests that could not start keep their place in the schedule and have no start.
    for (i, s) in sched.iter().enumerate() {
        assert_eq!(s - sched[0], i as u64 * 10_000_000);
        let overload = cols["error_kind"][i] == "overload";
        assert_eq!(overload, cols["start_ns"][i].is_null(), "row {i}");
    }
    let timeouts =
        cols["error"].iter().filter(|e| e.as_str().unwrap_or("").contains("waiting for the response"));
    assert_eq!(timeouts.count(), 5);
}

#[test]
fn profiles_run_phases_and_mixes_repeat_for_a_seed() {
    let _shared = shared();
    let server = StandIn::start(Config::default());
    let dir = util::temp_dir("load-profile");
    let profile = dir.join("p.toml");
    std::fs::write(
        &profile,
        "[defaults]\nrequest_bytes = 200\n\n\
         [[phase]]\nname = \"open\"\nduration = \"1s\"\nrate = 60\n\
         [[phase.mix]]\nresponse_bytes = 100\nweight = 3\n\
         [[phase.mix]]\nresponse_bytes = 20000\n\
         [[phase.mix]]\nurl = \"/_bench/cpu/200\"\n\n\
         [[phase]]\nname = \"closed\"\ncount = 30\nconcurrency = 3\nresponse_bytes = 7\nrequest_bytes = 100\n\n\
         [[phase]]\nname = \"ramp\"\nduration = 1\nrate = 20\nramp_to = 100\nresponse_bytes = 3\n",
    )
    .unwrap();
    let run = |seed: &str, name: &str| {
        let out = dir.join(name);
        let (code, summary, err) = load_json(&[
            "--profile",
            profile.to_str().unwrap(),
            &server.url("/"),
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{summary}\n{err}");
        (summary, parquet(&out))
    };
    let (summary, a) = run("5", "a.parquet");
    let (_, b) = run("5", "b.parquet");
    let (_, c) = run("6", "c.parquet");
    assert_eq!(summary["phases"][0]["requests"]["ok"], 60);
    assert_eq!(summary["phases"][1]["requests"]["ok"], 30);
    // The ramp: 20/s rising to 100/s over 1 s is 60 requests, request i due when the integral
    // of the rate, 20t + 40t², reaches i.
    assert_eq!(summary["phases"][2]["requests"]["ok"], 60);
    let ramp: Vec<u64> =
        (0..a["seq"].len()).filter(|&i| a["phase"][i] == "ramp").map(|i| u(&a["scheduled_ns"][i])).collect();
    assert_eq!(ramp.len(), 60);
    for (i, t) in ramp.iter().enumerate() {
        let secs = (t - ramp[0]) as f64 / 1e9;
        let due = 20.0 * secs + 40.0 * secs * secs;
        assert!((due - i as f64).abs() < 1e-6, "ramp request {i} at {secs} s: integral {due}");
    }
    assert_eq!(a["url"], b["url"], "same seed, different URL sequence");
    assert_ne!(a["url"], c["url"], "another seed, same URL sequence");

    // Phase by phase, the rows agree with what the server saw.
    let seen = server.wait_seen(450, Duration::from_secs(10));
    assert_eq!(seen.len(), 450);
    let mut server_urls: BTreeMap<String, usize> = BTreeMap::new();
    for s in &seen {
        *server_urls.entry(String::from_utf8_lossy(&s.request).trim_end().to_string()).or_default() += 1;
    }
    let mut client_urls: BTreeMap<String, usize> = BTreeMap::new();
    for t in [&a, &b, &c] {
        for (i, url) in t["url"].iter().enumerate() {
            *client_urls.entry(url.as_str().unwrap().to_string()).or_default() += 1;
            let phase = t["phase"][i].as_str().unwrap();
            let want = if phase == "closed" { 100 } else { 200 };
            assert_eq!(u(&t["request_bytes"][i]), want);
        }
    }
    assert_eq!(server_urls, client_urls);
    // Each URL of the open phase's mix was drawn, the weight-3 one most often.
    let count = |frag: &str| a["url"].iter().filter(|u| u.as_str().unwrap().contains(frag)).count();
    let (small, big, cpu) = (count("/bytes/100?"), count("/bytes/20000?"), count("/cpu/200?"));
    assert_eq!(small + big + cpu, 60);
    assert!(small > big && small > cpu && big > 0 && cpu > 0, "{small} {big} {cpu}");
    // Each response is the size its URL asked for.
    for (url, body) in a["url"].iter().zip(&a["response_body_bytes"]) {
        let path = url.as_str().unwrap().split('?').next().unwrap();
        let want = path.strip_prefix(&server.url("/_bench/bytes/")).map_or(0, |n| n.parse().unwrap());
        assert_eq!(u(body), want, "{path}");
    }
}

#[test]
fn profile_errors_name_the_line() {
    let _shared = shared();
    let dir = util::temp_dir("load-bad-profile");
    let profile = dir.join("bad.toml");
    std::fs::write(
        &profile,
        "[[phase]]\nname = \"x\"\nduration = \"2s\"\nrate = 10\nconcurrency = 2\nurl = \"/\"\n",
    )
    .unwrap();
    let (code, _, err) = load(&["--profile", profile.to_str().unwrap(), "gemini://127.0.0.1:1/"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:5:15:", profile.display())), "{err}");
    assert!(err.contains("give rate or concurrency, not both"), "{err}");
    std::fs::write(&profile, "[[phase]]\nrate = 10\nduration = 1\nurl = \"/\"\nsize = 3\n").unwrap();
    let (code, _, err) = load(&["--profile", profile.to_str().unwrap(), "gemini://127.0.0.1:1/"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":5:1:") && err.contains("unknown field `size`"), "{err}");
}

#[test]
fn tls_versions_sni_pinning_and_resumption() {
    let _shared = shared();
    let server = StandIn::start(Config::default());
    let url = server.url("/_bench/bytes/10");
    let dir = util::temp_dir("load-tls");
    let out = dir.join("r.parquet");

    let (code, s, err) = load_json(&[&url, "--tls", "1.2", "--count", "3", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{s}\n{err}");
    assert_eq!(s["tls_versions"]["1.2"], 3);
    let cols = parquet(&out);
    assert!(cols["tls_version"].iter().all(|v| v == "1.2"));
    let suite = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
    assert!(cols["tls_cipher"].iter().all(|v| v == suite), "{:?}", cols["tls_cipher"]);
    let seen = server.wait_seen(3, Duration::from_secs(5));
    assert!(seen.iter().all(|x| x.tls_version.as_deref() == Some("TLSv1_2")));
    assert!(seen.iter().all(|x| x.cipher.as_deref() == Some(suite)));
    // The fingerprint the client saw is the server's.
    assert_eq!(s["server_cert_sha256"], server.cert_sha256.as_str());

    // Pinning: the right fingerprint passes, another fails the handshake.
    let (code, s, err) = load_json(&[&url, "--pin-sha256", &server.cert_sha256, "--count", "2"]);
    assert_eq!(code, 0, "{s}\n{err}");
    let wrong = "00".repeat(32);
    let (code, s, _) =
        load_json(&[&url, "--pin-sha256", &wrong, "--count", "2", "--out", out.to_str().unwrap()]);
    assert_eq!((code, &s["by_error"]["tls"]), (1, &Value::from(2)), "{s}");
    let cols = parquet(&out);
    assert!(
        cols["error"].iter().all(|e| e.as_str().unwrap().contains("not the pinned")),
        "{:?}",
        cols["error"]
    );
    assert!(
        cols["handshake_ns"].iter().all(Value::is_null) && cols["connect_ns"].iter().all(|c| !c.is_null())
    );

    // SNI: none for an IP address unless asked for.
    let before = server.seen().len();
    let (code, _, _) = load_json(&[&url, "--sni", "capsule.example", "--count", "1"]);
    assert_eq!(code, 0);
    let (code, _, _) = load_json(&[&url, "--count", "1"]);
    assert_eq!(code, 0);
    let seen = server.wait_seen(before + 2, Duration::from_secs(5));
    let snis: Vec<Option<&str>> = seen[before..].iter().map(|x| x.sni.as_deref()).collect();
    assert!(snis.contains(&Some("capsule.example")) && snis.contains(&None), "{snis:?}");

    // --connect: the URL names a host that does not resolve; the connection goes to the given
    // address and the URL (and SNI) stay as written.
    let before = server.seen().len();
    let named = "gemini://capsule.invalid/_bench/bytes/10";
    let (code, s, err) = load_json(&[named, "--connect", &server.addr.to_string(), "--count", "2"]);
    assert_eq!(code, 0, "{s}\n{err}");
    let seen = server.wait_seen(before + 2, Duration::from_secs(5));
    for x in &seen[before..] {
        assert_eq!(x.request, format!("{named}\r\n").as_bytes());
        assert_eq!(x.sni.as_deref(), Some("capsule.invalid"));
    }

    // Resumption: off by default; on, every request after the first resumes (TLS 1.3 tickets and
    // TLS 1.2 session ids), and the server agrees.
    for version in ["1.3", "1.2"] {
        let before = server.seen().len();
        let (code, s, err) =
            load_json(&[&url, "--tls", version, "--resumption", "--concurrency", "1", "--count", "5"]);
        assert_eq!(code, 0, "{s}\n{err}");
        assert_eq!(s["tls_resumed"], 4, "TLS {version}: {s}");
        let seen = server.wait_seen(before + 5, Duration::from_secs(5));
        assert_eq!(seen[before..].iter().filter(|x| x.resumed).count(), 4, "TLS {version}");
    }
    let (_, s, _) = load_json(&[&url, "--concurrency", "1", "--count", "3"]);
    assert_eq!(s["tls_resumed"], 0);
}

#[test]
fn client_certificates_are_presented() {
    let _shared = shared();
    let server = StandIn::start(Config { request_client_cert: true, ..Config::default() });
    let dir = util::temp_dir("load-client-cert");
    let (der, _, cert_pem, key_pem) = standin::certificate(&["client"]);
    std::fs::write(dir.join("c.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("k.pem"), key_pem).unwrap();
    let url = server.url("/_bench/bytes/1");
    let c = dir.join("c.pem");
    let k = dir.join("k.pem");
    let (code, s, err) = load_json(&[
        &url,
        "--client-cert",
        c.to_str().unwrap(),
        "--client-key",
        k.to_str().unwrap(),
        "--count",
        "2",
    ]);
    assert_eq!(code, 0, "{s}\n{err}");
    let (code, _, _) = load_json(&[&url, "--count", "1"]);
    assert_eq!(code, 0);
    let seen = server.wait_seen(3, Duration::from_secs(5));
    let fp = standin::sha256_hex(der.as_ref());
    assert_eq!(seen.iter().filter(|x| x.client_cert_sha256.as_deref() == Some(&fp)).count(), 2);
    assert_eq!(seen.iter().filter(|x| x.client_cert_sha256.is_none()).count(), 1);
    // A key file that is not there is bad input.
    let (code, _, err) =
        load(&[&url, "--client-cert", c.to_str().unwrap(), "--client-key", "/nonexistent.pem"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.pem"), "{err}");
}

#[test]
fn ctrl_c_stops_and_keeps_what_was_measured() {
    let _shared = shared();
    let server = StandIn::start(Config::default());
    let dir = util::temp_dir("load-sigint");
    let out = dir.join("r.parquet");
    let mut cmd = Command::new(util::geminst());
    cmd.args(["load", &server.url("/_bench/bytes/100"), "--rate", "50", "--duration", "60", "--quiet"])
        .args(["--out", out.to_str().unwrap()]);
    let child = util::spawn(&mut cmd);
    assert!(util::wait_until(Duration::from_secs(10), || server.seen().len() >= 10), "no requests arrived");
    child.signal(libc::SIGINT);
    let (status, stdout, stderr) = child.output(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("(stopped early)"), "{stdout}");
    let rows = parquet(&out)["seq"].len();
    assert!((10..1000).contains(&rows), "{rows} rows");
    assert!(stdout.contains(&format!("geminst load: {rows} requests")), "{stdout}");
    assert_eq!(server.wait_seen(rows, Duration::from_secs(5)).len(), rows);
}

#[test]
fn jetforce_serves_the_load() {
    let _shared = shared();
    // Jetforce (a Python Gemini server from PyPI) serving two files of known sizes.
    let dir = util::temp_dir("load-jetforce");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let small = "# hello\n".repeat(150);
    let big: String = (0..70_000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    std::fs::write(root.join("small.gmi"), &small).unwrap();
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_, _, cert_pem, key_pem) = standin::certificate(&["127.0.0.1"]);
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
    let port = util::free_port();
    let jetforce = util::repo_root().join(".venv/bin/jetforce");
    let mut cmd = Command::new(jetforce);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--hostname", "127.0.0.1"])
        .arg("--dir")
        .arg(&root)
        .arg("--tls-certfile")
        .arg(dir.join("cert.pem"))
        .arg("--tls-keyfile")
        .arg(dir.join("key.pem"));
    let _server = util::spawn(&mut cmd);
    let up = util::wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "jetforce did not listen on {port}");

    let profile = dir.join("p.toml");
    std::fs::write(
        &profile,
        format!(
            "[defaults]\ntarget = \"gemini://127.0.0.1:{port}/\"\nrequest_bytes = 100\n\
             [[phase]]\nconcurrency = 2\ncount = 20\n\
             [[phase.mix]]\nurl = \"/small.gmi\"\n[[phase.mix]]\nurl = \"/big.txt\"\n"
        ),
    )
    .unwrap();
    let out = dir.join("r.parquet");
    let (code, summary, err) =
        load_json(&["--profile", profile.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let cols = parquet(&out);
    assert_eq!(cols["seq"].len(), 20);
    let mut per_file = BTreeMap::new();
    for (i, _) in cols["seq"].iter().enumerate() {
        assert_eq!(u(&cols["status"][i]), 20, "{:?}", cols["error"][i]);
        let url = cols["url"][i].as_str().unwrap();
        let want = if url.contains("/small.gmi?") { small.len() } else { big.len() } as u64;
        assert_eq!(u(&cols["response_body_bytes"][i]), want, "{url}");
        assert_eq!(u(&cols["request_bytes"][i]), 100);
        *per_file.entry(url.split('?').next().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(per_file.len(), 2, "{per_file:?}");
    assert!(
        cols["meta"].iter().any(|m| m.as_str().unwrap().starts_with("text/gemini")),
        "{:?}",
        cols["meta"]
    );
}

#[test]
fn molly_brown_serves_the_load_and_logs_the_exact_urls() {
    let _shared = shared();
    // molly-brown (a Go Gemini server from Debian): its access log is an independent account of
    // the URLs it received.
    let dir = util::temp_dir("load-molly-brown");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let body: String = (0..40_000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    std::fs::write(root.join("page.txt"), &body).unwrap();
    let (_, _, cert_pem, key_pem) = standin::certificate(&["127.0.0.1"]);
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
    let port = util::free_port();
    let config = dir.join("molly.conf");
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        &config,
        format!(
            "Port = {port}\nHostname = \"127.0.0.1\"\nCertPath = \"{}\"\nKeyPath = \"{}\"\nDocBase = \"{}/\"\n\
             AccessLog = \"{}\"\nErrorLog = \"{}\"\n",
            path("cert.pem"),
            path("key.pem"),
            root.display(),
            path("access.log"),
            path("error.log"),
        ),
    )
    .unwrap();
    let _server = util::spawn(Command::new("molly-brown").arg("-c").arg(&config));
    let up = util::wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "molly-brown did not listen on {port}");

    let url = format!("gemini://127.0.0.1:{port}/page.txt");
    let dir_out = dir.join("r.parquet");
    let (code, summary, err) = load_json(&[
        &url,
        "--rate",
        "50",
        "--count",
        "10",
        "--request-bytes",
        "600",
        "--out",
        dir_out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let cols = parquet(&dir_out);
    assert!(cols["response_body_bytes"].iter().all(|b| u(b) == body.len() as u64));
    assert!(cols["status"].iter().all(|s| u(s) == 20));
    // molly-brown logs each request's URL: all ten, each 598 bytes (600 less CRLF).
    let mut logged = Vec::new();
    assert!(util::wait_until(Duration::from_secs(5), || {
        logged = std::fs::read_to_string(dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('\t').find(|f| f.starts_with("gemini://")).map(str::to_string))
            .collect();
        logged.len() >= 10
    }));
    assert_eq!(logged.len(), 10);
    assert!(logged.iter().all(|u| u.len() == 598 && u.starts_with(&format!("{url}?pad="))), "{logged:?}");
}
