//! Integration tests of `geminst run`: the built-in server traced under load, every figure of the
//! joined data set checked against an independent source (the server's own log, the load
//! generator's records, the packet capture), and pyarrow reading every file.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;

use crate::util;

/// Runs `geminst run` with `profile` into a fresh folder; returns the folder and stdout.
fn run(name: &str, profile: &str) -> (std::path::PathBuf, String) {
    let dir = util::temp_dir(name);
    let profile_path = dir.join("test-profile.toml");
    std::fs::write(&profile_path, profile).unwrap();
    let out = dir.join("run");
    let guard = util::spawn(
        Command::new(util::geminst())
            .args(["run", "--interval", "50", "--profile"])
            .arg(&profile_path)
            .arg("--out")
            .arg(&out),
    );
    let (status, stdout, stderr) = guard.output(Duration::from_secs(120));
    assert!(status.success(), "geminst run failed: {status}\n{stdout}\n{stderr}");
    (out, stdout)
}

fn table(dir: &Path, file: &str) -> Vec<Value> {
    let (schema, rows) = util::read_parquet(&dir.join(file));
    let names: Vec<String> = schema.iter().map(|(n, _)| n.clone()).collect();
    if file == "load.parquet" {
        let documented = util::documented_columns_in("docs/load-profiles.md", "## The records");
        assert_eq!(names, documented, "load.parquet's columns differ from docs/load-profiles.md");
    } else {
        assert_eq!(names, util::documented_columns(file), "{file}'s columns differ from docs/schema.md");
    }
    rows
}

fn u(v: &Value, col: &str) -> u64 {
    v[col].as_u64().unwrap_or_else(|| panic!("{col} is not a number in {v}"))
}

