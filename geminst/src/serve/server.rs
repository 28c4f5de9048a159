//! The server as a library: `Server::start` binds, loads or makes the certificate, opens the
//! capsule and the log, and serves on a runtime of its own until `stop`, which stops accepting,
//! lets every accepted connection finish (each is bounded by its timeouts) and flushes the log.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use super::{
    bench_routes::{BenchRoutes, DEFAULT_READ_SIZE},
    certs,
    conn::{self, Shared},
    content::{Store, db::DbStore, fs::FsStore},
    handler::Handler,
    log::{LogSink, LogWriter, Record},
    measure::Measured,
    mime::{Mime, valid_lang},
    request::Identity,
    tls,
};
use crate::{clock, exit::BadInput};

/// What to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A capsule directory.
    Root(PathBuf),
    /// A database made by `geminst import`.
    Db(PathBuf),
}

/// Everything a server is started with. `Options::new` gives the defaults of `geminst serve`.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub source: Source,
    /// Names (DNS names or IP addresses) the server answers for and its certificate names.
    pub hostnames: Vec<String>,
    /// Holds the generated certificate, the default log and the bench data file.
    pub state_dir: PathBuf,
    /// A supplied certificate chain and key (PEM) instead of a generated one.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// The request log; None: `requests.jsonl` in the state directory.
    pub log: Option<PathBuf>,
    pub listing: bool,
    pub lang: Option<String>,
    pub bench_routes: bool,
    pub bench_read_size: u64,
    pub max_connections: u32,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
    pub threads: usize,
    /// TCP_DEFER_ACCEPT: accept a connection when its first bytes (the ClientHello) arrive.
    pub defer_accept: bool,
}

/// The default hostnames: the loopback names a local client uses.
pub const DEFAULT_HOSTNAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl Options {
    pub fn new(source: Source, state_dir: PathBuf) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 1965)),
            source,
            hostnames: DEFAULT_HOSTNAMES.iter().map(|s| s.to_string()).collect(),
            state_dir,
            cert: None,
            log: None,
            listing: false,
            lang: None,
            bench_routes: false,
            bench_read_size: DEFAULT_READ_SIZE,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            defer_accept: true,
        }
    }
}

/// What a server did, reported when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub connections: u64,
    pub log_lines: u64,
}

/// A running server.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    local_addr: SocketAddr,
    fingerprint: String,
    log_path: PathBuf,
    source: Source,
    hostnames: Vec<String>,
    stop: watch::Sender<bool>,
    stopped: Option<mpsc::Receiver<u64>>,
    log: Option<LogWriter>,
}

impl Server {
    pub fn start(opts: Options) -> Result<Server> {
        if opts.hostnames.is_empty() {
            return Err(BadInput("at least one --hostname is needed".into()).into());
        }
        if let Some(lang) = &opts.lang
            && !valid_lang(lang)
        {
            return Err(
                BadInput(format!("--lang {lang:?}: not a comma-separated list of language tags")).into()
            );
        }
        if opts.threads == 0 || opts.max_connections == 0 {
            return Err(BadInput("--threads and --max-connections must be at least 1".into()).into());
        }
        std::fs::create_dir_all(&opts.state_dir)
            .with_context(|| format!("creating the state directory {}", opts.state_dir.display()))?;
        let cert = match &opts.cert {
            Some((cert, key)) => certs::load(cert, key)?,
            None => certs::load_or_generate(&opts.state_dir, &opts.hostnames)?,
        };
        let fingerprint = cert.fingerprint.clone();
        let tls = tls::server_config(cert)?;
        let store = match &opts.source {
            Source::Root(dir) => Store::Fs(FsStore::open(dir)?),
            Source::Db(file) => Store::Db(DbStore::open(file)?),
        };
        let bench = if opts.bench_routes {
            Some(BenchRoutes::prepare(&opts.state_dir, opts.bench_read_size)?)
        } else {
            None
        };

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .thread_name("geminst-worker")
            .enable_io()
            .enable_time()
            .build()
            .context("starting the runtime")?;
        let std_listener =
            std::net::TcpListener::bind(opts.addr).with_context(|| format!("listening on {}", opts.addr))?;
        std_listener.set_nonblocking(true)?;
        tune_listener(&std_listener, opts.defer_accept, opts.handshake_timeout)?;
        let local_addr = std_listener.local_addr()?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(std_listener)?
        };

