//! `geminst run`: the whole pipeline on defaults. Starts the built-in server (a child process, so
//! the tracer measures the server alone), traces it, drives a load profile against it from this
//! process, stops the server gracefully (its log is flushed), joins the server's log with the
//! traced connections, and writes the data set to `runs/<UTC time>/`.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{Arc, atomic::AtomicBool, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    clock,
    dataset::{self, RunInfo, requests::JoinSummary},
    energy::PowerArgs,
    load::{self, GeminiUrl, LoadReport, Plan},
    session::{Session, SessionConfig},
    signals,
    trace::{self, MeasureArgs, StopReason, TraceConfig},
};

/// The profile used when none is given; copied into the run's folder so the run records it.
const DEFAULT_PROFILE: &str = include_str!("../../testdata/profiles/default.toml");

/// How long the server may take to start, and to finish and flush its log once asked to stop.
const SERVER_START: Duration = Duration::from_secs(30);
const SERVER_STOP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Load profile (TOML, docs/load-profiles.md); default: testdata/profiles/default.toml, built in
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Folder for the data set (default: runs/<UTC time>)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Capsule the server serves (default: the server's own default, the sample capsule)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Worker threads of the server (default: one per CPU)
    #[arg(long, value_name = "N")]
    pub server_threads: Option<u16>,
    #[command(flatten)]
    pub measure: MeasureArgs,
    #[command(flatten)]
    pub power: PowerArgs,
}

/// The built-in server, started as a child process.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
    describe: String,
}

impl Server {
    fn start(args: &RunArgs, dir: &Path) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the geminst binary")?;
        let log = dir.join("server-log.jsonl");
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--bench-routes", "--addr", "127.0.0.1:0", "--log"])
            .arg(&log)
            .arg("--state-dir")
            .arg(dir.join("server-state"));
        if let Some(root) = &args.root {
            cmd.arg("--root").arg(root);
        }
        if let Some(n) = args.server_threads {
            cmd.args(["--threads", &n.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting geminst serve")?;
        // The server names its address once it listens; everything it says goes to a file.
        let stderr = child.stderr.take().expect("piped");
        let mut saved = std::fs::File::create(dir.join("server.stderr"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(saved, "{line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + SERVER_START;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("geminst serve: listening on ") {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let addr = addr
                            .parse()
                            .with_context(|| format!("the server said it listens on {addr:?}"))?;
                        return Ok(Self { child, addr, log, describe: rest.to_string() });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "geminst serve did not start within {SERVER_START:?} (see {})",
                        dir.join("server.stderr").display()
                    );
                }
            }
        }
    }

    /// Asks the server to finish (SIGTERM: in-flight requests end, the log is flushed).
    fn terminate(&self) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The load profile: the given file, or the built-in default written into the run's folder.
fn plan(args: &RunArgs, dir: &Path, addr: std::net::SocketAddr) -> Result<Plan> {
    let path = match &args.profile {
        Some(p) => {
            std::fs::copy(p, dir.join("profile.toml")).with_context(|| format!("copying {}", p.display()))?;
            p.clone()
        }
        None => {
            let p = dir.join("profile.toml");
            std::fs::write(&p, DEFAULT_PROFILE)?;
            p
        }
    };
    let target =
        GeminiUrl::parse(&format!("gemini://localhost:{}/", addr.port())).map_err(anyhow::Error::msg)?;
    let mut plan = Plan::from_profile(&path)?.with_target(target);
    plan.connect = Some(addr.to_string());
    Ok(plan)
}

pub fn command(args: RunArgs) -> Result<ExitCode> {
    if let Some(p) = &args.profile {
        // A bad profile is found before anything starts.
        Plan::from_profile(p)?;
    }
    trace::require_root("geminst run")?;
    let mut info = RunInfo::begin();
    let dir =
        args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(clock::stamp(info.start.unix_ns)));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    signals::install();

    let mut server = Server::start(&args, &dir)?;
    eprintln!("geminst run: server {}", server.describe);
    let plan = plan(&args, &dir, server.addr)?;
    let mut session = Session::start(&SessionConfig {
        trace: TraceConfig {
            pids: vec![server.child.id()],
            ports: Some(vec![server.addr.port()]),
            bpf_stats: args.measure.bpf_stats,
        },
        interval: args.measure.interval(),
        power: args.power.clone(),
        capture: args.measure.capture(),
    })?;
    let planned =
        plan.planned_duration().map_or("until stopped".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    eprintln!(
        "geminst run: tracing the server; load from {} ({planned})",
        dir.join("profile.toml").display()
    );

    // The load runs on its own thread (its own runtime); this one keeps polling the tracer.
    let stop = Arc::new(AtomicBool::new(false));
    let options =
        load::Options { progress: true, stop: Some(stop.clone()), signals: true, ..load::Options::default() };
    let load_thread = std::thread::spawn(move || load::run(&plan, &options));
    while !load_thread.is_finished() {
        if session.wait(Duration::from_millis(20)) {
            // The server died under load: stop the load, keep what was measured. (Once the target
            // has exited, `wait` returns at once: leave the loop rather than spin.)
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            info.notes.push("the server exited before the load finished".into());
            break;
        }
        session.poll()?;
    }
    let report = load_thread.join().map_err(|_| anyhow::anyhow!("the load generator panicked"))??;

    // Let the last connections close, then stop the server; the trace ends when it has exited.
    std::thread::sleep(Duration::from_millis(200));
    server.terminate();
    let deadline = Instant::now() + SERVER_STOP;
    let reason = loop {
        if session.wait(Duration::from_millis(50)) {
            break StopReason::TargetExited;
        }
        session.poll()?;
        if Instant::now() >= deadline {
            info.notes.push(format!("the server did not exit within {SERVER_STOP:?} of SIGTERM; killed"));
            break StopReason::Requested;
        }
    };
    let m = session.stop()?;
    let server_exit = server_status(&mut server);
    if !server_exit.is_some_and(|s| s.success()) {
        info.notes.push(format!("the server ended with {server_exit:?}; see server.stderr"));
    }

    report.write_parquet(&dir.join("load.parquet"))?;
    info.section("load", &report.summary)?;
    info.section(
        "server",
        serde_json::json!({
            "describe": server.describe,
            "log": server.log,
            "exit": server_exit.map(|s| s.to_string()),
        }),
    )?;
    // The server keeps its generated certificate in its state folder; the predictions size the
    // handshake with it.
    let cert_file = dir.join("server-state").join("cert.pem");
    let cert = crate::capture::certs::CertChain::from_pem_file(
        cert_file.is_file().then_some(cert_file.as_path()),
        "the server's certificate",
    )?;
    let requests = dataset::Requests {
        server_log: Some(&server.log),
        clients: &report.records,
        cert: &cert,
        predict: true,
    };
    let join = dataset::write_run(&dir, &mut info, &m, reason, None, requests)?;
    info.write(&dir)?;
    trace::print_programs(&m.ebpf.programs);
    print_summary(&dir, &report, join.as_ref(), &info, m.power.source.source);
    Ok(if report.all_ok() { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::FAILURE) })
}

/// Reaps the server (killing it if it is still there).
fn server_status(server: &mut Server) -> Option<std::process::ExitStatus> {
    match server.child.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => {
            let _ = server.child.kill();
            server.child.wait().ok()
        }
    }
}

