//! The live capture: libpcap on one interface, on a thread of its own, counting every segment into
//! the connection table as it arrives (nothing is buffered per packet).
//!
//! libpcap on Linux uses a TPACKET_V3 ring: the kernel fills blocks of packets and hands a block
//! over when it is full or when its timeout (`BLOCK_TIMEOUT_MS`) passes. The thread polls the
//! ring's descriptor and drains it in non-blocking mode, so `stop` returns promptly: it waits for
//! the block holding the last packets to be handed over, reads it, then reads pcap's statistics.

use std::{
    os::unix::io::AsRawFd,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use super::{
    connection::{ConnTable, ConnWire, Skipped},
    packet::{self, Skip},
};
use crate::{clock, exit::BadInput};

/// How long the kernel holds a partly filled block before handing it to the reader.
const BLOCK_TIMEOUT_MS: i32 = 20;
/// How long one poll waits before the thread looks at the stop flag again.
const POLL_MS: i32 = 50;
/// After a stop request, how long the thread keeps draining at most.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Snap length: whole frames (the largest a loopback GSO segment gets is 64 KiB plus headers).
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// Kernel ring size: room for about a second of line-rate loopback traffic in small packets.
pub const DEFAULT_BUFFER_BYTES: u32 = 64 << 20;

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Interface name (`lo`, `eth0`, `any`).
    pub iface: String,
    /// The server's TCP ports: the capture filter is `tcp and (port P or port Q ...)`, and the end
    /// with one of them is the server. Empty captures all TCP and guesses the server from the
    /// handshake.
    pub ports: Vec<u16>,
    /// Also write every captured frame to this pcap file (nanosecond timestamps), for Wireshark.
    pub write_pcap: Option<PathBuf>,
    /// Kernel ring size in bytes.
    pub buffer_bytes: u32,
    /// Bytes captured per frame; counts use the frames' real lengths whatever this is, but the TLS
    /// breakdown needs whole payloads.
    pub snaplen: u32,
}

impl CaptureConfig {
    pub fn new(iface: impl Into<String>, ports: &[u16]) -> Self {
        Self {
            iface: iface.into(),
            ports: ports.to_vec(),
            write_pcap: None,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            snaplen: DEFAULT_SNAPLEN,
        }
    }

    /// The BPF filter the kernel applies.
    pub fn filter(&self) -> String {
        if self.ports.is_empty() {
            return "tcp".to_string();
        }
        let ports: Vec<String> = self.ports.iter().map(|p| format!("port {p}")).collect();
        format!("tcp and ({})", ports.join(" or "))
    }
}

/// Counters of the capture itself, for run.json.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureStats {
    pub iface: String,
    pub filter: String,
    /// pcap link-layer type of the interface (1 = Ethernet, which `lo` is too).
    pub linktype: i32,
    /// Frames handed to geminst by libpcap.
    pub packets_seen: u64,
    /// Frames counted as TCP segments of a connection.
    pub segments_counted: u64,
    /// Frames whose captured length was shorter than their real length (snap length).
    pub truncated_frames: u64,
    /// Frames not counted, by reason.
    pub skipped: Skipped,
    /// pcap_stats at stop: frames that passed the filter (on Linux this includes the dropped
    /// ones), frames dropped because the ring was full, frames dropped by the interface.
    pub received: u64,
    pub dropped: u64,
    pub if_dropped: u64,
    /// Capture start and stop, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    pub stop_ns: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC at start, ns: subtracted from pcap's timestamps.
    pub clock_offset_ns: i64,
    /// How much that offset moved by the stop (an NTP step or slew during the capture), ns.
    pub clock_offset_drift_ns: i64,
    /// CPU time of the capture thread, ns: the capture's own cost.
    pub cpu_ns: u64,
    /// The pcap file written, if any.
    pub pcap_file: Option<PathBuf>,
    /// An error that ended the capture early (counts up to it are kept), if any.
    pub error: Option<String>,
}

/// What a finished capture measured.
#[derive(Debug, Clone)]
pub struct CaptureOutput {
    /// Every connection seen, closed or not, in order of first packet.
    pub connections: Vec<ConnWire>,
    pub stats: CaptureStats,
}

