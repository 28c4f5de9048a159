//! Integration tests of `geminst trace`: figures checked against the kernel's own per-thread
//! accounting in /proc, files read back with pyarrow, errors, and nothing left attached.

use std::{
    collections::BTreeMap,
    io::Write,
    os::fd::AsRawFd,
    path::Path,
    process::{ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use crate::util::{self, Guard, Lines};

/// The burn workload: threads burning known amounts of CPU, parked until told to exit.
struct Burn {
    guard: Guard,
    stdin: ChildStdin,
    stdout: Lines,
}

impl Burn {
    fn start(ms: &[u64]) -> Self {
        let mut child = Command::new(util::workload())
            .arg("burn")
            .args(ms.iter().map(|m| m.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = Lines::new(child.stdout.take().unwrap());
        let burn = Self { guard: Guard::new(child), stdin, stdout };
        burn.stdout.expect(Duration::from_secs(10), "`ready` from burn", |l| l == "ready");
        burn
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Starts the threads and waits until all have burned; returns their tids in order.
    fn go(&mut self) -> Vec<u32> {
        writeln!(self.stdin, "go").unwrap();
        let line =
            self.stdout.expect(Duration::from_secs(60), "`burned` from burn", |l| l.starts_with("burned"));
        line.split_whitespace().skip(1).map(|t| t.parse().unwrap()).collect()
    }

    fn exit(mut self) {
        writeln!(self.stdin, "exit").unwrap();
        let status = self.guard.wait(Duration::from_secs(10));
        assert!(status.success());
    }
}

/// (on-CPU ns, run-queue wait ns) from /proc/PID/task/TID/schedstat.
fn schedstat(pid: u32, tid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).unwrap();
    let f: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (f[0], f[1])
}

/// (voluntary, involuntary) context switches from /proc/PID/task/TID/status.
fn ctxt_switches(pid: u32, tid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    let get =
        |key: &str| -> u64 { s.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().parse().unwrap() };
    (get("voluntary_ctxt_switches:"), get("nonvoluntary_ctxt_switches:"))
}

/// Starts `geminst trace` and waits until it says it is tracing.
fn start_trace(pids: &[u32], out: &Path, extra: &[&str]) -> (Guard, Lines, Lines) {
    let mut cmd = Command::new(util::geminst());
    cmd.arg("trace");
    for p in pids {
        cmd.args(["--pid", &p.to_string()]);
    }
    cmd.arg("--out").arg(out).args(extra);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = Lines::new(child.stdout.take().unwrap());
    let stderr = Lines::new(child.stderr.take().unwrap());
    let guard = Guard::new(child);
    stderr.expect(Duration::from_secs(30), "the tracer's `tracing` line", |l| {
        l.starts_with("geminst: tracing")
    });
    (guard, stdout, stderr)
}

fn rows_by_tid(rows: &[serde_json::Value]) -> BTreeMap<u64, &serde_json::Value> {
    rows.iter().map(|r| (r["tid"].as_u64().unwrap(), r)).collect()
}

fn rel_err(measured: u64, truth: u64) -> f64 {
    (measured as f64 - truth as f64).abs() / truth as f64
}

/// Names of loaded BPF programs, from bpftool (an independent view of the kernel).
fn loaded_programs() -> Vec<String> {
    let out = Command::new("bpftool").args(["prog", "list", "--json"]).output().unwrap();
    assert!(out.status.success(), "bpftool failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect()
}

/// Our programs as bpftool shows them (names are cut to 15 characters by the kernel).
const OUR_PROGRAMS: &[&str] =
    &["sched_switch", "sched_wakeup", "sched_wakeup_ne", "task_newtask", "sched_process_e"];

fn ours_loaded() -> Vec<String> {
    loaded_programs().into_iter().filter(|n| OUR_PROGRAMS.contains(&n.as_str())).collect()
}

#[test]
fn root_trace_cpu_and_switches_match_proc() {
    if !util::ebpf_or_skip("root_trace_cpu_and_switches_match_proc") {
        return;
    }
    let _g = util::serial();
    let out = util::temp_dir("trace-accuracy");
    let amounts = [150u64, 300, 450, 600];
    let mut burn = Burn::start(&amounts);
    let pid = burn.pid();
    let (mut tracer, stdout, _stderr) = start_trace(&[pid], &out, &[]);
    let main_before = schedstat(pid, pid);
    let main_ctxt_before = ctxt_switches(pid, pid);

    // The threads are created after the trace started: following them is part of the test.
    let tids = burn.go();
    let after: Vec<((u64, u64), (u64, u64))> =
        tids.iter().map(|&t| (schedstat(pid, t), ctxt_switches(pid, t))).collect();
    let main_after = schedstat(pid, pid);
    let main_ctxt_after = ctxt_switches(pid, pid);

    // Stop the trace while every thread is parked, so nothing moves between the two views.
    tracer.signal(libc::SIGINT);
    let status = tracer.wait(Duration::from_secs(30));
    assert!(status.success(), "trace failed: {status}");
    let printed = stdout.rest(Duration::from_secs(5));
    burn.exit();

    let (schema, rows) = util::read_parquet(&out.join("threads.parquet"));
    let names: Vec<String> = schema.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, util::documented_columns("threads.parquet"), "columns differ from docs/schema.md");
    let by_tid = rows_by_tid(&rows);
    assert_eq!(rows.len(), amounts.len() + 1, "main thread plus one per burner: {rows:#?}");

    let mut truth_total = main_after.0 - main_before.0;
    let mut geminst_total = by_tid[&(pid as u64)]["oncpu_ns"].as_u64().unwrap();
    for (i, &tid) in tids.iter().enumerate() {
        let row = by_tid[&(tid as u64)];
        let ((oncpu, wait), (vol, invol)) = after[i];
        let got = row["oncpu_ns"].as_u64().unwrap();
        assert!(
            rel_err(got, oncpu) <= 0.01,
            "thread {tid}: geminst {got} ns on CPU, schedstat {oncpu} ns ({:.3}% off)",
            100.0 * rel_err(got, oncpu)
        );
        // geminst's own timestamps (runtime plus the steal they saw) measure at least as much.
        let wall = got + row["stolen_ns"].as_u64().unwrap();
        assert!(
            wall as f64 >= oncpu as f64 * 0.99,
            "thread {tid}: wall-clock {wall} ns < schedstat {oncpu} ns"
        );
        // It burned at least what it was asked to (its own clock says so).
        assert!(got >= amounts[i] * 1_000_000 * 99 / 100, "thread {tid}: {got} ns < {} ms", amounts[i]);
        // The kernel counts each switch in exactly one of nvcsw/nivcsw; so does geminst.
        assert_eq!(row["voluntary_switches"].as_u64().unwrap(), vol, "thread {tid} voluntary switches");
        assert_eq!(row["involuntary_switches"].as_u64().unwrap(), invol, "thread {tid} involuntary switches");
        // schedstat's second field is the run-queue wait (sched_info run_delay).
        let got_wait = row["wait_ns"].as_u64().unwrap();
        assert!(
            got_wait.abs_diff(wait) <= wait / 20 + 1_000_000,
            "thread {tid}: geminst wait {got_wait} ns, schedstat {wait} ns"
        );
        assert!(!row["seen_at_start"].as_bool().unwrap(), "thread {tid} was created during the trace");
        assert!(row["exit_ns"].is_null());
        assert_eq!(row["comm"].as_str().unwrap(), format!("burn-{i}"));
        truth_total += oncpu;
        geminst_total += got;
    }
    assert!(
        rel_err(geminst_total, truth_total) <= 0.01,
        "process: geminst {geminst_total} ns, schedstat {truth_total} ns"
    );
    let main = by_tid[&(pid as u64)];
    assert!(main["seen_at_start"].as_bool().unwrap());
    let (mv, mi) = main_ctxt_after;
    assert!(main["voluntary_switches"].as_u64().unwrap() <= mv - main_ctxt_before.0 + 2);
    assert!(main["involuntary_switches"].as_u64().unwrap() <= mi - main_ctxt_before.1 + 2);

    // The printed table shows the same values the file holds (ms with three decimals).
    for row in &rows {
        let tid = row["tid"].as_u64().unwrap().to_string();
        let line = printed
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(tid.as_str()))
            .unwrap_or_else(|| panic!("no summary line for tid {tid}: {printed:#?}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let ms = |ns: u64| format!("{}.{:03}", ns / 1_000_000, ns / 1_000 % 1_000);
        assert_eq!(f[3], ms(row["oncpu_ns"].as_u64().unwrap()), "{line}");
        assert_eq!(f[4], row["voluntary_switches"].as_u64().unwrap().to_string(), "{line}");
        assert_eq!(f[5], row["involuntary_switches"].as_u64().unwrap().to_string(), "{line}");
        assert_eq!(f[6], ms(row["wait_ns"].as_u64().unwrap()), "{line}");
    }

    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["stopped_by"], "signal");
    assert!(run["trace"]["field_offsets"]["sched:sched_switch.next_pid"].as_u64().unwrap() > 0);
    for (name, value) in run["lost"].as_object().unwrap() {
        assert_eq!(value, 0, "lost.{name}");
    }
    assert!(!out.join("threads.parquet.tmp").exists());
}

#[test]
fn root_trace_keeps_counters_of_a_target_that_exits() {
    if !util::ebpf_or_skip("root_trace_keeps_counters_of_a_target_that_exits") {
        return;
    }
    let _g = util::serial();
    let out = util::temp_dir("trace-target-exits");
    let mut burn = Burn::start(&[200, 200]);
    let pid = burn.pid();
    // A long duration: the trace must end because the target exits, not because time ran out.
    let (mut tracer, _stdout, _stderr) = start_trace(&[pid], &out, &["--duration", "60"]);
    let started = Instant::now();
    let tids = burn.go();
    burn.exit();
    let status = tracer.wait(Duration::from_secs(20));
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(20), "the trace did not stop when its target exited");

    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["stopped_by"], "target_exited");
    assert_eq!(run["trace"]["exited"][0]["pid"], pid);
    assert!(
        run["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains(&format!("target {pid} exited"))),
        "{run:#}"
    );
    let (_, rows) = util::read_parquet(&out.join("threads.parquet"));
    let by_tid = rows_by_tid(&rows);
    for tid in tids {
        let row = by_tid[&(tid as u64)];
        assert!(row["oncpu_ns"].as_u64().unwrap() >= 198_000_000, "{row}");
        assert!(row["exit_ns"].as_u64().unwrap() >= row["first_seen_ns"].as_u64().unwrap(), "{row}");
    }
    assert!(by_tid[&(pid as u64)]["exit_ns"].is_u64(), "the main thread exited too");
    assert!(ours_loaded().is_empty(), "programs left loaded: {:?}", ours_loaded());
}

#[test]
fn root_trace_stops_at_duration_and_leaves_nothing_attached() {
    if !util::ebpf_or_skip("root_trace_stops_at_duration_and_leaves_nothing_attached") {
        return;
    }
    let _g = util::serial();
    assert!(ours_loaded().is_empty(), "programs loaded before the test: {:?}", ours_loaded());
    let out = util::temp_dir("trace-duration");
    let burn = Burn::start(&[10]);
    let (mut tracer, _stdout, _stderr) = start_trace(&[burn.pid()], &out, &["--duration", "1"]);
    assert!(!ours_loaded().is_empty(), "bpftool does not see the programs while tracing");
    let status = tracer.wait(Duration::from_secs(15));
    assert!(status.success());
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["stopped_by"], "duration");
    let traced =
        run["trace"]["end_mono_ns"].as_u64().unwrap() - run["trace"]["start_mono_ns"].as_u64().unwrap();
    assert!((900_000_000..3_000_000_000).contains(&traced), "traced {traced} ns for --duration 1");
    assert!(ours_loaded().is_empty(), "programs left loaded: {:?}", ours_loaded());

    // Killed outright, the tracer still leaves nothing behind: the kernel drops programs whose
    // last descriptor closes, which is why geminst pins nothing.
    let (tracer, _stdout, _stderr) = start_trace(&[burn.pid()], &util::temp_dir("trace-killed"), &[]);
    tracer.signal(libc::SIGKILL);
    drop(tracer);
    assert!(
        util::wait_until(Duration::from_secs(5), || ours_loaded().is_empty()),
        "programs left loaded after SIGKILL: {:?}",
        ours_loaded()
    );
    burn.exit();
}

#[test]
fn root_trace_mounts_tracefs_when_missing() {
    if !util::ebpf_or_skip("root_trace_mounts_tracefs_when_missing") {
        return;
    }
    let _g = util::serial();
    let events = Path::new("/sys/kernel/tracing/events");
    if events.is_dir() {
        let status = Command::new("umount").arg("/sys/kernel/tracing").status().unwrap();
        assert!(status.success(), "could not unmount tracefs to set up the test");
    }
    assert!(!events.is_dir());
    let out = util::temp_dir("trace-tracefs");
    let burn = Burn::start(&[10]);
    let (mut tracer, _stdout, _stderr) = start_trace(&[burn.pid()], &out, &["--duration", "0.5"]);
    assert!(tracer.wait(Duration::from_secs(15)).success());
    assert!(events.is_dir(), "tracefs is not mounted after the trace");
    burn.exit();
}

#[test]
fn trace_unknown_pid_exits_2() {
    // pid_max is at most 2^22, so this pid cannot exist; no root needed to learn that.
    let out = Command::new(util::geminst()).args(["trace", "--pid", "4194305"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no process with pid 4194305"), "{err}");
}

#[test]
fn trace_refuses_without_root() {
    let me = std::process::id().to_string();
    let out = if util::is_root() {
        // Drop to nobody for this one command.
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(util::geminst())
            .args(["trace", "--pid", &me, "--out", "/tmp/geminst-never-written"])
            .output()
            .unwrap()
    } else {
        Command::new(util::geminst()).args(["trace", "--pid", &me]).output().unwrap()
    };
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root") && err.contains("sudo"), "{err}");
}

#[test]
fn trace_rejects_a_bad_duration() {
    let me = std::process::id().to_string();
    let out =
        Command::new(util::geminst()).args(["trace", "--pid", &me, "--duration", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
}

/// Runs `client` against testdata/servers/burn_server.py while geminst traces the server.
/// Returns the server's own per-connection JSON lines and the trace's output folder.
fn trace_burn_server(name: &str, client: impl FnOnce(u16)) -> (Vec<serde_json::Value>, std::path::PathBuf) {
    let out = util::temp_dir(name);
    let port = util::free_port();
    let mut server = Command::new("python3")
        .arg(util::repo_root().join("testdata/servers/burn_server.py"))
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Lines::new(server.stdout.take().unwrap());
    let server = Guard::new(server);
    lines.expect(Duration::from_secs(10), "the server's `listening` line", |l| l.starts_with("listening"));
    // No --port: the tracer finds the port the server listens on.
    let (mut tracer, _stdout, stderr) = start_trace(&[server.pid()], &out, &["--interval", "50"]);
    let _ = stderr;
    client(port);
    let reports = lines.rest(Duration::from_millis(500));
    tracer.signal(libc::SIGINT);
    assert!(tracer.wait(Duration::from_secs(30)).success());
    drop(server);
    (reports.iter().map(|l| serde_json::from_str(l).unwrap()).collect(), out)
}

/// One request to the burn server: returns (client port, bytes sent, bytes received).
fn burn_request(port: u16, burn_us: u64, send: u64) -> (u16, u64, u64) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let line = format!("BURN {burn_us} SEND {send}\n");
    s.write_all(line.as_bytes()).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    (s.local_addr().unwrap().port(), line.len() as u64, got.len() as u64)
}

#[test]
fn root_trace_attributes_connections_of_a_python_server() {
    if !util::ebpf_or_skip("root_trace_attributes_connections_of_a_python_server") {
        return;
    }
    let _g = util::serial();
    let plan: Vec<(u64, u64)> = vec![
        (10_000, 1),
        (20_000, 1_000),
        (40_000, 100_000),
        (80_000, 1_000_000),
        (30_000, 65_536),
        (15_000, 7),
    ];
    let mut sent = Vec::new();
    let (reports, out) = trace_burn_server("trace-python-server", |port| {
        for &(burn, send) in &plan {
            sent.push(burn_request(port, burn, send));
        }
    });
    assert_eq!(reports.len(), plan.len(), "the server reported {reports:?}");

    let (schema, conns) = util::read_parquet(&out.join("connections.parquet"));
    let names: Vec<String> = schema.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, util::documented_columns("connections.parquet"));
    let mut errors = Vec::new();
    for (i, &(client_port, request_len, response_len)) in sent.iter().enumerate() {
        assert_eq!(response_len, plan[i].1, "the client got what it asked for");
        let rows: Vec<&serde_json::Value> =
            conns.iter().filter(|c| c["remote_port"].as_u64() == Some(client_port as u64)).collect();
        assert_eq!(rows.len(), 1, "exactly one row for client port {client_port}: {conns:#?}");
        let c = rows[0];
        let report = reports.iter().find(|r| r["client_port"] == client_port).unwrap();
        // Bytes: the socket layer carried exactly what the server read and wrote.
        assert_eq!(c["sock_recv_bytes"].as_u64().unwrap(), request_len, "{c}");
        assert_eq!(c["sock_send_bytes"].as_u64().unwrap(), report["sent"].as_u64().unwrap(), "{c}");
        assert_eq!(report["received"].as_u64().unwrap(), request_len);
        assert!(c["passive"].as_bool().unwrap() && c["closed_ns"].is_u64(), "{c}");
        assert_eq!(c["local_ip"], "127.0.0.1");
        let established = c["established_ns"].as_u64().unwrap();
        assert!(established <= c["first_io_ns"].as_u64().unwrap());
        assert!(c["last_io_ns"].as_u64().unwrap() <= c["closed_ns"].as_u64().unwrap());
        // CPU: against the handler thread's own clock.
        let truth = report["cpu_ns"].as_u64().unwrap() as f64;
        let got = c["cpu_ns"].as_u64().unwrap() as f64;
        eprintln!("connection {}: eBPF {got} ns, the handler thread's clock {truth} ns", c["conn_id"]);
        // Never more than the thread spent, give or take its start-up before the server's clock
        // starts (under a millisecond): a connection charged twice would be 10 ms or more over.
        assert!(
            got <= truth * 1.05 + 1.5e6,
            "connection {} got more CPU than its thread spent: {got} vs {truth}",
            c["conn_id"]
        );
        // Never less: the thread's CPU is all for its connection, the server's clock included.
        // A slice lost (a charge that missed the connection after its socket was reused, or the
        // start of a slice whose switch in no tracepoint reported) is milliseconds short.
        assert!(
            got >= truth * 0.95,
            "connection {} got less CPU than its thread spent on it: {got} vs {truth}",
            c["conn_id"]
        );
        errors.push((got - truth).abs() / truth);
    }
    let mape = errors.iter().sum::<f64>() / errors.len() as f64;
    eprintln!("per-connection CPU vs the server's thread clock: MAPE {:.2}% ({errors:.4?})", 100.0 * mape);
    assert!(
        mape <= 0.05,
        "per-connection CPU is {:.2}% off the server's own measure: {errors:?}",
        100.0 * mape
    );

    // Nothing double counted: what connections got is what threads gave.
    let (_, threads) = util::read_parquet(&out.join("threads.parquet"));
    let sum = |rows: &[serde_json::Value], col: &str| -> u64 {
        rows.iter().map(|r| r[col].as_u64().unwrap()).sum()
    };
    assert_eq!(sum(&conns, "cpu_ns"), sum(&threads, "conn_cpu_ns"));
    assert_eq!(sum(&conns, "sock_send_bytes"), sum(&threads, "sock_send_bytes"));
    for t in &threads {
        assert!(t["conn_cpu_ns"].as_u64().unwrap() <= t["oncpu_ns"].as_u64().unwrap(), "{t}");
    }
    // The time series tiles the trace and adds up to the threads' totals.
    let (schema, series) = util::read_parquet(&out.join("timeseries.parquet"));
    let names: Vec<String> = schema.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, util::documented_columns("timeseries.parquet"));
    assert_eq!(sum(&series, "cpu_ns"), sum(&threads, "oncpu_ns"));
    assert_eq!(sum(&series, "sock_send_bytes"), sum(&threads, "sock_send_bytes"));
    assert_eq!(sum(&series, "connections_closed"), plan.len() as u64);
    for w in series.windows(2) {
        assert_eq!(w[0]["end_ns"], w[1]["start_ns"]);
    }
    assert!(series.len() > 5, "50 ms intervals over the run: {}", series.len());
}

#[test]
fn root_trace_attributes_cold_file_reads_to_the_reader() {
    if !util::ebpf_or_skip("root_trace_attributes_cold_file_reads_to_the_reader") {
        return;
    }
    let _g = util::serial();
    let dir = util::temp_dir("trace-block");
    let file = dir.join("cold.bin");
    const SIZE: u64 = 64 << 20;
    {
        // Incompressible content, written and synced, so the later read must come from the disk.
        let mut f = std::fs::File::create(&file).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..SIZE >> 20 {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let mut reader = Command::new(util::workload())
        .arg("read")
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_reader = reader.stdin.take().unwrap();
    let from_reader = Lines::new(reader.stdout.take().unwrap());
    let reader = Guard::new(reader);
    from_reader.expect(Duration::from_secs(10), "`ready`", |l| l == "ready");
    // Evict the file's pages (it was synced, so they are clean): the read must go to the block
    // device. Only this file's: dropping every cache would also evict the reader's own program,
    // whose pages it would then fault back from the disk while reading.
    {
        let f = std::fs::File::open(&file).unwrap();
        // SAFETY: a valid descriptor; the advice has no memory effects.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
    let out = util::temp_dir("trace-block-out");
    let (mut tracer, _o, _e) = start_trace(&[reader.pid()], &out, &[]);
    writeln!(to_reader, "go").unwrap();
    let line = from_reader.expect(Duration::from_secs(60), "`read`", |l| l.starts_with("read "));
    let f: Vec<&str> = line.split_whitespace().collect();
    let (bytes, tid): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    assert_eq!(bytes, SIZE);
    tracer.signal(libc::SIGINT);
    assert!(tracer.wait(Duration::from_secs(30)).success());
    writeln!(to_reader, "exit").unwrap();
    drop(reader);

    let (_, threads) = util::read_parquet(&out.join("threads.parquet"));
    let t = threads.iter().find(|t| t["tid"] == tid).unwrap();
    // The file was opened during the trace: every byte read counts as file I/O, exactly.
    assert_eq!(t["file_read_bytes"].as_u64().unwrap(), SIZE, "{t}");
    let block = t["block_read_bytes"].as_u64().unwrap();
    eprintln!("block bytes read by the reader: {block} for a {SIZE}-byte file");
    assert!(
        block.abs_diff(SIZE) <= SIZE / 100,
        "block bytes read by the reading thread: {block}, file size {SIZE} ({:.2}% off)",
        100.0 * block.abs_diff(SIZE) as f64 / SIZE as f64
    );
    assert!(t["block_ios"].as_u64().unwrap() > 0 && t["block_io_ns"].as_u64().unwrap() > 0, "{t}");
    // Other threads of the process read nothing from the disk.
    for other in threads.iter().filter(|o| o["tid"] != tid) {
        assert_eq!(other["block_read_bytes"], 0, "{other}");
    }
}

#[test]
fn root_trace_follows_a_jetforce_server() {
    if !util::ebpf_or_skip("root_trace_follows_a_jetforce_server") {
        return;
    }
    let _g = util::serial();
    let root = util::temp_dir("trace-jetforce-root");
    let body: String = (0..2000).map(|i| format!("line {i:05} of a known file\n")).collect();
    std::fs::write(root.join("known.txt"), &body).unwrap();
    let port = util::free_port();
    let jetforce = util::repo_root().join(".venv/bin/jetforce");
    let server = util::spawn(
        Command::new(&jetforce)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--hostname", "localhost", "--dir"])
            .arg(&root)
            .current_dir(&root),
    );
    assert!(
        util::wait_until(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "jetforce did not start listening on {port}"
    );
    // That probe connection is over before the trace starts.
    std::thread::sleep(Duration::from_millis(300));
    let out = util::temp_dir("trace-jetforce");
    let (mut tracer, _o, _e) = start_trace(&[server.pid()], &out, &[]);
    const FETCHES: usize = 5;
    for _ in 0..FETCHES {
        // openssl's client, independent of geminst, fetches the file over TLS.
        let mut client = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "localhost",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        client.stdin.take().unwrap().write_all(b"gemini://localhost/known.txt\r\n").unwrap();
        let reply = Guard::new(client).output(Duration::from_secs(20)).1;
        assert!(
            reply.starts_with("20 text/plain") && reply.ends_with(&body),
            "jetforce answered {:.80}",
            reply
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    tracer.signal(libc::SIGINT);
    assert!(tracer.wait(Duration::from_secs(30)).success());
    drop(server);

    let (_, conns) = util::read_parquet(&out.join("connections.parquet"));
    let served: Vec<&serde_json::Value> = conns
        .iter()
        .filter(|c| c["local_port"].as_u64() == Some(port as u64) && c["passive"] == true)
        .collect();
    assert_eq!(served.len(), FETCHES, "{conns:#?}");
    for c in served {
        let sent = c["sock_send_bytes"].as_u64().unwrap();
        let body = body.len() as u64;
        // The body plus TLS: handshake flights, record headers and tags, a few kilobytes.
        assert!(sent > body && sent < body + 16_384, "sent {sent} for a {body}-byte body: {c}");
        assert!(c["sock_recv_bytes"].as_u64().unwrap() > 30, "{c}");
        let cpu = c["cpu_ns"].as_u64().unwrap();
        assert!((10_000..2_000_000_000).contains(&cpu), "Python serving one request: {cpu} ns? {c}");
        assert!(c["closed_ns"].is_u64() && c["established_ns"].is_u64(), "{c}");
    }
}

/// (busy CPU ns of the machine, from the user/nice/system/irq/softirq ticks of /proc/stat).
fn proc_stat_busy_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> =
        stat.lines().next().unwrap().split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (f[0] + f[1] + f[2] + f[5] + f[6]) * 1_000_000_000 / hz
}

#[test]
fn root_trace_energy_follows_the_stated_model() {
    if !util::ebpf_or_skip("root_trace_energy_follows_the_stated_model") {
        return;
    }
    let _g = util::serial();
    let out = util::temp_dir("trace-energy-model");
    let mut burn = Burn::start(&[300, 300]);
    let (mut tracer, _o, _e) = start_trace(
        &[burn.pid()],
        &out,
        &["--power", "model", "--idle-watts-per-cpu", "1.5", "--busy-watts-per-cpu", "6"],
    );
    let busy_before = proc_stat_busy_ns();
    let t0 = Instant::now();
    burn.go();
    let busy_after = proc_stat_busy_ns();
    let elapsed = t0.elapsed();
    tracer.signal(libc::SIGINT);
    assert!(tracer.wait(Duration::from_secs(30)).success());
    burn.exit();

    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["power"]["meter"]["source"], "model");
    let cpus = run["host"]["cpus"].as_f64().unwrap();
    let total = &run["power"]["trace"];
    let energy = total["machine_energy_j"].as_f64().unwrap();
    // The model applied to the test's own reading of /proc/stat over the burn (the trace is a
    // little longer, hence the margin: the machine idles at cpus × 1.5 W).
    let busy_s = (busy_after - busy_before) as f64 / 1e9;
    let expected = cpus * 1.5 * elapsed.as_secs_f64() + (6.0 - 1.5) * busy_s;
    assert!(
        energy >= expected * 0.9 && energy <= expected + cpus * 6.0 * 1.0,
        "machine energy {energy} J, the model on /proc/stat says {expected} J"
    );
    let (_, series) = util::read_parquet(&out.join("timeseries.parquet"));
    let series_energy: f64 = series.iter().map(|r| r["machine_energy_j"].as_f64().unwrap()).sum();
    assert!((series_energy - energy).abs() < 1e-6 * energy.max(1.0), "{series_energy} vs {energy}");
    // Each thread is charged its CPU time at the trace's rate.
    let rate = total["joules_per_cpu_ns"].as_f64().unwrap();
    assert!(rate > 0.0);
    let (_, threads) = util::read_parquet(&out.join("threads.parquet"));
    for t in &threads {
        let want = t["oncpu_ns"].as_f64().unwrap() * rate;
        assert!((t["energy_j"].as_f64().unwrap() - want).abs() <= 1e-9 * want.max(1.0), "{t}");
    }
    let burned: f64 = threads.iter().map(|t| t["energy_j"].as_f64().unwrap()).sum();
    assert!(burned > 0.0 && burned < energy, "the burners' {burned} J within the machine's {energy} J");
}

#[test]
fn root_trace_reads_rapl_counters() {
    if !util::ebpf_or_skip("root_trace_reads_rapl_counters") {
        return;
    }
    let _g = util::serial();
    // No RAPL on this machine kind: a fake powercap tree, advanced by the test, stands in.
    let tree = util::temp_dir("trace-rapl-tree");
    let domain = tree.join("intel-rapl:0");
    std::fs::create_dir_all(&domain).unwrap();
    std::fs::write(domain.join("name"), "package-0\n").unwrap();
    std::fs::write(domain.join("max_energy_range_uj"), "262143328850\n").unwrap();
    // Close to the range, so the counter wraps during the trace.
    let start_uj: u64 = 262_143_328_850 - 1_500_000;
    std::fs::write(domain.join("energy_uj"), format!("{start_uj}\n")).unwrap();
    let out = util::temp_dir("trace-rapl");
    let burn = Burn::start(&[10]);
    let (mut tracer, _o, _e) =
        start_trace(&[burn.pid()], &out, &["--power", "rapl", "--powercap", tree.to_str().unwrap()]);
    // 0.5 J every step, 8 steps: 4 J, wrapping after the third.
    let mut uj = start_uj;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(150));
        uj = (uj + 500_000) % 262_143_328_850;
        std::fs::write(domain.join("energy_uj.tmp"), format!("{uj}\n")).unwrap();
        std::fs::rename(domain.join("energy_uj.tmp"), domain.join("energy_uj")).unwrap();
    }
    std::thread::sleep(Duration::from_millis(150));
    tracer.signal(libc::SIGINT);
    assert!(tracer.wait(Duration::from_secs(30)).success());
    burn.exit();
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["power"]["meter"]["source"], "rapl");
    assert_eq!(run["power"]["meter"]["rapl_domains"][0], "package-0");
    let energy = run["power"]["trace"]["machine_energy_j"].as_f64().unwrap();
    assert!((energy - 4.0).abs() < 1e-9, "RAPL energy over the trace: {energy} J, the counters moved 4 J");

    // Asking for RAPL where there is none is an error that says so.
    let empty = util::temp_dir("trace-rapl-empty");
    let out = Command::new(util::geminst())
        .args(["trace", "--pid", &std::process::id().to_string(), "--power", "rapl", "--powercap"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RAPL cannot be read"), "{out:?}");
}