        let log_path = opts.log.clone().unwrap_or_else(|| opts.state_dir.join("requests.jsonl"));
        let log = LogWriter::start(&log_path)?;
        let shared = Arc::new(Shared {
            tls,
            handler: Handler {
                identity: Identity::new(&opts.hostnames, local_addr.port()),
                store,
                mime: Mime::new(opts.lang.as_deref()),
                listing: opts.listing,
                bench,
            },
            handshake_timeout: opts.handshake_timeout,
            request_timeout: opts.request_timeout,
            write_timeout: opts.write_timeout,
        });
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, stopped) = mpsc::channel();
        let sink = log.sink();
        let max = opts.max_connections;
        // tokio wakes its event loop (an eventfd write and one more epoll_wait) whenever a timer
        // is set while none is due sooner. Between connections none is, so every connection's
        // first timeout would pay that; a timer due at least every second spares them.
        runtime.spawn(async {
            let mut beat = tokio::time::interval(Duration::from_secs(1));
            loop {
                beat.tick().await;
            }
        });
        runtime.spawn(async move {
            let accepted = accept_loop(listener, local_addr, shared, sink, max, stop_rx).await;
            let _ = done_tx.send(accepted);
        });
        Ok(Server {
            runtime: Some(runtime),
            local_addr,
            fingerprint,
            log_path,
            source: opts.source,
            hostnames: opts.hostnames,
            stop,
            stopped: Some(stopped),
            log: Some(log),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the certificate the server presents (DER), lower-case hex.
    pub fn cert_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The startup line `geminst serve` prints: what tests and the pipeline wait for.
    pub fn describe(&self) -> String {
        let source = match &self.source {
            Source::Root(p) => format!("root={}", p.display()),
            Source::Db(p) => format!("db={}", p.display()),
        };
        format!(
            "listening on {} {source} hostnames={} cert_sha256={} log={}",
            self.local_addr,
            self.hostnames.join(","),
            self.fingerprint,
            self.log_path.display()
        )
    }

    pub(crate) fn runtime_handle(&self) -> tokio::runtime::Handle {
        self.runtime.as_ref().expect("running").handle().clone()
    }

    /// Stops accepting, waits for the accepted connections to finish (each is bounded by its
    /// timeouts), writes and syncs the log. Blocks: call it outside async code.
    pub fn stop(mut self) -> Result<Summary> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Summary> {
        let Some(runtime) = self.runtime.take() else { return Ok(Summary { connections: 0, log_lines: 0 }) };
        let _ = self.stop.send(true);
        let connections = self.stopped.take().and_then(|rx| rx.recv().ok()).unwrap_or(0);
        runtime.shutdown_background();
        let log_lines = match self.log.take() {
            Some(log) => log.finish()?,
            None => 0,
        };
        Ok(Summary { connections, log_lines })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn setsockopt(
    listener: &std::net::TcpListener,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Socket options set once on the listener, which Linux copies to every accepted connection, so
/// no connection pays a setsockopt: TCP_NODELAY (responses are written whole; Nagle could only
/// hold back a tail segment of a large body). And TCP_DEFER_ACCEPT (tcp(7)), as nginx's
/// `deferred`: the kernel hands a connection to accept only once its first data, the ClientHello,
/// has arrived, which saves the server a wake-up per connection; a client that sends nothing
/// waits in the kernel, holding no connection slot, until it closes or about the handshake
/// timeout has passed, when the kernel hands it over (and the handshake timeout runs again).
fn tune_listener(listener: &std::net::TcpListener, defer_accept: bool, handshake: Duration) -> Result<()> {
    setsockopt(listener, libc::TCP_NODELAY, 1).context("setting TCP_NODELAY on the listener")?;
    if defer_accept {
        let secs = handshake.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
        setsockopt(listener, libc::TCP_DEFER_ACCEPT, secs).context("setting TCP_DEFER_ACCEPT")?;
    }
    Ok(())
}

/// Accepts connections while slots are free and the server is not stopping; returns the number
/// accepted once every one of them has finished.
async fn accept_loop(
    listener: TcpListener,
    listen_addr: SocketAddr,
    shared: Arc<Shared>,
    sink: LogSink,
    max: u32,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let slots = Arc::new(Semaphore::new(max as usize));
    // Connections accepted on a specific address have that local address; only a wildcard
    // listener needs getsockname per connection.
    let fixed_local = (!listen_addr.ip().is_unspecified()).then_some(listen_addr);
    let mut accepted = 0u64;
    loop {
        // Waiting for a slot before accepting leaves excess clients in the kernel's backlog.
        let permit = tokio::select! {
            biased;
            _ = stop.changed() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait a little
                    // rather than spin, and carry on.
                    eprintln!("geminst serve: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let (mono, unix) = (clock::monotonic_ns(), clock::unix_ns());
        accepted += 1;
        let local = fixed_local.unwrap_or_else(|| tcp.local_addr().unwrap_or(listen_addr));
        let rec = Record::accepted(accepted, peer, local, mono, unix);
        tokio::spawn(Measured::new(conn::serve(tcp, rec, shared.clone()), sink.clone(), permit));
    }
    drop(listener);
    let _ = slots.acquire_many(max).await;
    accepted
}
