//! `geminst trace`: attributes on-CPU time (and, with the other hook families, I/O and socket
//! bytes) to each thread of one or more running processes, with eBPF programs that aggregate in
//! kernel maps.
//!
//! The public face is [`Tracer`] (start, poll, stop) for `run`, and [`command`] for the CLI.

mod btf;
mod probes;
pub mod procfs;
mod summary;
pub mod tracefs;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

pub use probes::ProgramStats;
use probes::{Offsets, Probes};
use procfs::Target;

use crate::{
    clock,
    dataset::{self, RunInfo, threads::ThreadRow},
    signals,
};

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Process to trace (repeat for several processes)
    #[arg(long = "pid", required = true, value_name = "PID")]
    pub pids: Vec<u32>,
    /// Stop after this many seconds (default: when the targets exit, or on Ctrl-C)
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Folder for threads.parquet and run.json (default: runs/<UTC time>-trace)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Turn on the kernel's BPF statistics and report each program's cost per event
    #[arg(long)]
    pub bpf_stats: bool,
}

/// How a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Duration,
    Signal,
    TargetExited,
    Requested,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duration => "duration",
            Self::Signal => "signal",
            Self::TargetExited => "target_exited",
            Self::Requested => "requested",
        }
    }
}

/// What a finished trace measured.
#[derive(Debug)]
pub struct TraceOutput {
    pub threads: Vec<ThreadRow>,
    /// Loss counters by name (`ebpf.<counter>`), zeros included.
    pub lost: BTreeMap<String, u64>,
    pub programs: Vec<ProgramStats>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Targets that exited during the trace, with the time it was noticed.
    pub exited: Vec<(u32, u64)>,
    pub offsets: BTreeMap<&'static str, u32>,
    /// Why the kernel's BTF gave no offset for the task runtime, if it did not.
    pub btf_problem: Option<String>,
}

use std::collections::BTreeMap;

/// A running trace of one or more processes.
pub struct Tracer {
    probes: Probes,
    targets: Vec<Target>,
    exited: Vec<(u32, u64)>,
    offsets: Offsets,
    start_ns: u64,
}

/// Fails unless the process runs as root.
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (loading eBPF programs needs CAP_BPF and CAP_PERFMON): run it with sudo");
    }
    Ok(())
}

impl Tracer {
    /// Checks the targets, mounts tracefs if needed, loads and attaches the programs. When this
    /// returns, every thread of every target is being traced.
    pub fn start(pids: &[u32], bpf_stats: bool) -> Result<Self> {
        // Bad input first, so a wrong pid gets its own message whoever runs it.
        let targets = pids.iter().map(|&p| Target::open(p)).collect::<Result<Vec<_>>>()?;
        require_root("geminst trace")?;
        tracefs::ensure_mounted()?;
        let offsets = Offsets::read()?;
        let mut probes = Probes::load(&offsets)?;
        if bpf_stats {
            probes.enable_stats()?;
        }
        for t in &targets {
            probes.add_target(t.pid)?;
        }
        // Room for the threads there now, and for some created before attach completes.
        let existing: usize = targets.iter().map(|t| t.tasks().len()).sum();
        probes.reserve_slots(existing as u32 + 256)?;
        // Attach before listing threads: a thread created from here on is caught by task_newtask,
        // one created before is in /proc when it is listed.
        probes.attach()?;
        let start_ns = clock::monotonic_ns();
        for t in &targets {
            for tid in t.tasks() {
                let comm = procfs::comm(t.pid, tid).unwrap_or_default();
                let runtime = procfs::runtime_ns(t.pid, tid);
                probes.add_thread(t.pid, tid, clock::monotonic_ns(), runtime, &comm)?;
            }
        }
        Ok(Self { probes, targets, exited: Vec::new(), offsets, start_ns })
    }

    pub fn targets(&self) -> impl Iterator<Item = (u32, &str)> {
        self.targets.iter().map(|t| (t.pid, t.comm.as_str()))
    }

