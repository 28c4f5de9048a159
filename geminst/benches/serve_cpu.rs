//! Server CPU per request, geminst against peer Gemini servers on the same machine and load.
//!
//! Each server (geminst, molly-brown from Debian, Jetforce from PyPI) serves the same 1 KiB file
//! with the same ECDSA P-256 certificate. A Rust client makes full TLS 1.3 handshakes (no
//! resumption), one request per connection, sequentially by default; the server's utime+stime
//! from /proc/PID/stat before and after a run, divided by the requests, is its CPU per request
//! (schedstat's ns-precise run time of its threads is printed beside it). Servers take turns in
//! rounds and the median round is reported, so drift on a shared machine hits all alike.
//!
//! `cargo bench -p geminst --bench serve_cpu [-- --requests N --rounds R --concurrency C --only NAME
//! --geminst-args "ARGS"]`
//!
//! It also measures what geminst's per-poll CPU accounting costs: one CLOCK_THREAD_CPUTIME_ID read
//! timed here, times the two reads per poll, times the polls per connection geminst logged.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use geminst::clock::thread_cpu_ns;
use rustls::{ClientConfig, pki_types::ServerName};

const BODY_BYTES: usize = 1024;

struct Args {
    requests: usize,
    rounds: usize,
    concurrency: usize,
    only: Option<String>,
    /// Extra arguments for `geminst serve` (for experiments).
    geminst_args: Vec<String>,
}

fn parse_args() -> Args {
    let mut a = Args { requests: 3000, rounds: 3, concurrency: 1, only: None, geminst_args: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--requests" => a.requests = value().parse().expect("--requests N"),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--only" => a.only = Some(value()),
            "--geminst-args" => a.geminst_args = value().split_whitespace().map(String::from).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    /// The log geminst writes (None for peers).
    log: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so geminst flushes its log; then make sure.
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, child: &mut Child, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not listen on {port} within 20 s");
}

fn start_geminst(dir: &Path, extra: &[String]) -> Server {
    let port = free_port();
    let log = dir.join("geminst-requests.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_geminst"))
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--hostname", "localhost"])
        .arg("--root")
        .arg(dir.join("capsule"))
        .arg("--state-dir")
        .arg(dir.join("geminst-state"))
        .arg("--cert")
        .arg(dir.join("cert.pem"))
        .arg("--key")
        .arg(dir.join("key.pem"))
        .arg("--log")
        .arg(&log)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting geminst");
    wait_listening(port, &mut child, "geminst");
    Server { name: "geminst", child, port, log: Some(log) }
}

