//! The load generator's own cost: `cargo bench -p geminst --bench load_client`.
//!
//! 1. The public-key operations of a client's full TLS 1.3 handshake, measured with ring
//!    directly: X25519 key generation and agreement, and one ECDSA P-256 signature verification
//!    (the server's CertificateVerify).
//! 2. The client's CPU per request at full TLS 1.3 handshakes (no resumption) against a server on
//!    loopback, from getrusage over the run, with the server in another process so none of its
//!    CPU is counted; once verifying the server's signature (the default) and once not, which
//!    prices the verification.
//! 3. The highest open-loop rate the client sustains on one core with p99 start lag under 1 ms
//!    and no request refused for overload.
//!
//! The client is pinned to CPU 0 and the server to CPU 1 (when there is one) with
//! sched_setaffinity. The server is the tests' stand-in (tests/load/standin.rs), run by this
//! same executable in server mode, until the built-in server exists.

#[path = "../tests/load/standin.rs"]
mod standin;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use geminst::{
    clock,
    load::{self, End, GeminiUrl, Load, MixEntry, Options, Phase, Plan, TlsSettings, TlsVersion, UrlSpec},
};
use ring::{
    agreement, rand,
    signature::{self, EcdsaKeyPair, KeyPair},
};

const SERVER_MODE: &str = "GEMINST_LOAD_BENCH_SERVER";

