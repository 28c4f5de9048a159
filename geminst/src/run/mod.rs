//! `geminst run`: the whole pipeline. Starts a server (the built-in one by default, or any kind
//! in `kinds.rs`, or a command of the user's) as a child process, so the tracer measures the
//! server alone; traces it; drives a load profile against it from this process; stops the server
//! gracefully (its log is flushed); joins the server's log (where it writes one) and the load
//! generator's records with the traced connections; and writes the data set to `runs/<UTC time>/`.

mod fixtures;
mod kinds;
mod server;
mod summary;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
pub use kinds::ServerKind;
use serde_json::json;

use self::{
    kinds::Launch,
    server::{Ready, ServerProcess},
};
use crate::{
    clock,
    dataset::{self, RunInfo},
    energy::PowerArgs,
    load::{self, GeminiUrl, MixEntry, Plan, UrlSpec},
    session::{Session, SessionConfig},
    signals,
    trace::{self, MeasureArgs, StopReason, TraceConfig},
};

/// The profile used when none is given; copied into the run's folder so the run records it.
const DEFAULT_PROFILE: &str = include_str!("../../../testdata/profiles/default.toml");

/// How long the server may take to finish and flush its log once asked to stop.
const SERVER_STOP: Duration = Duration::from_secs(30);

/// The built-in server's route for N response bytes; servers without it serve a file instead.
const BENCH_BYTES_PREFIX: &str = "/_bench/bytes/";
const BENCH_PREFIX: &str = "/_bench/";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Load profile (TOML, docs/load-profiles.md); default: testdata/profiles/default.toml, built in
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Folder for the data set (default: runs/<UTC time>)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The server to start and trace
    #[arg(long, value_enum, default_value_t = ServerKind::Geminst, conflicts_with = "server_cmd")]
    pub server: ServerKind,
    /// Start this command instead (run by sh); {port}, {root}, {cert}, {key} and {hostname} are
    /// filled in. It must serve Gemini on 127.0.0.1:{port}
    #[arg(long, value_name = "CMD")]
    pub server_cmd: Option<String>,
    /// An argument added to the server's command line (repeat for several), e.g.
    /// --server-arg=--model --server-arg=asyncio for the Python server's event loop
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Capsule the server serves (default: the sample capsule)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Worker threads of the built-in server (default: one per CPU)
    #[arg(long, value_name = "N")]
    pub server_threads: Option<u16>,
    #[command(flatten)]
    pub measure: MeasureArgs,
    #[command(flatten)]
    pub power: PowerArgs,
}

/// The server asked for: a known kind, or a command.
#[derive(Debug, Clone)]
struct ServerChoice {
    kind: Option<ServerKind>,
    cmd: Option<String>,
}

impl ServerChoice {
    fn of(args: &RunArgs) -> Self {
        match &args.server_cmd {
            Some(cmd) => Self { kind: None, cmd: Some(cmd.clone()) },
            None => Self { kind: Some(args.server), cmd: None },
        }
    }

    fn name(&self) -> &'static str {
        self.kind.map_or("custom", ServerKind::name)
    }

    fn writes_log(&self) -> bool {
        self.kind.is_some_and(ServerKind::writes_log)
    }

    fn bench_routes(&self) -> bool {
        self.kind.is_some_and(ServerKind::bench_routes)
    }
}

/// The load profile: the given file, or the built-in default, written into the run's folder.
fn read_plan(args: &RunArgs, dir: &Path) -> Result<Plan> {
    let path = dir.join("profile.toml");
    match &args.profile {
        Some(p) => std::fs::copy(p, &path).map(drop).with_context(|| format!("copying {}", p.display()))?,
        None => std::fs::write(&path, DEFAULT_PROFILE)?,
    }
    Plan::from_profile(&path)
}

/// Profiles name response sizes (`response_bytes`, the built-in server's /_bench/bytes/N). A
/// server without bench routes is asked for the file of that size the run's capsule holds
/// instead; its other bench routes (/_bench/cpu/US) are dropped from the mix, with a note. Returns
/// the sizes asked for.
fn adapt_to_server(plan: &mut Plan, bench_routes: bool, notes: &mut Vec<String>) -> Result<Vec<u64>> {
    let mut sizes = Vec::new();
    for phase in &mut plan.phases {
        let mut kept: Vec<MixEntry> = Vec::new();
        for entry in phase.mix.drain(..) {
            let UrlSpec::Path(path) = &entry.url else {
                kept.push(entry);
                continue;
            };
            let size = path
                .strip_prefix(BENCH_BYTES_PREFIX)
                .and_then(|rest| rest.split(['?', '/']).next())
                .and_then(|n| n.parse::<u64>().ok());
            match size {
                Some(n) if !bench_routes => {
                    sizes.push(n);
                    kept.push(MixEntry { url: UrlSpec::Path(fixtures::sized_path(n)), weight: entry.weight });
                }
                None if !bench_routes && path.starts_with(BENCH_PREFIX) => notes.push(format!(
                    "phase {:?}: {path} (weight {}) dropped from the mix: the server has no bench routes",
                    phase.name, entry.weight
                )),
                _ => kept.push(entry),
            }
        }
        if kept.is_empty() {
            return crate::exit::bad_input(format!(
                "phase {:?} of the profile asks only for bench routes, which this server does not have",
                phase.name
            ));
        }
        phase.mix = kept;
    }
    Ok(sizes)
}

