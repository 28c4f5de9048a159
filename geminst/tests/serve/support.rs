//! Helpers for the serve tests: start `geminst serve` on a port of its own, fetch over real TLS
//! with a rustls client that counts its socket bytes and reads the kernel's TCP_INFO, and run the
//! independent clients (openssl s_client, Python's agunua and gemcall).

use geminst::load::TofuVerifier;
use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use geminst::serve::log::Record;
use rustls::{ClientConfig, pki_types::ServerName};

use crate::util::{self, Guard};

/// The sample capsule the server serves by default.
pub fn capsule() -> PathBuf {
    util::repo_root().join("testdata/capsule")
}

pub fn capsule_file(rel: &str) -> Vec<u8> {
    fs::read(capsule().join(rel)).unwrap()
}

/// A `geminst serve` child with its port, directory, log and certificate fingerprint.
pub struct Gem {
    pub guard: Guard,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub stderr: PathBuf,
    pub fingerprint: String,
}

/// Starts `geminst serve` on 127.0.0.1 with a state directory, log and stderr file under the
/// test's directory, plus `args`; waits for the startup line.
pub fn serve(name: &str, args: &[&str]) -> Gem {
    let dir = util::temp_dir(&format!("serve-{name}"));
    serve_in(&dir, args)
}

/// Like `serve`, in an existing directory (its state directory is kept between starts).
pub fn serve_in(dir: &Path, args: &[&str]) -> Gem {
    // A port that was free may be taken by the time the server binds: try a few.
    for _ in 0..5 {
        let port = util::free_port();
        let log = dir.join("requests.jsonl");
        let stderr = dir.join(format!("stderr-{port}.txt"));
        let mut cmd = Command::new(util::geminst());
        cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--log")
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        let mut guard = Guard::new(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(&stderr).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.starts_with("geminst serve: listening on ")) {
                let fingerprint = field(line, "cert_sha256=").to_owned();
                return Gem { guard, port, dir: dir.to_owned(), log, stderr, fingerprint };
            }
            if let Some(status) = guard.child().try_wait().unwrap() {
                assert!(text.contains("Address already in use"), "geminst serve exited ({status}): {text}");
                break;
            }
            assert!(Instant::now() < deadline, "no startup line within 20 s: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("could not find a free port in 5 tries");
}

/// The value of `key` (e.g. `cert_sha256=`) in a startup line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(key).unwrap_or_else(|| panic!("{key} not in {line}")) + key.len();
    line[start..].split(' ').next().unwrap()
}

impl Gem {
    pub fn url(&self, path: &str) -> String {
        format!("gemini://localhost:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Stops the server with `signal`, checks it exits 0, and returns its stderr and log.
    pub fn stop_with(mut self, signal: i32) -> (ExitStatus, String, Vec<Record>) {
        self.guard.signal(signal);
        let status = self.guard.wait(Duration::from_secs(30));
        let stderr = fs::read_to_string(&self.stderr).unwrap();
        let log = util::read_server_log(&self.log);
        (status, stderr, log)
    }

    pub fn stop(self) -> Vec<Record> {
        let (status, stderr, log) = self.stop_with(libc::SIGTERM);
        assert!(status.success(), "geminst serve exited {status}: {stderr}");
        log
    }
}

/// Accepts the certificate the server presents (Gemini's trust on first use) and keeps it;
/// handshake signatures are still verified.
/// A TLS client configuration: one protocol version, session resumption on or off.
pub struct Client {
    pub config: Arc<ClientConfig>,
    pub tofu: Arc<TofuVerifier>,
}

impl Client {
    pub fn new(tls12: bool, resumption: bool) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tofu = Arc::new(TofuVerifier::new(None, true));
        let version = if tls12 { &rustls::version::TLS12 } else { &rustls::version::TLS13 };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(tofu.clone())
            .with_no_client_auth();
        if !resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Self { config: Arc::new(config), tofu }
    }

    pub fn tls13() -> Self {
        Self::new(false, false)
    }

    /// Connects to 127.0.0.1:port with SNI `name` (None: an IP address, so no SNI), sends
    /// `request` and reads until the server closes.
    pub fn fetch_as(&self, port: u16, name: Option<&str>, request: &[u8]) -> Fetch {
        let start = Instant::now();
        let started = (clock_ns(libc::CLOCK_MONOTONIC), clock_ns(libc::CLOCK_REALTIME));
        let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.set_nodelay(true).unwrap();
        let client_addr = tcp.local_addr().unwrap();
        let server_name = match name {
            Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
            None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        };
        let conn = rustls::ClientConnection::new(self.config.clone(), server_name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, Counted { tcp, read: 0, written: 0 });
        tls.write_all(request).unwrap();
        let mut raw = Vec::new();
        let close_notify = match tls.read_to_end(&mut raw) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => panic!("reading the response to {:?}: {e}", String::from_utf8_lossy(request)),
        };
        let ended = (clock_ns(libc::CLOCK_MONOTONIC), clock_ns(libc::CLOCK_REALTIME));
        let info = tcp_info(&tls.sock.tcp);
        Fetch {
            started,
            ended,
            raw,
            close_notify,
            cert: self.tofu.first_seen_der().map(<[u8]>::to_vec),
            version: tls.conn.protocol_version(),
            cipher: tls.conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()),
            client_addr,
            written: tls.sock.written,
            read: tls.sock.read,
            kernel_received: info.tcpi_bytes_received,
            kernel_acked: info.tcpi_bytes_acked,
            elapsed: start.elapsed(),
        }
    }

    pub fn fetch(&self, port: u16, request: &[u8]) -> Fetch {
        self.fetch_as(port, Some("localhost"), request)
    }
}