/// Totals so far over all connections, readable while the capture runs (for time series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WireTotals {
    pub packets: u64,
    pub frame_bytes: u64,
}

/// `WireTotals` as the capture thread publishes them, once per batch of packets libpcap hands it.
#[derive(Default)]
struct LiveTotals {
    packets: AtomicU64,
    frame_bytes: AtomicU64,
}

/// A running capture. Stop it with [`Capture::stop`]; dropping it stops it too (discarding the
/// counts).
pub struct Capture {
    stop: Arc<AtomicBool>,
    totals: Arc<LiveTotals>,
    thread: Option<JoinHandle<CaptureOutput>>,
}

/// The offset CLOCK_REALTIME − CLOCK_MONOTONIC, from the tightest of a few bracketed readings.
fn clock_offset_ns() -> i64 {
    let mut best = (u64::MAX, 0i64);
    for _ in 0..5 {
        let a = clock::monotonic_ns();
        let real = clock::unix_ns();
        let b = clock::monotonic_ns();
        if b - a < best.0 {
            best = (b - a, real as i64 - (a + (b - a) / 2) as i64);
        }
    }
    best.1
}

/// Fails with a `BadInput` naming the interface unless libpcap knows it.
fn check_interface(iface: &str) -> Result<()> {
    let devices = pcap::Device::list().context("listing capture interfaces")?;
    if devices.iter().any(|d| d.name == iface) {
        return Ok(());
    }
    let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
    Err(BadInput(format!("unknown interface {iface:?} (interfaces: {})", names.join(", "))).into())
}

