//! Benchmark: what tracing costs the built-in server. Untraced and traced rounds alternate in one
//! run (so drift on a shared machine hits both alike): the same closed-loop load each time, the
//! server's CPU per request from /proc utime+stime (eBPF programs run in the server's own
//! threads, so their cost lands there), requests per second, and in traced rounds the tracer's
//! own CPU and each program's cost per event from the kernel's BPF statistics. Needs root.
//! `cargo bench -p geminst --bench trace_overhead`.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

const ROUNDS: usize = 8;
const SECONDS: &str = "4";
const CONCURRENCY: &str = "2";
const URL_PATH: &str = "/_bench/bytes/1024";

/// The run time of a process's threads in ns (schedstat: the scheduler's nanoseconds, where
/// utime+stime would count 10 ms ticks, as coarse as the overhead measured).
fn cpu_ns(pid: u32) -> u64 {
    common::sched_cpu_ns(pid)
}

/// Kills the server when the benchmark ends, panics included.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_geminst"))
        .args(["serve", "--bench-routes", "--addr", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--log")
        .arg(dir.join("log.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("geminst serve: listening on ") {
            let addr: std::net::SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
            return (child, addr.port());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not start");
}

/// One round of load; returns completed requests.
fn load(port: u16) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_geminst"))
        .args(["load", &format!("gemini://localhost:{port}{URL_PATH}"), "--concurrency", CONCURRENCY])
        .args(["--duration", SECONDS, "--json", "--quiet"])
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    summary["requests"]["completed"].as_u64().unwrap()
}

fn main() {
    common::require_root("trace_overhead", "it loads eBPF programs");
    let dir = std::env::temp_dir().join(format!("geminst-bench-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (server, port) = start_server(&dir);
    let server = Server(server);
    let pid = server.0.id();
    load(port); // warm-up: certificate, caches, the kernel's first-time paths

    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    let mut tracer_cpu = Vec::new();
    let mut program_ns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // Overhead rounds trace without the statistics (they add two clock reads to every event);
    // one last round with them gives each program's cost.
    let schedule: Vec<(usize, Option<bool>)> = (0..ROUNDS)
        .flat_map(|r| [(r, None), (r, Some(false))])
        .chain(std::iter::once((ROUNDS, Some(true))))
        .collect();
    for (round, mode) in schedule {
        let trace = mode.is_some();
        let stats = mode == Some(true);
        {
            let out = dir.join(format!("trace-{round}"));
            let tracer = trace.then(|| {
                let log = std::fs::File::create(dir.join(format!("tracer-{round}.stderr"))).unwrap();
                let mut t = Command::new(env!("CARGO_BIN_EXE_geminst"))
                    .args(["trace", "--pid", &pid.to_string(), "--out"])
                    .arg(&out)
                    .args(std::env::var("GEMINST_BENCH_TRACE_ARGS").unwrap_or_default().split_whitespace())
                    .args(if stats { &["--bpf-stats"][..] } else { &[][..] })
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                // Attached once it says so on stderr.
                let err_file = dir.join(format!("tracer-{round}.stderr"));
                for _ in 0..300 {
                    if std::fs::read_to_string(&err_file).unwrap_or_default().contains("geminst: tracing") {
                        break;
                    }
                    if let Ok(Some(status)) = t.try_wait() {
                        panic!(
                            "geminst trace failed ({status}): {}",
                            std::fs::read_to_string(&err_file).unwrap()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                t
            });
            let before = cpu_ns(pid);
            let tracer_before = tracer.as_ref().map(|t| cpu_ns(t.id()));
            let done = load(port);
            let used = cpu_ns(pid) - before;
            let per_request_us = used as f64 / done as f64 / 1e3;
            let rate = done as f64 / SECONDS.parse::<f64>().unwrap();
            if let Some(mut t) = tracer {
                let tracer_used = cpu_ns(t.id()) - tracer_before.unwrap();
                // SAFETY: kill our own child.
                unsafe { libc::kill(t.id() as i32, libc::SIGINT) };
                t.wait().unwrap();
                let run: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
                if stats {
                    for p in run["trace"]["programs"].as_array().unwrap() {
                        if let Some(ns) = p["ns_per_event"].as_f64() {
                            program_ns
                                .entry(p["program"].as_str().unwrap().to_string())
                                .or_default()
                                .push(ns);
                        }
                    }
                } else {
                    tracer_cpu.push(tracer_used as f64 / done as f64 / 1e3);
                    traced.push((per_request_us, rate));
                }
            } else {
                plain.push((per_request_us, rate));
            }
            println!(
                "round {round} {:<8}: {done} requests, {rate:.0}/s, server CPU {per_request_us:.1} µs/request",
                if stats {
                    "stats"
                } else if trace {
                    "traced"
                } else {
                    "untraced"
                }
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    drop(server);

    let (pc, pr) = (
        common::median(plain.iter().map(|p| p.0).collect()),
        common::median(plain.iter().map(|p| p.1).collect()),
    );
    let (tc, tr) = (
        common::median(traced.iter().map(|p| p.0).collect()),
        common::median(traced.iter().map(|p| p.1).collect()),
    );
    println!(
        "\nmedians over {ROUNDS} alternating rounds, closed loop, {CONCURRENCY} connections, {URL_PATH}:"
    );
    // Paired: each traced round against the mean of the untraced rounds either side of it, so slow
    // drift of a shared machine cancels; the median of those ratios is the overhead.
    let paired = |pick: fn(&(f64, f64)) -> f64| {
        let ratios = (0..traced.len())
            .map(|r| {
                let next = plain.get(r + 1).unwrap_or(&plain[r]);
                pick(&traced[r]) / ((pick(&plain[r]) + pick(next)) / 2.0)
            })
            .collect();
        100.0 * (common::median(ratios) - 1.0)
    };
    println!(
        "  server CPU per request: untraced {pc:.1} µs, traced {tc:.1} µs: {:+.1}%, paired {:+.1}% (target <= 3%)",
        100.0 * (tc / pc - 1.0),
        paired(|p| p.0)
    );
    println!(
        "  requests/s: untraced {pr:.0}, traced {tr:.0}: {:+.1}%, paired {:+.1}%",
        100.0 * (tr / pr - 1.0),
        paired(|p| p.1)
    );
    println!(
        "  the tracer's own CPU (maps, capture, time series): {:.1} µs per request",
        common::median(tracer_cpu)
    );
    let floor = program_ns.get("stats_floor").map(|v| common::median(v.clone())).unwrap_or(0.0);
    println!(
        "  per event (kernel BPF statistics; the statistics' own cost {floor:.1} ns is subtracted; target <= 150 ns):"
    );
    for (name, v) in &program_ns {
        if name != "stats_floor" {
            let m = common::median(v.clone());
            println!("    {name:<20} {m:>7.1} ns raw {:>7.1} ns net", m - floor);
        }
    }
}
