//! How fast the capture keeps up on `lo`: the highest packet rate captured with zero drops, and
//! the capture thread's CPU per packet, for three kinds of traffic:
//!
//! - bulk: one TCP connection streaming 64 KiB writes (few, large packets);
//! - small connections: plain TCP connect, 100-byte request, 1000-byte response, close
//!   (about ten small packets each);
//! - gemini: full TLS 1.3 handshakes and Gemini exchanges (rustls on both ends), the stand-in
//!   for the built-in server's request rate.
//!
//! Each kind runs flat out for a few seconds; if pcap reports drops, it runs again paced at half
//! the rate reached, until a run has none. Needs root (capturing); run with
//! `cargo bench -p geminst --bench capture_rate`. Prints a table; exits 0 without root.

#[path = "../tests/capture/gemini.rs"]
#[allow(dead_code)]
mod gemini;
#[path = "../tests/util.rs"]
mod util;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use geminst::capture::{Capture, CaptureConfig, DEFAULT_BUFFER_BYTES};

/// Traffic for one run: given the stop flag, a counter of units done, and a pace (units per
/// second, or flat out).
type Traffic = dyn Fn(&AtomicBool, &AtomicU64, Option<f64>) + Sync;

const RUN: Duration = Duration::from_secs(3);
const MAX_STEPS: usize = 6;

/// One run's figures.
struct Run {
    /// Units of work per second asked for (`None`: flat out).
    target: Option<f64>,
    packets: u64,
    seconds: f64,
    dropped: u64,
    cpu_ns: u64,
    units: u64,
    frame_bytes: u64,
}

impl Run {
    fn pps(&self) -> f64 {
        self.packets as f64 / self.seconds
    }
}

/// Runs `traffic(stop, units, pace)` for `RUN` under a capture of `port` with a ring of
/// `buffer_bytes`.
fn measure(port: u16, target: Option<f64>, buffer_bytes: u32, traffic: &Traffic) -> Run {
    let mut config = CaptureConfig::new("lo", &[port]);
    config.buffer_bytes = buffer_bytes;
    let cap = Capture::start(config).expect("capture on lo (run as root)");
    let stop = AtomicBool::new(false);
    let units = AtomicU64::new(0);
    let t0 = Instant::now();
    thread::scope(|s| {
        s.spawn(|| traffic(&stop, &units, target));
        thread::sleep(RUN);
        stop.store(true, Ordering::SeqCst);
    });
    let seconds = t0.elapsed().as_secs_f64();
    let out = cap.stop().unwrap();
    let frame_bytes = out.connections.iter().map(|c| c.total().1).sum();
    Run {
        target,
        packets: out.stats.packets_seen,
        seconds,
        dropped: out.stats.dropped + out.stats.if_dropped,
        cpu_ns: out.stats.cpu_ns,
        units: units.load(Ordering::SeqCst),
        frame_bytes,
    }
}

/// Sleeps as needed so that `done` units since `start` do not run ahead of `rate` per second.
fn pace(start: Instant, done: u64, rate: Option<f64>) {
    if let Some(rate) = rate {
        let due = Duration::from_secs_f64(done as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    }
}

/// Bulk: one connection, 64 KiB writes; a unit is one write.
fn bulk(port: u16) -> impl Fn(&AtomicBool, &AtomicU64, Option<f64>) {
    move |stop, units, rate| {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let reader = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
        });
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let start = Instant::now();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            s.write_all(&chunk).unwrap();
            n += 1;
            pace(start, n, rate);
        }
        units.store(n, Ordering::SeqCst);
        drop(s);
        reader.join().unwrap();
    }
}