fn print_summary(dir: &Path, report: &LoadReport, join: Option<&JoinSummary>, info: &RunInfo, source: &str) {
    let s = &report.summary;
    println!(
        "load: {} requests in {:.1} s, {} ok, {} failed; {:.1} completed/s",
        s.requests.scheduled, s.duration_s, s.requests.ok, s.requests.failed, s.completed_rate
    );
    let p = join.map(|j| j.per_request.clone()).unwrap_or_default();
    println!(
        "per request (mean of {}): CPU {:.1} µs (eBPF{}), energy {:.3} mJ ({source})",
        p.requests,
        p.cpu_us,
        p.log_cpu_us.map_or(String::new(), |c| format!("; the server's own measure {c:.1} µs")),
        p.energy_mj
    );
    println!(
        "bytes per request: application {:.0} in, {:.0} out (Gemini); socket layer {:.0} in, {:.0} out (TLS records)",
        p.app_request_bytes, p.app_response_bytes, p.socket_received_bytes, p.socket_sent_bytes
    );
    if let Some(r) = join.map(|j| &j.counts) {
        println!(
            "reconciliation: {} load requests, {} server log lines, {} traced connections ({} joined, {} log only, {} traced only)",
            s.requests.scheduled, r.log_records, r.ebpf_connections, r.joined, r.log_only, r.ebpf_only
        );
    }
    let lost: u64 = info.lost.values().sum();
    if lost > 0 {
        println!("lost or dropped: {lost} (see run.json)");
    }
    println!("wrote {}", dir.display());
}