    /// Waits up to `timeout` for a target to exit; true once every target has exited.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            for t in &self.targets {
                if !self.exited.iter().any(|(p, _)| *p == t.pid) && t.wait_exit(0) {
                    self.exited.push((t.pid, clock::monotonic_ns()));
                }
            }
            if self.exited.len() == self.targets.len() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Sleep on the first live target's pidfd, so an exit wakes us at once.
            let live = self.targets.iter().find(|t| !self.exited.iter().any(|(p, _)| *p == t.pid));
            if let Some(t) = live {
                t.wait_exit(left.as_millis().clamp(1, 100) as i32);
            }
        }
    }

    /// The threads' counters now, with the current slice of running threads counted up to `now`.
    pub fn threads_now(&self) -> Result<Vec<ThreadRow>> {
        let now = clock::monotonic_ns();
        self.rows(now, true)
    }

    fn rows(&self, now_ns: u64, live: bool) -> Result<Vec<ThreadRow>> {
        use geminst_common::sched::{
            THREAD_EXITED, THREAD_RUNTIME_KNOWN, THREAD_SEEN_AT_START, THREAD_START_PROVISIONAL,
        };
        let mut rows: Vec<ThreadRow> = self
            .probes
            .threads()?
            .into_iter()
            .map(|s| {
                let tid = s.tid;
                let exited = s.flags & THREAD_EXITED != 0;
                // The kernel's runtime growth since the thread's last switch out: zero for a
                // thread off CPU, the running slice (as of the scheduler's last update) otherwise.
                let growth = (!exited && s.flags & THREAD_RUNTIME_KNOWN != 0)
                    .then(|| procfs::runtime_ns(s.tgid, tid))
                    .flatten()
                    .map(|rt| rt.saturating_sub(s.last_out_runtime_ns));
                let mut unseen = s.unseen_switch_ins;
                // The current slice, if the thread is on a CPU now, counted up to now.
                let running = if exited {
                    0
                } else if s.switched_in_ns != 0 {
                    let measured = now_ns.saturating_sub(s.switched_in_ns);
                    match growth {
                        // Registered while asleep and not run since: no slice at all.
                        Some(k) if s.flags & THREAD_START_PROVISIONAL != 0 => measured.min(k),
                        _ => measured,
                    }
                } else {
                    // On a CPU since a switch in that was not reported, or off CPU (growth 0).
                    let k = growth.unwrap_or(0);
                    unseen += u64::from(k > 0);
                    k
                };
                let comm = if exited || !live { None } else { procfs::comm(s.tgid, tid) };
                ThreadRow {
                    tgid: s.tgid,
                    tid,
                    comm: comm.unwrap_or_else(|| c_string(&s.comm)),
                    oncpu_ns: s.oncpu_ns + running,
                    voluntary_switches: s.voluntary_switches,
                    involuntary_switches: s.involuntary_switches,
                    wait_ns: s.wait_ns,
                    first_seen_ns: s.first_seen_ns,
                    last_seen_ns: if running > 0 { now_ns } else { s.last_seen_ns },
                    seen_at_start: s.flags & THREAD_SEEN_AT_START != 0,
                    exit_ns: exited.then_some(s.exit_ns),
                    unseen_switch_ins: unseen,
                }
            })
            .collect();
        rows.sort_by_key(|r| (r.tgid, r.tid));
        Ok(rows)
    }

    /// Detaches everything and returns what was measured.
    pub fn stop(mut self) -> Result<TraceOutput> {
        // Statistics live in the loaded programs: read them before unloading.
        let programs = self.probes.program_stats();
        // Current names of live threads, before they can exit.
        let names: BTreeMap<u32, String> = self
            .probes
            .threads()?
            .into_iter()
            .filter_map(|s| procfs::comm(s.tgid, s.tid).map(|c| (s.tid, c)))
            .collect();
        let end_ns = clock::monotonic_ns();
        self.probes.detach()?;
        let mut threads = self.rows(end_ns, false)?;
        for row in &mut threads {
            if row.exit_ns.is_none()
                && let Some(name) = names.get(&row.tid)
            {
                row.comm = name.clone();
            }
        }
        let lost = self.probes.lost()?;
        Ok(TraceOutput {
            threads,
            lost,
            programs,
            start_ns: self.start_ns,
            end_ns,
            exited: self.exited.clone(),
            offsets: self.offsets.describe(),
            btf_problem: self.offsets.btf_problem.clone(),
        })
    }
}

