//! `geminst trace`: attributes on-CPU time, socket, block and file I/O to each thread and TCP
//! connection of one or more running processes, with eBPF programs that aggregate in kernel maps.
//!
//! The public face is [`Tracer`] (start, poll, stop) for `run`, and [`command`] for the CLI.

mod btf;
mod offsets;
mod output;
mod probes;
pub mod procfs;
mod rows;
mod summary;
pub mod timeseries;
pub mod tracefs;
mod wire;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use geminst_common::sock::{CLOSED_GRACE_NS, ConnStats, EVENT_CLOSED};
use serde::Serialize;

use offsets::Offsets;
pub use output::write as write_output;
use probes::Probes;
pub use probes::ProgramStats;
use procfs::Target;
pub use summary::print_programs;
use timeseries::{Machine, Sampler, totals_of_threads};

use crate::{
    capture::{Capture, CaptureConfig, CaptureOutput},
    clock,
    dataset::{RunInfo, connections::ConnRow, threads::ThreadRow, timeseries::TimeRow},
    energy::{self, Meter, PowerArgs, Reading},
    signals,
};

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Process to trace (repeat for several processes)
    #[arg(long = "pid", required = true, value_name = "PID")]
    pub pids: Vec<u32>,
    /// Server port whose connections are recorded from their first state change (repeat for
    /// several; default: the ports the targets listen on)
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Stop after this many seconds (default: when the targets exit, or on Ctrl-C)
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Folder for the data set (default: runs/<UTC time>-trace)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The built-in server's request log: joined with the connections into requests.parquet
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// The server's certificate chain (PEM), to size the TLS handshake in the predicted bytes
    /// (default: a typical self-signed ECDSA P-256 certificate)
    #[arg(long, value_name = "FILE")]
    pub server_cert: Option<PathBuf>,
    #[command(flatten)]
    pub power: PowerArgs,
}

/// How to measure, shared by `geminst trace` and `geminst run`.
#[derive(Debug, Clone, Args)]
pub struct MeasureArgs {
    /// Length of a time-series interval in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub interval: u64,
    /// Turn on the kernel's BPF statistics and report each program's cost per event
    #[arg(long)]
    pub bpf_stats: bool,
    /// Interface to capture the server ports' packets on, for wire bytes (libpcap)
    #[arg(long, value_name = "IFACE", default_value = "lo")]
    pub iface: String,
    /// Do not capture packets (no wire columns)
    #[arg(long, conflicts_with_all = ["iface", "write_pcap"])]
    pub no_capture: bool,
    /// Also write the captured packets to this pcap file (for Wireshark)
    #[arg(long, value_name = "FILE")]
    pub write_pcap: Option<PathBuf>,
}

impl MeasureArgs {
    /// The packet capture asked for: the interface and the optional pcap file.
    pub fn capture(&self) -> Option<(String, Option<PathBuf>)> {
        (!self.no_capture).then(|| (self.iface.clone(), self.write_pcap.clone()))
    }
}

/// What to trace and how.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub pids: Vec<u32>,
    /// Server ports; None: the ports the targets listen on when the trace starts.
    pub ports: Option<Vec<u16>>,
    pub bpf_stats: bool,
    pub interval: Duration,
    pub power: PowerArgs,
    /// Packet capture on the server ports: the interface and optional pcap file.
    pub capture: Option<(String, Option<PathBuf>)>,
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
    /// Closed connections first (in the order they closed), then those still open.
    pub connections: Vec<ConnRow>,
    pub timeseries: Vec<TimeRow>,
    /// Loss counters by name (`ebpf.<counter>`), zeros included.
    pub lost: BTreeMap<String, u64>,
    pub programs: Vec<ProgramStats>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// Targets that exited during the trace, with the time it was noticed.
    pub exited: Vec<(u32, u64)>,
    /// Every field offset used, by `tracepoint.field`.
    pub offsets: BTreeMap<String, u32>,
    /// Why the kernel's BTF gave no offset for the task runtime, if it did not.
    pub btf_problem: Option<String>,
    /// Machine-wide asynchronous writeback queued during the trace.
    pub writeback_bytes: u64,
    pub bpf_stats: bool,
    /// The machine's energy over the trace and the rate CPU time is charged at.
    pub energy: energy::Totals,
    /// The power source and model, for run.json.
    pub power: serde_json::Value,
    /// What the packet capture saw, if there was one.
    pub wire: Option<CaptureOutput>,
    /// Why there was no capture, if one was asked for.
    pub capture_problem: Option<String>,
}