/// Starts the chosen server on the run's fixtures.
fn start_server(
    choice: &ServerChoice,
    args: &RunArgs,
    fx: &fixtures::Fixtures,
    dir: &Path,
    log: &Path,
) -> Result<ServerProcess> {
    // Servers that print their address choose a free port themselves; the others get one.
    let prints_address = choice.kind.and_then(ServerKind::listening_prefix);
    let port = if prints_address.is_some() { 0 } else { server::free_port()? };
    let launch = Launch {
        port,
        root: fx.root.clone(),
        cert: fx.cert.clone(),
        key: fx.key.clone(),
        log: log.to_path_buf(),
        state_dir: fx.state_dir.clone(),
        run_dir: dir.to_path_buf(),
        threads: args.server_threads,
        extra_args: args.server_args.clone(),
    };
    let (cmd, ready) = match (&choice.cmd, choice.kind) {
        (Some(template), _) => (kinds::custom_command(template, &launch), Ready::Port(port)),
        (None, Some(kind)) => {
            let ready = kind.listening_prefix().map_or(Ready::Port(port), Ready::Line);
            (kinds::command(kind, &launch)?, ready)
        }
        (None, None) => unreachable!("a choice is a kind or a command"),
    };
    ServerProcess::start(cmd, ready, &dir.join("server.stderr"), choice.name())
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

    let choice = ServerChoice::of(&args);
    let mut plan = read_plan(&args, &dir)?;
    let sizes = adapt_to_server(&mut plan, choice.bench_routes(), &mut info.notes)?;
    let fx = fixtures::prepare(args.root.as_deref(), &sizes, choice.bench_routes())?;
    // The server's certificate sits beside the data: the predictions size the handshake with it.
    let cert_copy = dir.join("server-cert.pem");
    std::fs::copy(&fx.cert, &cert_copy).with_context(|| format!("copying {}", fx.cert.display()))?;
    let log = dir.join("server-log.jsonl");
    let mut server = start_server(&choice, &args, &fx, &dir, &log)?;
    eprintln!("geminst run: {} server on {} ({})", choice.name(), server.addr, server.describe);
    let target = GeminiUrl::parse(&format!("gemini://{}:{}/", kinds::HOSTNAME, server.addr.port()))
        .map_err(anyhow::Error::msg)?;
    plan = plan.with_target(target);
    plan.connect = Some(server.addr.to_string());

    let mut session = Session::start(&SessionConfig {
        trace: TraceConfig {
            pids: vec![server.pid()],
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
    let server_exit = server.status();
    if !server_exit.is_some_and(|s| s.success()) {
        let how = server_exit.map_or_else(|| "an unknown status".to_string(), |s| s.to_string());
        info.notes.push(format!("the server ended with {how} after SIGTERM; see server.stderr"));
    }

    report.write_parquet(&dir.join("load.parquet"))?;
    info.section("load", &report.summary)?;
    info.section(
        "server",
        json!({
            "kind": choice.name(),
            "command": choice.cmd,
            "args": args.server_args,
            "describe": server.describe,
            "root": fx.root,
            "log": choice.writes_log().then_some(&log),
            "exit": server_exit.map(|s| s.to_string()),
        }),
    )?;
    let cert = crate::capture::certs::CertChain::from_pem_file(Some(&cert_copy), "the server's certificate")?;
    let requests = dataset::Requests {
        server_log: choice.writes_log().then_some(log.as_path()),
        clients: &report.records,
        cert: &cert,
        predict: choice.kind == Some(ServerKind::Geminst),
    };
    let join = dataset::write_run(&dir, &mut info, &m, reason, None, requests)?;
    info.write(&dir)?;
    trace::print_programs(&m.ebpf.programs);
    summary::print(&dir, &report, join.as_ref(), &info, m.power.source.source);
    Ok(if report.all_ok() { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::FAILURE) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_become_files_and_other_bench_routes_leave_the_mix_for_servers_without_them() {
        let mut plan = Plan::from_profile_text(DEFAULT_PROFILE, "default.toml", Path::new(".")).unwrap();
        let mut notes = Vec::new();
        let mut sizes = adapt_to_server(&mut plan, false, &mut notes).unwrap();
        sizes.sort_unstable();
        sizes.dedup();
        assert_eq!(sizes, vec![1024, 16384, 65536]);
        let paths: Vec<String> =
            plan.phases.iter().flat_map(|p| p.mix.iter().map(|m| m.url.to_string())).collect();
        assert!(paths.iter().all(|p| p.starts_with("/_sized/")), "{paths:?}");
        assert!(paths.contains(&"/_sized/16384.txt".to_string()));
        // The CPU route of the two phases that have it.
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("/_bench/cpu/500"));

        // With bench routes nothing changes.
        let mut plan = Plan::from_profile_text(DEFAULT_PROFILE, "default.toml", Path::new(".")).unwrap();
        let before: Vec<String> =
            plan.phases.iter().flat_map(|p| p.mix.iter().map(|m| m.url.to_string())).collect();
        assert!(adapt_to_server(&mut plan, true, &mut notes).unwrap().is_empty());
        let after: Vec<String> =
            plan.phases.iter().flat_map(|p| p.mix.iter().map(|m| m.url.to_string())).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn a_phase_of_bench_routes_only_is_bad_input_for_a_server_without_them() {
        let text = "[defaults]\ntarget = \"gemini://localhost\"\n[[phase]]\nname = \"cpu\"\nrate = 1\nduration = \"1s\"\nurl = \"/_bench/cpu/10\"\n";
        let mut plan = Plan::from_profile_text(text, "cpu.toml", Path::new(".")).unwrap();
        let e = adapt_to_server(&mut plan, false, &mut Vec::new()).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        assert!(e.to_string().contains("\"cpu\""), "{e}");
    }
}
