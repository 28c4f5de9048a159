//! The tracer: loads the eBPF programs for one or more running processes, keeps harvesting the
//! connections they close, and at the end returns what the kernel side measured. It owns nothing
//! but the programs and the targets: the packet capture and the power meter run beside it (see
//! `session.rs`), and the data set is assembled elsewhere (`dataset/`).

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use geminst_common::sock::{CLOSED_GRACE_NS, CONN_CLOSED, ConnStats, EVENT_CLOSED, MAX_PORTS};
use serde::Serialize;

use super::{
    measurement::{ConnRow, Counts, EbpfMeasurement, ThreadRow},
    offsets::Offsets,
    probes::Probes,
    procfs::{self, Target},
    rows, tracefs,
};
use crate::clock;

/// What to trace.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub pids: Vec<u32>,
    /// Server ports; None: the ports the targets listen on when the trace starts.
    pub ports: Option<Vec<u16>>,
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
    closing: VecDeque<(u64, u64)>,
    /// Connections that reached TCP_CLOSE so far.
    closed_count: u64,
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
        require_root("geminst trace")?;
        tracefs::ensure_mounted()?;
        let mut ports = match &cfg.ports {
            Some(ports) => ports.clone(),
            None => targets.iter().flat_map(|t| procfs::listening_ports(t.pid)).collect(),
        };
        ports.sort_unstable();
        ports.dedup();
        if ports.len() > MAX_PORTS {
            return crate::exit::bad_input(format!(
                "at most {MAX_PORTS} server ports can be traced at once, not {} ({ports:?}): pass --port",
                ports.len()
            ));
        }
        let offsets = Offsets::read(&ports)?;
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
        let start_ns = clock::monotonic_ns();
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
            closing: VecDeque::new(),
            closed_count: 0,
        })
    }

    /// When the programs were attached and the targets' threads registered (CLOCK_MONOTONIC ns).
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// The server ports whose connections are recorded from their first state change.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Collects connections closed more than the grace period ago. Call it often (every interval
    /// at least): the kernel hands closed connections over through a ring buffer of bounded size.
    pub fn poll(&mut self) -> Result<()> {
        self.conn_events();
        let now = clock::monotonic_ns();
        while let Some(&(id, closed)) = self.closing.front() {
            if closed + CLOSED_GRACE_NS > now {
                break;
            }
            self.closing.pop_front();
            if let Some(c) = self.probes.take_conn(id)? {
                self.closed.push(c);
            }
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

    fn thread_rows(&self, now: u64) -> Result<Vec<ThreadRow>> {
        Ok(self.probes.threads()?.iter().map(|s| rows::thread_row(s, now)).collect())
    }

    /// The traced processes' cumulative counters now, for the time series.
    pub fn counts(&self, now: u64) -> Result<Counts> {
        Ok(counts_of(&self.thread_rows(now)?, self.probes.writeback_bytes()?, self.closed_count))
    }

    /// Resident memory of the live targets.
    pub fn rss(&self) -> Option<u64> {
        let live: Vec<u64> = self
            .targets
            .iter()
            .filter(|t| !self.has_exited(t.pid))
            .filter_map(|t| procfs::rss_bytes(t.pid))
            .collect();
        (!live.is_empty()).then(|| live.iter().sum())
    }

    fn has_exited(&self, pid: u32) -> bool {
        self.exited.iter().any(|(p, _)| *p == pid)
    }

    /// Connections closed so far and the threads now, for progress lines.
    pub fn progress(&self) -> Result<(usize, Vec<ThreadRow>)> {
        Ok((self.closed_count as usize, self.thread_rows(clock::monotonic_ns())?))
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
            if let Some(t) = self.targets.iter().find(|t| !self.has_exited(t.pid)) {
                t.wait_exit(left.as_millis().clamp(1, 100) as i32);
            }
        }
    }

    /// Detaches everything and returns what was measured, as of `end_ns`.
    pub fn stop(mut self, end_ns: u64) -> Result<EbpfMeasurement> {
        // Statistics live in the loaded programs: read them before unloading.
        let programs = self.probes.program_stats();
        // Current names of live threads, before they can exit.
        let names: BTreeMap<u32, String> = self
            .probes
            .threads()?
            .into_iter()
            .filter_map(|s| procfs::comm(s.tgid, s.tid).map(|c| (s.tid, c)))
            .collect();
        self.probes.detach()?;
        // One reading of the threads at the end, for the last sample and for threads.parquet alike
        // (a running thread's slice reads /proc, which moves between two reads).
        let mut threads = self.thread_rows(end_ns)?;
        self.conn_events();
        let writeback_bytes = self.probes.writeback_bytes()?;
        let final_counts = counts_of(&threads, writeback_bytes, self.closed_count);
        threads.sort_by_key(|r| (r.tgid, r.tid));
        for row in &mut threads {
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
        rest.sort_by_key(|c| (c.flags & CONN_CLOSED == 0, c.closed_ns, c.conn_id));
        connections.extend(rest.iter().map(rows::conn_row));
        Ok(EbpfMeasurement {
            threads,
            connections,
            lost: self.probes.lost()?,
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
            final_counts,
        })
    }
}

/// The traced processes' cumulative counters from their threads' rows; `writeback_bytes` and
/// `connections_closed` come from elsewhere.
fn counts_of(threads: &[ThreadRow], writeback_bytes: u64, connections_closed: u64) -> Counts {
    let sum = |f: fn(&ThreadRow) -> u64| threads.iter().map(f).sum();
    Counts {
        cpu_ns: sum(|t| t.oncpu_ns),
        sock_send_bytes: sum(|t| t.sock_send_bytes),
        sock_recv_bytes: sum(|t| t.sock_recv_bytes),
        file_read_bytes: sum(|t| t.file_read_bytes),
        file_write_bytes: sum(|t| t.file_write_bytes),
        block_read_bytes: sum(|t| t.block_read_bytes),
        block_write_bytes: sum(|t| t.block_write_bytes),
        writeback_bytes,
        connections_closed,
    }
}