/// A running trace of one or more processes.
pub struct Tracer {
    probes: Probes,
    targets: Vec<Target>,
    exited: Vec<(u32, u64)>,
    offsets: Offsets,
    ports: Vec<u16>,
    bpf_stats: bool,
    start_ns: u64,
    /// Connections harvested from the kernel, in the order they closed.
    closed: Vec<ConnStats>,
    /// Connections closed and waiting out their grace period: (id, close time).
    closing: std::collections::VecDeque<(u64, u64)>,
    /// Connections that reached TCP_CLOSE so far.
    closed_count: u64,
    sampler: Sampler,
    meter: Meter,
    capture: Option<Capture>,
    capture_problem: Option<String>,
    last_reading: Reading,
    /// The machine's energy and busy CPU time so far: sums of the intervals'.
    machine: Machine,
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
    pub fn start(cfg: &TraceConfig) -> Result<Self> {
        // Bad input first, so a wrong pid gets its own message whoever runs it.
        let targets = cfg.pids.iter().map(|&p| Target::open(p)).collect::<Result<Vec<_>>>()?;
        if cfg.interval.is_zero() {
            return crate::exit::bad_input("the time-series interval must be longer than zero");
        }
        require_root("geminst trace")?;
        tracefs::ensure_mounted()?;
        let mut ports = match &cfg.ports {
            Some(ports) => ports.clone(),
            None => targets.iter().flat_map(|t| procfs::listening_ports(t.pid)).collect(),
        };
        ports.sort_unstable();
        ports.dedup();
        if ports.len() > geminst_common::sock::MAX_PORTS {
            return crate::exit::bad_input(format!(
                "at most {} server ports can be traced at once, not {} ({ports:?}): pass --port",
                geminst_common::sock::MAX_PORTS,
                ports.len()
            ));
        }
        let offsets = Offsets::read(&ports)?;
        let mut meter = Meter::new(&cfg.power, crate::dataset::runinfo::Host::read().cpus)?;
        let mut probes = Probes::load(&offsets)?;
        if cfg.bpf_stats {
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
        // The capture starts with the programs: a connection's handshake is seen by both.
        let (capture, capture_problem) = match &cfg.capture {
            None => (None, None),
            Some(_) if ports.is_empty() => {
                (None, Some("no server port to capture (pass --port)".to_string()))
            }
            Some((iface, pcap)) => {
                let mut c = CaptureConfig::new(iface.clone(), &ports);
                c.write_pcap = pcap.clone();
                (Some(Capture::start(c)?), None)
            }
        };
        let start_ns = clock::monotonic_ns();
        let last_reading = meter.read(start_ns);
        for t in &targets {
            for tid in t.tasks() {
                let comm = procfs::comm(t.pid, tid).unwrap_or_default();
                let runtime = procfs::runtime_ns(t.pid, tid);
                probes.add_thread(t.pid, tid, clock::monotonic_ns(), runtime, &comm)?;
            }
            // Files already open count from now on (later ones are seen being opened).
            for fd in procfs::path_fds(t.pid) {
                probes.add_open_fd(t.pid, fd)?;
            }
        }
        Ok(Self {
            probes,
            targets,
            exited: Vec::new(),
            offsets,
            ports,
            bpf_stats: cfg.bpf_stats,
            start_ns,
            closed: Vec::new(),
            closing: std::collections::VecDeque::new(),
            closed_count: 0,
            sampler: Sampler::new(start_ns, cfg.interval),
            meter,
            capture,
            capture_problem,
            last_reading,
            machine: Machine::default(),
        })
    }

    /// The server ports whose connections are recorded from their first state change.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Collects closed connections and takes the time-series sample if one is due. Call it
    /// often (every interval at least): the kernel hands closed connections over through a ring
    /// buffer of bounded size.
    pub fn poll(&mut self) -> Result<()> {
        self.conn_events();
        let now = clock::monotonic_ns();
        // Harvest the connections whose grace period is over.
        while let Some(&(id, closed)) = self.closing.front() {
            if closed + CLOSED_GRACE_NS > now {
                break;
            }
            self.closing.pop_front();
            if let Some(c) = self.probes.take_conn(id)? {
                self.closed.push(c);
            }
        }
        if now >= self.sampler.next_ns() {
            let totals = self.totals(now)?;
            let rss = self.rss();
            let machine = self.machine(now);
            let wire = self.capture.as_ref().map(Capture::totals);
            self.sampler.sample(now, totals, rss, machine, wire);
        }
        Ok(())
    }

    /// Takes the kernel's lifecycle events: closes start a grace period.
    fn conn_events(&mut self) {
        for e in self.probes.conn_events() {
            if e.kind == EVENT_CLOSED {
                self.closed_count += 1;
                self.closing.push_back((e.conn.conn_id, e.conn.closed_ns));
            }
        }
    }

    fn totals(&self, now: u64) -> Result<crate::dataset::timeseries::Counts> {
        let threads: Vec<ThreadRow> =
            self.probes.threads()?.iter().map(|s| rows::thread_row(s, now)).collect();
        Ok(totals_of_threads(&threads, self.probes.writeback_bytes()?, self.closed_count))
    }

    /// Reads the machine's meter; what it did since the last reading.
    fn machine(&mut self, now: u64) -> Machine {
        let reading = self.meter.read(now);
        let m = Machine {
            busy_cpu_ns: reading.busy_ns.saturating_sub(self.last_reading.busy_ns),
            energy_j: self.meter.joules(&self.last_reading, &reading),
        };
        self.last_reading = reading;
        self.machine.busy_cpu_ns += m.busy_cpu_ns;
        self.machine.energy_j += m.energy_j;
        m
    }

    /// When the next time-series sample is due (CLOCK_MONOTONIC ns).
    pub fn next_sample_ns(&self) -> u64 {
        self.sampler.next_ns()
    }

    /// Resident memory of the live targets.
    fn rss(&self) -> Option<u64> {
        let live: Vec<u64> = self
            .targets
            .iter()
            .filter(|t| !self.exited.iter().any(|(p, _)| *p == t.pid))
            .filter_map(|t| procfs::rss_bytes(t.pid))
            .collect();
        (!live.is_empty()).then(|| live.iter().sum())
    }

    /// Connections closed so far and the threads now, for progress lines.
    pub fn progress(&self) -> Result<(usize, Vec<ThreadRow>)> {
        let now = clock::monotonic_ns();
        let threads = self.probes.threads()?.iter().map(|s| rows::thread_row(s, now)).collect();
        Ok((self.closed_count as usize, threads))
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
        // One reading of the threads at the end, for the last sample and for threads.parquet alike
        // (a running thread's slice reads /proc, which moves between two reads).
        let mut threads: Vec<ThreadRow> =
            self.probes.threads()?.iter().map(|s| rows::thread_row(s, end_ns)).collect();
        // The last sample closes the series exactly at the end of the trace.
        self.conn_events();
        let writeback_bytes = self.probes.writeback_bytes()?;
        let totals = totals_of_threads(&threads, writeback_bytes, self.closed_count);
        let rss = self.rss();
        let machine = self.machine(end_ns);
        let wire_totals = self.capture.as_ref().map(Capture::totals);
        self.sampler.sample(end_ns, totals, rss, machine, wire_totals);
        let wire = self.capture.take().map(Capture::stop).transpose()?;
        let energy = energy::Totals::new(self.machine.energy_j, self.machine.busy_cpu_ns);
        threads.sort_by_key(|r| (r.tgid, r.tid));
        for row in &mut threads {
            row.energy_j = energy.charge(row.oncpu_ns);
            if row.exit_ns.is_none()
                && let Some(name) = names.get(&row.tid)
            {
                row.comm = name.clone();
            }
        }
        // Harvested ones, then every entry left (closed in the last second, or still open), the
        // closed ones in the order they closed.
        let mut connections: Vec<ConnRow> = self.closed.iter().map(rows::conn_row).collect();
        let mut rest = self.probes.remaining_conns()?;
        rest.sort_by_key(|c| (c.flags & geminst_common::sock::CONN_CLOSED == 0, c.closed_ns, c.conn_id));
        connections.extend(rest.iter().map(rows::conn_row));
        for c in &mut connections {
            c.energy_j = energy.charge(c.cpu_ns);
        }
        let lost = self.probes.lost()?;
        let sampler = std::mem::replace(&mut self.sampler, Sampler::new(0, Duration::from_secs(1)));
        Ok(TraceOutput {
            threads,
            connections,
            timeseries: sampler.into_rows(),
            lost,
            programs,
            start_ns: self.start_ns,
            end_ns,
            pids: self.targets.iter().map(|t| t.pid).collect(),
            ports: self.ports.clone(),
            exited: self.exited.clone(),
            offsets: self.offsets.used.clone(),
            btf_problem: self.offsets.btf_problem.clone(),
            writeback_bytes,
            bpf_stats: self.bpf_stats,
            energy,
            power: self.meter.describe(),
            wire,
            capture_problem: self.capture_problem.clone(),
        })
    }
}

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
    let cfg = TraceConfig {
        pids: args.pids.clone(),
        ports: (!args.ports.is_empty()).then(|| args.ports.clone()),
        bpf_stats: args.measure.bpf_stats,
        interval: Duration::from_millis(args.measure.interval),
        power: args.power.clone(),
        capture: args.measure.capture(),
    };
    let mut tracer = Tracer::start(&cfg)?;
    signals::install();
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => PathBuf::from("runs").join(format!("{}-trace", clock::stamp(info.start.unix_ns))),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let names: Vec<String> = tracer.targets().map(|(p, c)| format!("{p} ({c})")).collect();
    let ports: Vec<String> = tracer.ports().iter().map(u16::to_string).collect();
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
        let to_sample = tracer.next_sample_ns().saturating_sub(clock::monotonic_ns());
        let mut step = Duration::from_nanos(to_sample).min(Duration::from_millis(100));
        if let Some(l) = left {
            step = step.min(Duration::from_secs_f64(l.max(0.0)));
        }
        if tracer.wait(step) {
            break StopReason::TargetExited;
        }
        tracer.poll()?;
        if progress.due() {
            let (closed, threads) = tracer.progress()?;
            progress.show(closed, &threads);
        }
    };
    progress.finish();
    let mut output = tracer.stop()?;
    let recon = output::write(
        &out,
        &mut info,
        &mut output,
        reason,
        args.duration,
        args.server_log.as_deref(),
        &cert,
    )?;
    info.write(&out)?;
    summary::print(&output, reason, &out, recon.as_ref().map(|j| &j.counts));
    Ok(ExitCode::SUCCESS)
}