/// A NUL-padded kernel string.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `geminst trace`.
pub fn command(args: TraceArgs) -> Result<ExitCode> {
    if let Some(d) = args.duration
        && !(d > 0.0 && d.is_finite())
    {
        return crate::exit::bad_input(format!("--duration must be a positive number of seconds, not {d}"));
    }
    let mut info = RunInfo::begin();
    let mut tracer = Tracer::start(&args.pids, args.bpf_stats)?;
    signals::install();
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => PathBuf::from("runs").join(format!("{}-trace", clock::stamp(info.start.unix_ns))),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let names: Vec<String> = tracer.targets().map(|(p, c)| format!("{p} ({c})")).collect();
    eprintln!(
        "geminst: tracing {} {}; Ctrl-C to stop",
        names.join(", "),
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
        if let Some(d) = args.duration
            && started.elapsed().as_secs_f64() >= d
        {
            break StopReason::Duration;
        }
        let step = match args.duration {
            Some(d) => Duration::from_secs_f64((d - started.elapsed().as_secs_f64()).clamp(0.0, 0.1)),
            None => Duration::from_millis(100),
        };
        if tracer.wait(step) {
            break StopReason::TargetExited;
        }
        if progress.due() {
            let threads = tracer.threads_now()?;
            progress.show(started.elapsed(), &threads);
        }
    };
    progress.finish();
    let output = tracer.stop()?;
    write_outputs(&out, &mut info, &args, &output, reason)?;
    summary::print(&output, reason, &out);
    Ok(ExitCode::SUCCESS)
}

fn write_outputs(
    out: &std::path::Path,
    info: &mut RunInfo,
    args: &TraceArgs,
    output: &TraceOutput,
    reason: StopReason,
) -> Result<()> {
    dataset::threads::write(out, &output.threads)?;
    info.finish(reason.as_str());
    info.lost.extend(output.lost.clone());
    for (pid, at) in &output.exited {
        info.notes.push(format!(
            "target {pid} exited during the trace ({:.3} s in); counters up to its exit are kept",
            (at.saturating_sub(output.start_ns)) as f64 / 1e9
        ));
    }
    if let Some(problem) = &output.btf_problem {
        info.notes.push(format!(
            "the kernel's BTF gave no offset for task_struct.se.sum_exec_runtime ({problem}): slices \
             whose switch in the kernel did not report are not measured (lost.ebpf.slice_lost)"
        ));
    }
    let unseen: u64 = output.threads.iter().map(|t| t.unseen_switch_ins).sum();
    if unseen > 0 {
        info.notes.push(format!(
            "{unseen} slices began with a switch in that this kernel did not report (it suppresses \
             tracepoints in the context of some tasks); their on-CPU time is the kernel's own \
             runtime accounting (threads.parquet column unseen_switch_ins)"
        ));
    }
    #[derive(Serialize)]
    struct TraceSection<'a> {
        pids: &'a [u32],
        duration_s: Option<f64>,
        start_mono_ns: u64,
        end_mono_ns: u64,
        exited: Vec<ExitedTarget>,
        tracepoint_offsets: &'a BTreeMap<&'static str, u32>,
        bpf_stats: bool,
        programs: &'a [ProgramStats],
    }
    #[derive(Serialize)]
    struct ExitedTarget {
        pid: u32,
        noticed_mono_ns: u64,
    }
    info.section(
        "trace",
        TraceSection {
            pids: &args.pids,
            duration_s: args.duration,
            start_mono_ns: output.start_ns,
            end_mono_ns: output.end_ns,
            exited: output.exited.iter().map(|&(pid, t)| ExitedTarget { pid, noticed_mono_ns: t }).collect(),
            tracepoint_offsets: &output.offsets,
            bpf_stats: args.bpf_stats,
            programs: &output.programs,
        },
    )?;
    info.write(out)
}