fn start_molly(dir: &Path) -> Option<Server> {
    let port = free_port();
    let conf = dir.join("molly.conf");
    std::fs::write(
        &conf,
        format!(
            "Port = {port}\nHostname = \"localhost\"\nCertPath = \"{d}/cert.pem\"\nKeyPath = \"{d}/key.pem\"\n\
             DocBase = \"{d}/capsule/\"\nAccessLog = \"{d}/molly-access.log\"\nErrorLog = \"{d}/molly-error.log\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("molly-brown")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("molly-brown not started: {e} (apt-get install molly-brown)"))
        .ok()?;
    wait_listening(port, &mut child, "molly-brown");
    Some(Server { name: "molly-brown", child, port, log: None })
}

fn start_jetforce(dir: &Path) -> Option<Server> {
    let port = free_port();
    let jetforce = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/jetforce");
    let mut child = Command::new(&jetforce)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--hostname", "localhost"])
        .arg("--dir")
        .arg(dir.join("capsule"))
        .arg("--tls-certfile")
        .arg(dir.join("cert.pem"))
        .arg("--tls-keyfile")
        .arg(dir.join("key.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("jetforce not started: {e} ({})", jetforce.display()))
        .ok()?;
    wait_listening(port, &mut child, "jetforce");
    Some(Server { name: "jetforce", child, port, log: None })
}

/// utime+stime of a process in ns (from clock ticks), and the sum of its live threads' run time
/// from schedstat in ns.
fn cpu(pid: u32) -> (u64, u64) {
    (common::stat_cpu_ns(pid), common::sched_cpu_ns(pid))
}

fn fetch(config: &Arc<ClientConfig>, port: u16, request: &[u8]) {
    let mut tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    tcp.set_nodelay(true).unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
    tls.write_all(request).unwrap();
    let mut response = Vec::with_capacity(2048);
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // Peers that close without close_notify still delivered the response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the response: {e}"),
    }
    assert!(
        response.starts_with(b"20 "),
        "response {:?}",
        String::from_utf8_lossy(&response[..response.len().min(80)])
    );
    let body = response.iter().position(|&b| b == b'\n').map_or(0, |i| response.len() - i - 1);
    assert_eq!(body, BODY_BYTES, "body length");
}

struct Run {
    cpu_us: f64,
    sched_us: f64,
    rps: f64,
}

fn run(server: &Server, config: &Arc<ClientConfig>, args: &Args) -> Run {
    let request = format!("gemini://localhost:{}/1k.gmi\r\n", server.port).into_bytes();
    for _ in 0..50 {
        fetch(config, server.port, &request); // warm up
    }
    std::thread::sleep(Duration::from_millis(300)); // let Python/Go settle after warm-up
    let (c0, s0) = cpu(server.child.id());
    let start = Instant::now();
    let per = args.requests / args.concurrency;
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| {
                for _ in 0..per {
                    fetch(config, server.port, &request);
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let (c1, s1) = cpu(server.child.id());
    let n = (per * args.concurrency) as f64;
    Run { cpu_us: (c1 - c0) as f64 / n / 1e3, sched_us: (s1 - s0) as f64 / n / 1e3, rps: n / elapsed }
}

/// ns per CLOCK_THREAD_CPUTIME_ID read in this process (the call geminst makes twice per poll).
fn clock_read_ns() -> f64 {
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(thread_cpu_ns());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// The floor under any rustls server: CPU of the server side of a full TLS 1.3 handshake and a
/// 1 KiB response, in memory (no sockets, no runtime), in µs. Only the server's calls are timed.
fn in_memory_handshake_us(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    client: &Arc<ClientConfig>,
) -> f64 {
    // The suite geminst prefers (see serve/tls.rs).
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..rustls::crypto::ring::default_provider()
    });
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    server_config.send_tls13_tickets = 1;
    let server_config = Arc::new(server_config);
    let body = vec![b'x'; BODY_BYTES];
    let n = 2000;
    let mut server_ns = 0;
    for _ in 0..n {
        let mut c = rustls::ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
        let t = thread_cpu_ns();
        let mut s = rustls::ServerConnection::new(server_config.clone()).unwrap();
        server_ns += thread_cpu_ns() - t;
        c.writer().write_all(b"gemini://localhost/1k.gmi\r\n").unwrap();
        let mut wire = Vec::new();
        loop {
            wire.clear();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            let t = thread_cpu_ns();
            let mut rd = &wire[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            s.process_new_packets().unwrap();
            let mut req = [0u8; 64];
            let done = !s.is_handshaking() && s.reader().read(&mut req).is_ok();
            if done {
                s.writer().write_all(b"20 text/gemini\r\n").unwrap();
                s.writer().write_all(&body).unwrap();
                s.send_close_notify();
            }
            wire.clear();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            server_ns += thread_cpu_ns() - t;
            let mut rd = &wire[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            c.process_new_packets().unwrap();
            if done {
                break;
            }
        }
    }
    server_ns as f64 / n as f64 / 1e3
}

/// CPU µs of the handshake's public-key operations with ring: an X25519 key pair and agreement,
/// and an ECDSA P-256 signature.
fn public_key_ops_us(key: &rcgen::KeyPair) -> (f64, f64) {
    use ring::{agreement, rand::SystemRandom, signature};
    let rng = SystemRandom::new();
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
    let peer_public = peer.compute_public_key().unwrap();
    let n = 2000;
    let t = thread_cpu_ns();
    for _ in 0..n {
        let k = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
        let _ = k.compute_public_key().unwrap();
        let unparsed = agreement::UnparsedPublicKey::new(&agreement::X25519, peer_public.as_ref());
        agreement::agree_ephemeral(k, &unparsed, |s| std::hint::black_box(s.len())).unwrap();
    }
    let x25519 = (thread_cpu_ns() - t) as f64 / n as f64 / 1e3;
    let signer = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .unwrap();
    let t = thread_cpu_ns();
    for _ in 0..n {
        std::hint::black_box(
            signer.sign(&rng, b"CertificateVerify transcript hash, 64 bytes or so......").unwrap(),
        );
    }
    let ecdsa = (thread_cpu_ns() - t) as f64 / n as f64 / 1e3;
    (x25519, ecdsa)
}

fn main() {
    let args = parse_args();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve_cpu");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("capsule")).unwrap();
    let body: Vec<u8> =
        (0..BODY_BYTES).map(|i| if i % 64 == 63 { b'\n' } else { b'a' + (i % 26) as u8 }).collect();
    std::fs::write(dir.join("capsule/1k.gmi"), &body).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();

    // Every server presents this certificate: pin it (signatures are still checked).
    let pin: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, cert.der()).as_ref().try_into().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(geminst::load::TofuVerifier::new(Some(pin), true)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let (x25519, ecdsa) = public_key_ops_us(&key);
    println!("floor: X25519 key pair + agreement {x25519:.1} us, ECDSA P-256 signature {ecdsa:.1} us (ring)");
    println!(
        "floor: rustls+ring server side of a full TLS 1.3 handshake + 1 KiB response, in memory: {:.1} us",
        in_memory_handshake_us(&cert, &key, &config)
    );

    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let mut servers: Vec<Server> = Vec::new();
    if wanted("geminst") {
        servers.push(start_geminst(&dir, &args.geminst_args));
    }
    if wanted("molly-brown") {
        servers.extend(start_molly(&dir));
    }
    if wanted("jetforce") {
        servers.extend(start_jetforce(&dir));
    }
    println!(
        "serve_cpu: {} requests x {} rounds per server, concurrency {}, full TLS 1.3 handshakes, 1 KiB body",
        args.requests, args.rounds, args.concurrency
    );
    let mut results: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (i, s) in servers.iter().enumerate() {
            let r = run(s, &config, &args);
            println!(
                "  round {round} {:<12} {:>8.1} us/req (stat) {:>8.1} us/req (schedstat) {:>8.0} req/s",
                s.name, r.cpu_us, r.sched_us, r.rps
            );
            results[i].push(r);
        }
    }
    let summary: Vec<(&str, f64, f64, f64)> = servers
        .iter()
        .zip(&results)
        .map(|(s, rs)| {
            (
                s.name,
                common::median(rs.iter().map(|r| r.cpu_us).collect()),
                common::median(rs.iter().map(|r| r.sched_us).collect()),
                common::median(rs.iter().map(|r| r.rps).collect()),
            )
        })
        .collect();
    let base = summary.iter().find(|s| s.0 == "geminst").map(|s| s.1);
    println!(
        "\n{:<12} {:>16} {:>20} {:>10} {:>18}",
        "server", "CPU us/req", "CPU us/req (sched)", "req/s", "CPU vs geminst"
    );
    for (name, cpu_us, sched_us, rps) in &summary {
        let ratio = base.map_or(String::from("-"), |b| format!("{:.2}x", cpu_us / b));
        println!("{name:<12} {cpu_us:>16.1} {sched_us:>20.1} {rps:>10.0} {ratio:>18}");
    }

    if let Some(pos) = servers.iter().position(|s| s.name == "geminst") {
        let log = servers[pos].log.clone().unwrap();
        drop(servers); // SIGTERM: geminst flushes its log
        let text = std::fs::read_to_string(&log).unwrap();
        let (mut n, mut polls, mut cpu_ns) = (0u64, 0u64, 0u64);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["status"] == 20 {
                n += 1;
                polls += v["polls"].as_u64().unwrap();
                cpu_ns += v["cpu_ns"].as_u64().unwrap();
            }
        }
        let read_ns = clock_read_ns();
        let mean_polls = polls as f64 / n as f64;
        println!(
            "\ngeminst's log: {n} requests, {mean_polls:.2} polls and {:.1} us of task CPU (cpu_ns) per request",
            cpu_ns as f64 / n as f64 / 1e3
        );
        println!(
            "per-poll CPU accounting: {read_ns:.0} ns per CLOCK_THREAD_CPUTIME_ID read x 2 x {mean_polls:.2} polls \
             = {:.2} us per request",
            read_ns * 2.0 * mean_polls / 1e3
        );
    }
}