#[test]
fn root_run_joins_every_request_and_its_bytes_add_up() {
    if !util::ebpf_or_skip("root_run_joins_every_request_and_its_bytes_add_up") {
        return;
    }
    let _g = util::serial();
    let sizes = [0u64, 1, 1024, 65_536, 1 << 20];
    let mut profile = String::from(
        "[defaults]\ntarget = \"gemini://localhost:1965\"\nrequest_bytes = 300\nseed = 7\n\n[[phase]]\nname = \"mixed\"\nduration = \"3s\"\nrate = 40\n",
    );
    for n in sizes {
        profile.push_str(&format!("\n[[phase.mix]]\nresponse_bytes = {n}\nweight = 1\n"));
    }
    let (dir, stdout) = run("run-join", &profile);
    assert!(stdout.contains("reconciliation:"), "{stdout}");

    let requests = table(&dir, "requests.parquet");
    let log: Vec<Value> = std::fs::read_to_string(dir.join("server-log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let load = table(&dir, "load.parquet");
    // Every request the load generator made reached the log, and every log line has one row.
    assert_eq!(load.len(), log.len(), "load requests vs server log lines");
    assert_eq!(requests.len(), log.len(), "requests.parquet rows vs server log lines");
    assert!(requests.len() > 100);
    let mut ids: Vec<u64> = requests.iter().map(|r| u(r, "req_id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), requests.len(), "a request appears twice");
    let mut conns: Vec<u64> = requests.iter().map(|r| u(r, "conn_id")).collect();
    conns.sort_unstable();
    conns.dedup();
    assert_eq!(conns.len(), requests.len(), "a traced connection is joined to two requests");

    for r in &requests {
        // Application bytes: what the URL asked for, and exactly the request size set.
        let url = r["url"].as_str().unwrap();
        let asked: u64 =
            url.split("/_bench/bytes/").nth(1).unwrap().split('?').next().unwrap().parse().unwrap();
        assert_eq!(u(r, "response_body_bytes"), asked, "{url}");
        assert_eq!(u(r, "request_bytes"), 300);
        assert_eq!(r["status"], 20);
        // Socket bytes seen by eBPF equal the TLS bytes the server read and wrote, exactly.
        assert_eq!(u(r, "sock_send_bytes"), u(r, "log_tcp_bytes_written"), "{r}");
        assert_eq!(u(r, "sock_recv_bytes"), u(r, "log_tcp_bytes_read"), "{r}");
        // And the packet capture saw the same payload on the wire.
        assert_eq!(u(r, "wire_s2c_unique_payload_bytes"), u(r, "log_tcp_bytes_written"), "{r}");
        assert_eq!(u(r, "wire_c2s_unique_payload_bytes"), u(r, "log_tcp_bytes_read"), "{r}");
        assert!(u(r, "wire_s2c_frame_bytes") > u(r, "wire_s2c_tcp_payload_bytes"));
        assert!(r["cpu_ns"].as_u64().unwrap() > 0 && r["energy_j"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["predicted_s2c_frame_bytes"].is_u64(), "{r}");
    }
    // The load generator's own byte counts agree with the server's, joined by the client address.
    for l in &load {
        let addr = l["local_addr"].as_str().unwrap();
        let r = requests
            .iter()
            .find(|r| r["peer_addr"] == addr)
            .unwrap_or_else(|| panic!("no request from {addr}"));
        assert_eq!(u(l, "tcp_bytes_sent"), u(r, "log_tcp_bytes_read"), "{l}");
        assert_eq!(u(l, "tcp_bytes_received"), u(r, "log_tcp_bytes_written"), "{l}");
        assert_eq!(l["meta"], r["meta"], "{l}");
        // Both ends' clocks are CLOCK_MONOTONIC, so the client's stages bracket the server's:
        // the server accepts after the client starts connecting, finishes its handshake after
        // the client's connect, and reads the request before the client sees the first byte.
        // (The client's handshake_ns is when it saw its handshake finish, with its Finished and
        // the request already sent, so it may come after the server read the request.)
        assert!(u(l, "start_ns") <= u(r, "accept_ns"), "client start after the accept: {l}\n{r}");
        assert!(u(l, "connect_ns") <= u(r, "handshake_ns"), "server handshake before the connect: {l}\n{r}");
        assert!(
            u(r, "request_ns") <= u(l, "first_byte_ns"),
            "first byte before the request was read: {l}\n{r}"
        );
        assert!(u(l, "handshake_ns") <= u(l, "first_byte_ns") && u(l, "first_byte_ns") <= u(l, "done_ns"));
    }

    let run: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let join = &run["join"];
    assert_eq!(u(join, "log_records"), log.len() as u64);
    assert_eq!(u(join, "joined"), log.len() as u64);
    assert_eq!((u(join, "log_only"), u(join, "ebpf_only")), (0, 0), "{join}");
    assert_eq!(u(join, "ebpf_connections"), load.len() as u64, "traced connections vs load requests");

    // The printed and recorded means per request are those of the rows pyarrow read, and each
    // row's energy is its CPU time at the run's rate.
    let per = &run["per_request"];
    let n = requests.len() as f64;
    let mean = |f: &dyn Fn(&Value) -> f64| requests.iter().map(f).sum::<f64>() / n;
    let close = |got: f64, want: f64, what: &str| {
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{what}: run.json {got}, rows {want}")
    };
    close(per["requests"].as_f64().unwrap(), n, "requests");
    close(per["cpu_us"].as_f64().unwrap(), mean(&|r| u(r, "cpu_ns") as f64 / 1e3), "cpu_us");
    close(per["log_cpu_us"].as_f64().unwrap(), mean(&|r| u(r, "log_cpu_ns") as f64 / 1e3), "log_cpu_us");
    close(per["energy_mj"].as_f64().unwrap(), mean(&|r| r["energy_j"].as_f64().unwrap() * 1e3), "energy_mj");
    close(
        per["app_request_bytes"].as_f64().unwrap(),
        mean(&|r| u(r, "request_bytes") as f64),
        "request bytes",
    );
    close(
        per["app_response_bytes"].as_f64().unwrap(),
        mean(&|r| (u(r, "response_header_bytes") + u(r, "response_body_bytes")) as f64),
        "response bytes",
    );
    close(per["socket_sent_bytes"].as_f64().unwrap(), mean(&|r| u(r, "sock_send_bytes") as f64), "sent");
    close(
        per["socket_received_bytes"].as_f64().unwrap(),
        mean(&|r| u(r, "sock_recv_bytes") as f64),
        "received",
    );
    let printed = format!(
        "per request (mean of {}): CPU {:.1} µs (eBPF; the server's own measure {:.1} µs)",
        requests.len(),
        per["cpu_us"].as_f64().unwrap(),
        per["log_cpu_us"].as_f64().unwrap()
    );
    assert!(stdout.contains(&printed), "the summary does not say {printed:?}:\n{stdout}");
    let rate = run["power"]["trace"]["joules_per_cpu_ns"].as_f64().unwrap();
    for r in &requests {
        close(r["energy_j"].as_f64().unwrap(), u(r, "cpu_ns") as f64 * rate, "energy_j = cpu_ns × rate");
    }
    for counter in [
        "capture.dropped",
        "ebpf.conn_event_dropped",
        "ebpf.conn_map_full",
        "ebpf.field_read_failed",
        "log.malformed_lines",
    ] {
        assert_eq!(run["lost"][counter], 0, "lost.{counter}");
    }
    let series = table(&dir, "timeseries.parquet");
    let done: u64 = series.iter().map(|r| u(r, "requests_done")).sum();
    assert_eq!(done, log.len() as u64, "every request completes in one interval");
    let wire: u64 = series.iter().map(|r| u(r, "wire_frame_bytes")).sum();
    let per_conn: u64 =
        requests.iter().map(|r| u(r, "wire_c2s_frame_bytes") + u(r, "wire_s2c_frame_bytes")).sum();
    assert_eq!(wire, per_conn, "the time series' wire bytes are the connections'");
    table(&dir, "connections.parquet");
    table(&dir, "threads.parquet");
}

#[test]
fn root_run_cpu_per_request_matches_the_servers_own_measure() {
    if !util::ebpf_or_skip("root_run_cpu_per_request_matches_the_servers_own_measure") {
        return;
    }
    let _g = util::serial();
    let burns = [2_000u64, 5_000, 10_000, 20_000];
    let mut profile = String::from(
        "[defaults]\ntarget = \"gemini://localhost:1965\"\nseed = 3\n\n[[phase]]\nname = \"cpu\"\nduration = \"3s\"\nrate = 12\n",
    );
    for us in burns {
        profile.push_str(&format!("\n[[phase.mix]]\nurl = \"/_bench/cpu/{us}\"\nweight = 1\n"));
    }
    let (dir, _) = run("run-cpu", &profile);
    let requests = table(&dir, "requests.parquet");
    assert!(requests.len() >= 30);
    let mut errors = Vec::new();
    for r in &requests {
        let truth = u(r, "log_cpu_ns") as f64;
        let us: u64 = r["url"].as_str().unwrap().rsplit('/').next().unwrap().parse().unwrap();
        assert!(truth >= us as f64 * 1000.0, "the server burned less than asked: {r}");
        errors.push((u(r, "cpu_ns") as f64 - truth).abs() / truth);
    }
    let mape = errors.iter().sum::<f64>() / errors.len() as f64;
    eprintln!("per-request CPU, eBPF vs the server's own thread clock: MAPE {:.2}%", 100.0 * mape);
    assert!(mape <= 0.05, "MAPE {:.2}%: {errors:?}", 100.0 * mape);
}

#[test]
fn run_rejects_a_bad_profile_before_starting_anything() {
    let dir = util::temp_dir("run-bad-profile");
    let profile = dir.join("bad.toml");
    std::fs::write(&profile, "[[phase]]\nname = \"x\"\nduration = \"1s\"\nrate = -5\nurl = \"/\"\n").unwrap();
    let out = Command::new(util::geminst())
        .args(["run", "--profile"])
        .arg(&profile)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("rate"), "{err}");
    assert!(!dir.join("out").exists(), "nothing is written for a bad profile");
}

/// `geminst run` with a server that writes no request log, into a fresh folder, with tcpdump
/// capturing loopback TCP beside it; returns the run's folder and tcpdump's file.
fn run_server(name: &str, server: &[&str], profile: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = util::temp_dir(name);
    let profile_path = dir.join("test-profile.toml");
    std::fs::write(&profile_path, profile).unwrap();
    let out = dir.join("run");
    let dump = crate::capture::tcpdump::Tcpdump::start_filter("tcp", &dir.join("witness.pcap"));
    let guard = util::spawn(
        Command::new(util::geminst())
            .args(["run", "--interval", "50"])
            .args(server)
            .arg("--profile")
            .arg(&profile_path)
            .arg("--out")
            .arg(&out),
    );
    let (status, stdout, stderr) = guard.output(Duration::from_secs(120));
    let pcap = dump.stop();
    assert!(status.success(), "geminst run {server:?} failed: {status}\n{stdout}\n{stderr}");
    (out, pcap)
}

/// Every server, logged or not: one row per request the load generator sent, each with its
/// traced connection and CPU; the server's socket bytes equal what the client counted at its own
/// socket; and the wire bytes of a sample of connections equal tcpdump's.
fn check_rows_of_any_server(dir: &Path, pcap: &Path, logged: bool) {
    let requests = table(dir, "requests.parquet");
    let load = table(dir, "load.parquet");
    assert_eq!(requests.len(), load.len(), "rows vs load requests");
    assert!(requests.len() >= 50, "{} rows", requests.len());
    let flows = crate::capture::tcpdump::flows(pcap);
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r["source"], if logged { "log" } else { "load" }, "{r}");
        assert_eq!(r["status"], 20, "{r}");
        assert!(r["conn_id"].is_u64() && u(r, "cpu_ns") > 0, "a request without CPU: {r}");
        assert!(r["energy_j"].as_f64().unwrap() > 0.0, "{r}");
        // The server's socket layer (eBPF) against the client's own count of the same bytes.
        assert_eq!(u(r, "sock_send_bytes"), u(r, "client_tcp_bytes_received"), "{r}");
        assert_eq!(u(r, "sock_recv_bytes"), u(r, "client_tcp_bytes_sent"), "{r}");
        assert_eq!(r["wire_s2c_unique_payload_bytes"], r["sock_send_bytes"], "{r}");
        if i % 10 == 0 {
            let server: std::net::SocketAddr = r["local_addr"].as_str().unwrap().parse().unwrap();
            let client: std::net::SocketAddr = r["peer_addr"].as_str().unwrap().parse().unwrap();
            for (dir, from, to) in [("c2s", client, server), ("s2c", server, client)] {
                let f = flows[&crate::capture::tcpdump::key(from, to)];
                assert_eq!(u(r, &format!("wire_{dir}_packets")), f.packets, "{dir} {r}");
                assert_eq!(u(r, &format!("wire_{dir}_frame_bytes")), f.frame_bytes, "{dir} {r}");
                assert_eq!(u(r, &format!("wire_{dir}_tcp_payload_bytes")), f.tcp_payload_bytes, "{dir} {r}");
            }
        }
    }
}

/// A short profile of two response sizes that every server can serve.
const ANY_SERVER_PROFILE: &str = "[defaults]\ntarget = \"gemini://localhost:1965\"\nrequest_bytes = 100\n\
    [[phase]]\nname = \"steady\"\nduration = \"2s\"\nrate = 30\n\
    [[phase.mix]]\nresponse_bytes = 1024\nweight = 1\n[[phase.mix]]\nresponse_bytes = 16384\nweight = 1\n";

#[test]
fn root_run_gives_every_server_a_row_per_request() {
    if !util::ebpf_or_skip("root_run_gives_every_server_a_row_per_request") {
        return;
    }
    let _g = util::serial();
    let jetforce = util::repo_root().join(".venv/bin/jetforce");
    let cmd = format!(
        "{} --host 127.0.0.1 --port {{port}} --hostname {{hostname}} --dir {{root}} --tls-certfile {{cert}} --tls-keyfile {{key}}",
        jetforce.display()
    );
    let servers: [(&str, Vec<&str>, bool); 4] = [
        ("geminst", vec!["--server", "geminst"], true),
        ("jetforce", vec!["--server", "jetforce"], false),
        ("molly-brown", vec!["--server", "molly-brown"], false),
        ("server-cmd", vec!["--server-cmd", &cmd], false),
    ];
    for (name, args, logged) in servers {
        let (dir, pcap) = run_server(&format!("run-any-{name}"), &args, ANY_SERVER_PROFILE);
        check_rows_of_any_server(&dir, &pcap, logged);
        let run: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
        assert_eq!(run["join"]["load_requests"], run["join"]["joined"], "{name}: {}", run["join"]);
        // The run's folder holds its data, not the fixtures.
        let big: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.metadata().is_ok_and(|m| m.len() > 16 << 20))
            .map(|e| e.path())
            .collect();
        assert!(big.is_empty(), "{name}: large files in the run's folder: {big:?}");
    }
}