fn main() {
    if std::env::var_os(SERVER_MODE).is_some() {
        return server();
    }
    // Words after `--`: `cpu` runs only the CPU-per-request parts, `rate` only the rate search
    // (none: both); `fifo` runs client and server with SCHED_FIFO priority (root), so that other
    // work on a shared machine does not show up as the client's start lag.
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let fifo = words.iter().any(|w| w == "fifo");
    let only: Vec<&String> = words.iter().filter(|w| *w != "fifo").collect();
    let part = |name: &str| only.is_empty() || only.iter().any(|o| *o == name);
    let cpus = available_cpus();
    pin_to(cpus[0]);
    if fifo {
        realtime();
    }
    println!(
        "load_client benchmark: client on CPU {}, server on CPU {}, {}",
        cpus[0],
        cpus.get(1).unwrap_or(&cpus[0]),
        if fifo { "both SCHED_FIFO priority 10" } else { "normal scheduling" }
    );
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );

    // 1. Public-key operations, in this process, on the client's core.
    let x25519 = per_op_ns(Duration::from_millis(600), x25519_once());
    let verify = per_op_ns(Duration::from_millis(600), p256_verify_once());
    let pk = x25519 + verify;
    println!("\npublic-key operations of a TLS 1.3 client handshake (ring, CPU time):");
    println!("  X25519 keygen + agreement   {:8.1} µs", x25519 / 1e3);
    println!("  ECDSA P-256 verify          {:8.1} µs", verify / 1e3);
    println!(
        "  total                       {:8.1} µs   (target for the client: at most 1.3 × = {:.1} µs)",
        pk / 1e3,
        1.3 * pk / 1e3
    );

    // 2a. The TLS library's share: rustls client handshakes in memory (no sockets, no runtime),
    // the client's calls timed alone. The difference between the two prices the signature check.
    if part("cpu") {
        println!(
            "\nrustls client side of a TLS 1.3 handshake and a 0-byte response, in memory (thread CPU):"
        );
        let with = in_memory_client_ns(true, 2000);
        let without = in_memory_client_ns(false, 2000);
        println!(
            "  verifying the server's signature  {:7.1} µs ({:.2} × public-key ops)",
            with / 1e3,
            with / pk
        );
        println!(
            "  skipping it                       {:7.1} µs ({:.2} × the rest of them)",
            without / 1e3,
            without / x25519
        );
        println!(
            "  the check costs                   {:7.1} µs (ring's verify alone: {:.1} µs)",
            (with - without) / 1e3,
            verify / 1e3
        );
    }

    let mut server = start_server(cpus.get(1).copied().unwrap_or(cpus[0]), fifo);
    let url = GeminiUrl::parse(&format!("gemini://{}/", server.addr)).unwrap();
    // Warm up (page faults, the server's first allocations).
    let _ = measure(&url, 200.0, Duration::from_secs(1), true);

    // 2. CPU per request, all in: runtime, sockets, kernel. On loopback the sender's system time
    // also holds the receiver's TCP input (softirq runs in the sending context) and the wake-up of
    // the server; with tick-based CPU accounting (CONFIG_TICK_CPU_ACCOUNTING) the user/system
    // split is a sample, so only the total is given.
    if part("cpu") {
        println!(
            "\nclient CPU per request (getrusage user+sys, whole process), full TLS 1.3 handshakes, 0-byte bodies, 4 s:"
        );
        for rate in [500.0, 2000.0] {
            for verify_sig in [true, false] {
                let m = measure(&url, rate, Duration::from_secs(4), verify_sig);
                println!(
                    "  {rate:5.0}/s, {:22} {:7.1} µs/request, {:.2} × public-key ops; {} ok of {}",
                    if verify_sig { "verifying signatures" } else { "skipping the signature" },
                    m.cpu_per_req_ns / 1e3,
                    m.cpu_per_req_ns / pk,
                    m.ok,
                    m.requests,
                );
            }
        }
    }

    // 3. Highest rate with the schedule kept, on one core.
    if part("rate") {
        // What the machine alone allows: a thread that only sleeps to absolute deadlines (as
        // cyclictest does). Lateness here is the scheduler's and the hypervisor's, not the
        // client's, and no client can start requests more punctually.
        let lag = machine_wake_lag(1000.0, Duration::from_secs(2));
        println!(
            "\nthis core's own wake-up lateness (clock_nanosleep to deadlines 1 ms apart, 2 s): p50 {} p99 {} max {}",
            load_ns(lag.p50_ns),
            load_ns(lag.p99_ns),
            load_ns(lag.max_ns)
        );
        println!(
            "\nopen-loop rate on one core (3 s per step): p99 start lag must stay under 1 ms, no overload"
        );
        println!(
            "  {:>7} {:>8} {:>10} {:>10} {:>8} {:>7} {:>11}",
            "rate/s", "achieved", "lag p99", "lag max", "lat p99", "client", "ok"
        );
        let (mut best, mut worst_fail) = (0.0f64, f64::INFINITY);
        let mut step = |rate: f64| -> bool {
            let m = measure(&url, rate, Duration::from_secs(3), true);
            let kept = m.lag_p99_ns < 1_000_000 && m.overload == 0;
            println!(
                "  {:7.0} {:8.1} {:>10} {:>10} {:>8} {:6.0}% {:>11} {}",
                rate,
                m.achieved,
                load_ns(m.lag_p99_ns),
                load_ns(m.lag_max_ns),
                load_ns(m.lat_p99_ns),
                m.cpu_share * 100.0,
                format!("{}/{}", m.ok, m.requests),
                if kept { "kept" } else { "LATE" }
            );
            server.check();
            kept
        };
        // Up by half until the schedule slips, then halve the gap twice.
        let mut rate = 250.0;
        while rate <= 20_000.0 {
            if step(rate) {
                best = rate;
                rate *= 1.5;
            } else {
                worst_fail = rate;
                break;
            }
        }
        for _ in 0..2 {
            let mid = ((best + worst_fail) / 2.0 / 50.0).round() * 50.0;
            if !worst_fail.is_finite() || mid <= best || mid >= worst_fail {
                break;
            }
            if step(mid) { best = mid } else { worst_fail = mid }
        }
        println!("\nhighest rate with p99 start lag < 1 ms on one core: {best:.0}/s");
    }
    println!("load average at end: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}

fn load_ns(ns: u64) -> String {
    if ns < 1_000_000 { format!("{:.0}µs", ns as f64 / 1e3) } else { format!("{:.2}ms", ns as f64 / 1e6) }
}

struct Measured {
    requests: u64,
    ok: u64,
    overload: u64,
    achieved: f64,
    cpu_per_req_ns: f64,
    /// Client CPU over wall time.
    cpu_share: f64,
    lag_p99_ns: u64,
    lag_max_ns: u64,
    lat_p99_ns: u64,
}

fn measure(target: &GeminiUrl, rate: f64, duration: Duration, verify_signatures: bool) -> Measured {
    let plan = Plan {
        target: Some(target.clone()),
        phases: vec![Phase {
            name: "bench".into(),
            load: Load::Rate { rate, ramp_to: None },
            end: End::Duration(duration),
            mix: vec![MixEntry { url: UrlSpec::response_bytes(0), weight: 1.0 }],
            request_bytes: None,
        }],
        tls: TlsSettings {
            version: Some(TlsVersion::Tls13),
            resumption: false,
            verify_signatures,
            ..Default::default()
        },
        connect: None,
        timeout: Duration::from_secs(10),
        seed: 1,
        max_in_flight: load::DEFAULT_MAX_IN_FLIGHT,
        source: "bench".into(),
    };
    let (u0, s0) = rusage_ns();
    let wall = Instant::now();
    let report = load::run(&plan, &Options::default()).expect("load run");
    let wall = wall.elapsed().as_nanos() as f64;
    let (u1, s1) = rusage_ns();
    let s = &report.summary;
    let n = s.requests.scheduled.max(1) as f64;
    let (user, sys) = ((u1 - u0) as f64, (s1 - s0) as f64);
    Measured {
        requests: s.requests.scheduled,
        ok: s.requests.ok,
        overload: s.by_error.get("overload").copied().unwrap_or(0),
        achieved: s.achieved_rate.unwrap_or(0.0),
        cpu_per_req_ns: (user + sys) / n,
        cpu_share: (user + sys) / wall,
        lag_p99_ns: s.start_lag.as_ref().map_or(0, |l| l.p99_ns),
        lag_max_ns: s.start_lag.as_ref().map_or(0, |l| l.max_ns),
        lat_p99_ns: s.latency.as_ref().map_or(0, |l| l.p99_ns),
    }
}

/// Lateness of plain absolute-deadline sleeps on this thread: the machine's floor for start lag.
fn machine_wake_lag(rate: f64, duration: Duration) -> load::Percentiles {
    let interval = (1e9 / rate) as u64;
    let start = clock::monotonic_ns() + interval;
    let n = (duration.as_secs_f64() * rate) as u64;
    let mut lates = Vec::with_capacity(n as usize);
    // No timer slack (50 µs by default for normal threads), as the client's timerfd has none.
    // SAFETY: prctl timer-slack get/set on the calling thread.
    let slack = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
    for i in 0..n {
        let at = start + i * interval;
        let ts = libc::timespec {
            tv_sec: (at / 1_000_000_000) as libc::time_t,
            tv_nsec: (at % 1_000_000_000) as _,
        };
        // SAFETY: clock_nanosleep with a valid absolute timespec and no remainder wanted.
        unsafe {
            libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut())
        };
        lates.push(clock::monotonic_ns().saturating_sub(at));
    }
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack) };
    load::Percentiles::of(lates).expect("samples")
}