impl Capture {
    /// Opens the interface and starts capturing. When this returns, the filter is in place and
    /// every later packet on the interface is seen.
    pub fn start(config: CaptureConfig) -> Result<Self> {
        check_interface(&config.iface)?;
        let iface = config.iface.clone();
        let cap = pcap::Capture::from_device(iface.as_str())
            .and_then(|c| {
                c.snaplen(config.snaplen as i32)
                    .buffer_size(config.buffer_bytes as i32)
                    .timeout(BLOCK_TIMEOUT_MS)
                    .promisc(false)
                    .precision(pcap::Precision::Nano)
                    .open()
            })
            .map_err(|e| {
                // SAFETY: geteuid has no preconditions.
                let hint = if unsafe { libc::geteuid() } != 0 { " (capturing needs root)" } else { "" };
                anyhow!("opening capture on {iface}: {e}{hint}")
            })?;
        let mut cap = cap.setnonblock().with_context(|| format!("capture on {iface}: non-blocking mode"))?;
        cap.filter(&config.filter(), true)
            .with_context(|| format!("setting filter {:?}", config.filter()))?;
        let savefile = match &config.write_pcap {
            Some(path) => Some(
                cap.savefile(path)
                    .map_err(|e| BadInput(format!("cannot write pcap file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let totals = Arc::new(LiveTotals::default());
        let stats = CaptureStats {
            iface: iface.clone(),
            filter: config.filter(),
            linktype: cap.get_datalink().0,
            start_ns: clock::monotonic_ns(),
            clock_offset_ns: clock_offset_ns(),
            pcap_file: config.write_pcap.clone(),
            ..CaptureStats::default()
        };
        let worker = Worker {
            cap,
            savefile,
            table: ConnTable::new(config.ports.clone()),
            stats,
            counted: WireTotals::default(),
            totals: totals.clone(),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("geminst-capture".into())
            .spawn(move || worker.run(&flag))
            .context("starting the capture thread")?;
        Ok(Self { stop, totals, thread: Some(thread) })
    }

    /// Totals so far (all connections, both directions).
    pub fn totals(&self) -> WireTotals {
        let t = &self.totals;
        WireTotals {
            packets: t.packets.load(Ordering::Relaxed),
            frame_bytes: t.frame_bytes.load(Ordering::Relaxed),
        }
    }

    /// Stops the capture: reads every packet captured up to now, then pcap's statistics, and
    /// returns the connections (open ones included) and the statistics.
    pub fn stop(mut self) -> Result<CaptureOutput> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("capture thread present until stop");
        thread.join().map_err(|_| anyhow!("the capture thread panicked"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
    }
}

struct Worker {
    cap: pcap::Capture<pcap::Active>,
    savefile: Option<pcap::Savefile>,
    table: ConnTable,
    stats: CaptureStats,
    /// Counted by this thread; published to `totals` after each batch.
    counted: WireTotals,
    totals: Arc<LiveTotals>,
}

/// Waits up to `ms` for the descriptor to become readable; true if it did.
fn poll_readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) -> CaptureOutput {
        let cpu_start = clock::thread_cpu_ns();
        let fd = self.cap.as_raw_fd();
        let mut stop_at: Option<Instant> = None;
        loop {
            if stop_at.is_none() && stop.load(Ordering::SeqCst) {
                stop_at = Some(Instant::now());
            }
            let ready = poll_readable(fd, if stop_at.is_some() { BLOCK_TIMEOUT_MS } else { POLL_MS });
            let n = match self.dispatch() {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("geminst: capture on {}: {e}", self.stats.iface);
                    self.stats.error = Some(e.to_string());
                    break;
                }
            };
            if let Some(at) = stop_at {
                // Done once a full block timeout has passed since the stop request with nothing
                // more to read: the kernel has handed over the block with the last packets.
                let waited = at.elapsed();
                let settled = waited > Duration::from_millis(3 * BLOCK_TIMEOUT_MS as u64) && !ready && n == 0;
                if settled || waited > DRAIN_LIMIT {
                    break;
                }
            }
        }
        match self.cap.stats() {
            Ok(s) => {
                self.stats.received = u64::from(s.received);
                self.stats.dropped = u64::from(s.dropped);
                self.stats.if_dropped = u64::from(s.if_dropped);
            }
            Err(e) => {
                self.stats.error.get_or_insert_with(|| format!("pcap statistics: {e}"));
            }
        }
        if let Some(f) = self.savefile.as_mut()
            && let Err(e) = f.flush()
        {
            self.stats.error.get_or_insert_with(|| format!("flushing the pcap file: {e}"));
        }
        self.stats.stop_ns = clock::monotonic_ns();
        self.stats.clock_offset_drift_ns = clock_offset_ns() - self.stats.clock_offset_ns;
        self.stats.cpu_ns = clock::thread_cpu_ns() - cpu_start;
        self.stats.skipped.other_port = self.table.skipped.other_port;
        CaptureOutput { connections: self.table.finish(), stats: self.stats }
    }

    /// Reads every packet available now (non-blocking); returns how many.
    fn dispatch(&mut self) -> Result<usize, pcap::Error> {
        let Self { cap, savefile, table, stats, counted, totals } = self;
        let mut total = 0;
        loop {
            let n = cap.dispatch(None, |pkt| {
                if let Some(f) = savefile.as_mut() {
                    f.write(&pkt);
                }
                count_frame(table, stats, counted, pkt.header, pkt.data);
            })?;
            total += n;
            totals.packets.store(counted.packets, Ordering::Relaxed);
            totals.frame_bytes.store(counted.frame_bytes, Ordering::Relaxed);
            if n == 0 {
                return Ok(total);
            }
        }
    }
}

/// Counts one frame into the table and the statistics.
fn count_frame(
    table: &mut ConnTable,
    stats: &mut CaptureStats,
    counted: &mut WireTotals,
    h: &pcap::PacketHeader,
    data: &[u8],
) {
    stats.packets_seen += 1;
    if h.caplen < h.len {
        stats.truncated_frames += 1;
    }
    // With nanosecond precision, libpcap puts nanoseconds in tv_usec.
    let wall = h.ts.tv_sec * 1_000_000_000 + h.ts.tv_usec;
    let ns = (wall - stats.clock_offset_ns).max(0) as u64;
    match packet::parse(stats.linktype, data, h.len) {
        Ok(seg) => {
            stats.segments_counted += 1;
            counted.packets += 1;
            counted.frame_bytes += u64::from(h.len);
            table.add(&seg, h.len, ns);
        }
        Err(Skip::NotTcp) => stats.skipped.not_tcp += 1,
        Err(Skip::Fragment) => stats.skipped.fragments += 1,
        Err(Skip::Malformed) => stats.skipped.malformed += 1,
    }
}