/// Small connections: connect, 100-byte request, 1000-byte response, close; a unit is one
/// connection. Two client threads, one server thread.
fn small_connections(port: u16) -> impl Fn(&AtomicBool, &AtomicU64, Option<f64>) {
    move |stop, units, rate| {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let server_stop = Arc::new(AtomicBool::new(false));
        let ss = server_stop.clone();
        let server = thread::spawn(move || {
            let response = [1u8; 1000];
            let mut req = [0u8; 100];
            while !ss.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        if s.read_exact(&mut req).is_ok() {
                            let _ = s.write_all(&response);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_micros(50)),
                }
            }
        });
        let per_thread = rate.map(|r| r / 2.0);
        thread::scope(|sc| {
            for _ in 0..2 {
                sc.spawn(|| {
                    let start = Instant::now();
                    let mut n = 0;
                    let mut buf = [0u8; 1000];
                    while !stop.load(Ordering::Relaxed) {
                        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        s.write_all(&[2u8; 100]).unwrap();
                        let _ = s.read_exact(&mut buf);
                        drop(s);
                        n += 1;
                        units.fetch_add(1, Ordering::Relaxed);
                        pace(start, n, per_thread);
                    }
                });
            }
        });
        server_stop.store(true, Ordering::SeqCst);
        server.join().unwrap();
    }
}

/// Gemini over TLS 1.3 with the test server and client (rustls); a unit is one request.
fn gemini_requests(port: u16) -> impl Fn(&AtomicBool, &AtomicU64, Option<f64>) {
    move |stop, units, rate| {
        let rt = gemini::runtime();
        let server = gemini::Server::start(&rt, port);
        server.body.store(1000, Ordering::SeqCst);
        let per_task = rate.map(|r| r / 4.0);
        // Four clients at once, interleaved on this thread; the server runs on the runtime's.
        let client = || async {
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = gemini::fetch(port, gemini::Tls::V13, 100, gemini::Ending::Drop, true).await;
                n += 1;
                units.fetch_add(1, Ordering::Relaxed);
                if let Some(r) = per_task {
                    let due = Duration::from_secs_f64(n as f64 / r);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        };
        rt.block_on(async { tokio::join!(client(), client(), client(), client()) });
    }
}

fn report(name: &str, unit: &str, runs: &[Run]) {
    println!("\n{name}");
    println!(
        "  {:>14} {:>10} {:>10} {:>12} {:>8} {:>10} {:>9} {:>12}",
        "target", "done/s", "packets", "packets/s", "dropped", "MB/s", "CPU ns/p", "CPU % core"
    );
    for r in runs {
        let target = r.target.map_or("flat out".to_string(), |t| format!("{t:.0} {unit}/s"));
        println!(
            "  {:>14} {:>10.0} {:>10} {:>12.0} {:>8} {:>10.1} {:>9.0} {:>12.1}",
            target,
            r.units as f64 / r.seconds,
            r.packets,
            r.pps(),
            r.dropped,
            r.frame_bytes as f64 / r.seconds / 1e6,
            r.cpu_ns as f64 / r.packets.max(1) as f64,
            r.cpu_ns as f64 / r.seconds / 1e7
        );
    }
    match runs.iter().filter(|r| r.dropped == 0).map(|r| r.pps()).reduce(f64::max) {
        Some(best) => println!("  highest rate with zero drops: {best:.0} packets/s"),
        None => println!("  every run dropped packets"),
    }
}

/// Runs a kind of traffic flat out, then halves the pace until a run has no drops.
fn search(name: &str, unit: &str, buffer_bytes: u32, make: impl Fn(u16) -> Box<Traffic>) {
    let mut runs = Vec::new();
    let mut target = None;
    for _ in 0..MAX_STEPS {
        let port = util::free_port();
        let traffic = make(port);
        let run = measure(port, target, buffer_bytes, &*traffic);
        let done = run.units as f64 / run.seconds;
        let dropped = run.dropped;
        runs.push(run);
        if dropped == 0 {
            break;
        }
        target = Some(done / 2.0);
    }
    report(name, unit, &runs);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: only benchmark when asked.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !util::is_root() {
        println!("capture_rate: skipped, capturing needs root");
        return;
    }
    let ring = DEFAULT_BUFFER_BYTES;
    search("bulk: one connection, 64 KiB writes (64 MiB ring)", "writes", ring, |p| Box::new(bulk(p)));
    search("bulk: one connection, 64 KiB writes (256 MiB ring)", "writes", 4 * ring, |p| Box::new(bulk(p)));
    search("small connections: 100 B request, 1000 B response, close", "conns", ring, |p| {
        Box::new(small_connections(p))
    });
    search("gemini: TLS 1.3 handshake, 100 B request, 1015 B response (rustls)", "requests", ring, |p| {
        Box::new(gemini_requests(p))
    });
}