/// CPU ns (user, system) of this whole process so far.
fn rusage_ns() -> (u64, u64) {
    // SAFETY: getrusage fills a zeroed rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

/// Mean thread-CPU ns per call of `op`, over at least `budget` of CPU time.
fn per_op_ns(budget: Duration, mut op: impl FnMut()) -> f64 {
    for _ in 0..50 {
        op();
    }
    let start = clock::thread_cpu_ns();
    let mut n = 0u64;
    while clock::thread_cpu_ns() - start < budget.as_nanos() as u64 {
        for _ in 0..50 {
            op();
        }
        n += 50;
    }
    (clock::thread_cpu_ns() - start) as f64 / n as f64
}

/// One client's X25519 share: generate a key pair (one scalar multiplication for the public
/// key) and agree with the server's share (another).
fn x25519_once() -> impl FnMut() {
    let rng = rand::SystemRandom::new();
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
    let peer_public = peer.compute_public_key().unwrap().as_ref().to_vec();
    move || {
        let mine = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
        let public = mine.compute_public_key().unwrap();
        std::hint::black_box(public.as_ref());
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, &peer_public);
        agreement::agree_ephemeral(mine, &peer, |secret| {
            std::hint::black_box(secret[0]);
        })
        .unwrap();
    }
}

/// One verification of a P-256 signature over a message the size of TLS 1.3's CertificateVerify
/// input (64 spaces, the context string, a zero byte, a SHA-256 transcript hash).
fn p256_verify_once() -> impl FnMut() {
    let rng = rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let mut message = vec![b' '; 64];
    message.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    message.extend_from_slice(&[7u8; 32]);
    let sig = key.sign(&rng, &message).unwrap().as_ref().to_vec();
    let public = key.public_key().as_ref().to_vec();
    move || {
        let pk = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public);
        pk.verify(&message, &sig).unwrap();
    }
}