/// Fetches `url` over TLS 1.3 with SNI localhost.
pub fn get(port: u16, url: &str) -> Fetch {
    Client::tls13().fetch(port, format!("{url}\r\n").as_bytes())
}

/// What a fetch saw.
pub struct Fetch {
    pub raw: Vec<u8>,
    /// The server ended with close_notify (not a bare TCP close).
    pub close_notify: bool,
    pub cert: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
    pub cipher: Option<&'static str>,
    pub client_addr: SocketAddr,
    /// Bytes the client wrote to and read from its socket (TLS records).
    pub written: u64,
    pub read: u64,
    /// The kernel's counts for the client's socket (TCP_INFO).
    pub kernel_received: u64,
    pub kernel_acked: u64,
    pub elapsed: Duration,
    /// CLOCK_MONOTONIC and CLOCK_REALTIME (ns) before connecting and after the server closed.
    pub started: (u64, u64),
    pub ended: (u64, u64),
}

/// A clock read directly (not through geminst's code), for comparing with the log's times.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Fetch {
    /// The header line without CRLF, checked against the spec's form (§3.1): two digits of a
    /// defined status, one space, a META of 1 to 1024 bytes without CR or LF, then CRLF; no BOM.
    pub fn header(&self) -> &str {
        let end = self.raw.windows(2).position(|w| w == b"\r\n").unwrap_or_else(|| {
            panic!("no CRLF in response {:?}", String::from_utf8_lossy(&self.raw[..self.raw.len().min(100)]))
        });
        let header = std::str::from_utf8(&self.raw[..end]).expect("header is UTF-8");
        let b = header.as_bytes();
        assert!(b.len() >= 4 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && b[2] == b' ', "{header:?}");
        let meta = &header[3..];
        assert!(!meta.is_empty() && meta.len() <= 1024 && !meta.contains(['\r', '\n']), "{header:?}");
        assert!(!meta.starts_with(' ') && !header.starts_with('\u{feff}'), "{header:?}");
        let status: u8 = header[..2].parse().unwrap();
        const DEFINED: [u8; 18] = [10, 11, 20, 30, 31, 40, 41, 42, 43, 44, 50, 51, 52, 53, 59, 60, 61, 62];
        assert!(DEFINED.contains(&status), "undefined status {status}");
        if status / 10 != 2 {
            assert_eq!(self.raw.len(), end + 2, "a body after a non-2x header: {header:?}");
        }
        header
    }

    pub fn status(&self) -> u8 {
        self.header()[..2].parse().unwrap()
    }

    pub fn meta(&self) -> &str {
        &self.header()[3..]
    }

    pub fn body(&self) -> &[u8] {
        let end = self.header().len() + 2;
        &self.raw[end..]
    }
}

/// The TCP stream, counting the bytes its read and write calls return.
pub struct Counted {
    pub tcp: TcpStream,
    pub read: u64,
    pub written: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.tcp.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// The kernel's TCP_INFO for a socket.
pub fn tcp_info(tcp: &TcpStream) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        );
        assert_eq!(rc, 0, "getsockopt(TCP_INFO): {}", std::io::Error::last_os_error());
        info
    }
}

/// What `openssl s_client` printed: the response bytes (stdout) and its protocol trace.
pub struct SClient {
    pub stdout: Vec<u8>,
    pub trace: String,
    pub stderr: String,
}

/// Fetches with `openssl s_client` (`tls_flag` is -tls1_3 or -tls1_2), tracing the protocol
/// messages to a file.
pub fn s_client(port: u16, tls_flag: &str, request: &[u8], dir: &Path) -> SClient {
    let trace = dir.join(format!("s_client{tls_flag}-{port}.txt"));
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            tls_flag,
            "-quiet",
        ])
        .arg("-msg")
        .arg("-msgfile")
        .arg(&trace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request).unwrap();
    // stdin stays open: -quiet implies -ign_eof, so s_client reads until the server closes.
    let guard = Guard::new(child);
    let (status, stdout, stderr) = guard.output(Duration::from_secs(20));
    drop(stdin);
    assert!(status.success(), "openssl s_client failed: {stderr}");
    SClient { stdout: stdout.into_bytes(), trace: fs::read_to_string(&trace).unwrap(), stderr }
}
