//! The `geminst trace` command: a measuring session on the given processes until a duration, a
//! signal or their exit, then the data set.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{StopReason, TraceArgs, TraceConfig, summary};
use crate::{
    clock,
    dataset::{self, RunInfo},
    session::{Session, SessionConfig},
    signals,
};

/// `geminst trace`.
pub fn command(args: TraceArgs) -> Result<ExitCode> {
    if let Some(d) = args.duration
        && !(d > 0.0 && d.is_finite())
    {
        return crate::exit::bad_input(format!("--duration must be a positive number of seconds, not {d}"));
    }
    // Input read before anything is measured, so a bad file loses nothing.
    let cert = crate::capture::certs::CertChain::from_pem_file(args.server_cert.as_deref(), "--server-cert")?;
    let mut info = RunInfo::begin();
    let cfg = SessionConfig {
        trace: TraceConfig {
            pids: args.pids.clone(),
            ports: (!args.ports.is_empty()).then(|| args.ports.clone()),
            bpf_stats: args.measure.bpf_stats,
        },
        interval: args.measure.interval(),
        power: args.power.clone(),
        capture: args.measure.capture(),
    };
    let mut session = Session::start(&cfg)?;
    signals::install();
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => PathBuf::from("runs").join(format!("{}-trace", clock::stamp(info.start.unix_ns))),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let names: Vec<String> = session.tracer().targets().map(|(p, c)| format!("{p} ({c})")).collect();
    let ports: Vec<String> = session.tracer().ports().iter().map(u16::to_string).collect();
    eprintln!(
        "geminst: tracing {} (ports: {}) {}; Ctrl-C to stop",
        names.join(", "),
        if ports.is_empty() { "none".to_string() } else { ports.join(", ") },
        match args.duration {
            Some(d) => format!("for {d} s"),
            None => "until it exits".to_string(),
        }
    );

    let started = Instant::now();
    let progress = summary::Progress::new();
    let reason = loop {
        if signals::stop_requested() {
            break StopReason::Signal;
        }
        let left = args.duration.map(|d| d - started.elapsed().as_secs_f64());
        if left.is_some_and(|l| l <= 0.0) {
            break StopReason::Duration;
        }
        // Wake for whichever comes first: the next sample, the end, or a target's exit.
        let to_sample = session.next_sample_ns().saturating_sub(clock::monotonic_ns());
        let mut step = Duration::from_nanos(to_sample).min(Duration::from_millis(100));
        if let Some(l) = left {
            step = step.min(Duration::from_secs_f64(l.max(0.0)));
        }
        if session.wait(step) {
            break StopReason::TargetExited;
        }
        session.poll()?;
        if progress.due() {
            let (closed, threads) = session.progress()?;
            progress.show(closed, &threads);
        }
    };
    progress.finish();
    let m = session.stop()?;
    let requests = dataset::Requests {
        server_log: args.server_log.as_deref(),
        clients: &[],
        cert: &cert,
        predict: args.server_log.is_some(),
    };
    let join = dataset::write_run(&out, &mut info, &m, reason, args.duration, requests)?;
    info.write(&out)?;
    summary::print(&m, reason, &out, join.as_ref().map(|j| &j.counts));
    Ok(ExitCode::SUCCESS)
}