/// Mean thread-CPU ns the client side of one in-memory TLS 1.3 exchange costs: new connection,
/// handshake, request, response, close_notify. Each client call is timed on its own, so the
/// server's half (run in the same thread) is not counted; the clock reads add about 1 µs.
fn in_memory_client_ns(verify_signatures: bool, n: usize) -> f64 {
    use std::io::{Read, Write};

    use rustls::{ClientConnection, ServerConnection, pki_types::ServerName};

    let (cert, key, _, _) = standin::certificate(&["localhost"]);
    let server_config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let settings = TlsSettings { version: Some(TlsVersion::Tls13), verify_signatures, ..Default::default() };
    let client_config = load::client_config(&settings).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let timed = |total: &mut u64, f: &mut dyn FnMut()| {
        let t = clock::thread_cpu_ns();
        f();
        *total += clock::thread_cpu_ns() - t;
    };
    // Moves everything `from` wants to write into `to`; returns whether anything moved.
    fn pump(from: &mut dyn FnMut(&mut Vec<u8>) -> bool, to: &mut dyn FnMut(&[u8])) -> bool {
        let mut buf = Vec::new();
        while from(&mut buf) {}
        if !buf.is_empty() {
            to(&buf);
        }
        !buf.is_empty()
    }
    let mut client_ns = 0u64;
    for i in 0..n + 50 {
        if i == 50 {
            client_ns = 0;
        }
        let mut c = None;
        timed(&mut client_ns, &mut || {
            let mut conn = ClientConnection::new(client_config.clone(), name.clone()).unwrap();
            conn.writer().write_all(b"gemini://localhost/_bench/bytes/0\r\n").unwrap();
            c = Some(conn);
        });
        let mut c = c.unwrap();
        let mut s = ServerConnection::new(server_config.clone()).unwrap();
        let mut responded = false;
        let mut got = Vec::new();
        for _ in 0..20 {
            let mut moved = false;
            let mut wrote = Vec::new();
            timed(&mut client_ns, &mut || {
                while c.wants_write() {
                    c.write_tls(&mut wrote).unwrap();
                }
            });
            if !wrote.is_empty() {
                moved = true;
                let mut rd = &wrote[..];
                while !rd.is_empty() {
                    s.read_tls(&mut rd).unwrap();
                    s.process_new_packets().unwrap();
                }
            }
            if !s.is_handshaking() && !responded {
                let mut req = Vec::new();
                let _ = s.reader().read_to_end(&mut req);
                if req.ends_with(b"\r\n") {
                    s.writer().write_all(b"20 application/octet-stream\r\n").unwrap();
                    s.send_close_notify();
                    responded = true;
                }
            }
            moved |= pump(&mut |buf| s.wants_write() && s.write_tls(buf).unwrap() > 0, &mut |buf| {
                timed(&mut client_ns, &mut || {
                    let mut rd = buf;
                    while !rd.is_empty() {
                        c.read_tls(&mut rd).unwrap();
                        c.process_new_packets().unwrap();
                    }
                    let _ = c.reader().read_to_end(&mut got);
                })
            });
            if !moved {
                break;
            }
        }
        assert!(got.starts_with(b"20 "), "no response in memory: {:?}", String::from_utf8_lossy(&got));
    }
    client_ns as f64 / n as f64
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Panics if the server process died (its failures would otherwise look like the client's).
    fn check(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the bench server exited: {status}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(cpu: usize, fifo: bool) -> Server {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(SERVER_MODE, format!("{cpu}{}", if fifo { ",fifo" } else { "" }))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().to_string();
    assert!(!addr.is_empty(), "the bench server did not start");
    Server { child, addr }
}

/// Server mode: the stand-in on one thread on its own core, until the parent closes stdin.
fn server() {
    let mode = std::env::var(SERVER_MODE).unwrap();
    let (cpu, fifo) = mode.split_once(',').map_or((mode.as_str(), false), |(c, f)| (c, f == "fifo"));
    pin_to(cpu.parse().unwrap());
    if fifo {
        realtime();
    }
    let config = standin::Config { threads: Some(1), ..Default::default() };
    let server = standin::StandIn::start(config);
    println!("{}", server.addr);
    // Returns when the parent exits or closes stdin.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    drop(server);
}

/// SCHED_FIFO priority 10 for the calling thread and the threads it creates afterwards.
fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler on the calling thread with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        panic!("SCHED_FIFO refused (needs root or CAP_SYS_NICE): {}", std::io::Error::last_os_error());
    }
}

fn available_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t for this process.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Pins the calling thread (and the threads it creates afterwards) to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, applied to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("could not pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
}
