//! The command lines of `geminst serve` and `geminst import`, and their translation to `Options`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use clap::Args;

use super::{
    bench_routes::DEFAULT_READ_SIZE,
    server::{Options, Source},
};
use crate::exit::BadInput;

const SERVE_AFTER_HELP: &str = "\
The server logs one JSON line per TCP connection (docs/request-log.md), flushed at least every \
250 ms and on shutdown; the log file is truncated at start, so one file holds one server run. \
SIGINT or SIGTERM stops accepting, lets accepted connections finish and flushes the log; a second \
signal ends the process at once.

Bench routes (--bench-routes): /_bench/bytes/N answers N bytes (N <= 64 MiB) of a fixed pattern; \
/_bench/cpu/US burns US microseconds of the serving thread's CPU first (US <= 10 s); \
/_bench/read/N reads N bytes from a data file in the state directory (N <= --bench-read-size). \
Query strings are ignored, so requests can be padded to exact sizes.";

/// `geminst serve`'s arguments, boxed so the CLI's command enum stays small.
#[derive(Debug, Clone, Args)]
#[command(after_help = SERVE_AFTER_HELP)]
pub struct ServeArgs {
    #[command(flatten)]
    pub flags: Box<ServeFlags>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeFlags {
    /// Capsule directory to serve [default: the sample capsule in testdata/capsule]
    #[arg(long, value_name = "DIR", conflicts_with = "db")]
    pub root: Option<PathBuf>,

    /// Serve a SQLite capsule made by `geminst import` instead of a directory
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Address and port to listen on; IPv6 as [::1]:1965
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:1965")]
    pub addr: SocketAddr,

    /// A name the server answers for and its certificate names (repeat for several): a DNS name
    /// or an IP address. Requests for other hosts get 53
    #[arg(long = "hostname", value_name = "NAME", value_parser = parse_hostname,
          default_values_t = super::server::DEFAULT_HOSTNAMES.map(String::from))]
    pub hostnames: Vec<String>,

    /// Directory for the generated certificate and key, the default request log and the bench
    /// data file [default: $XDG_STATE_HOME/geminst, else ~/.local/state/geminst]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Certificate chain (PEM) to present instead of a generated self-signed one
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Request log, one JSON line per connection [default: requests.jsonl in the state directory]
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// List directories that have no index.gmi (otherwise they are not found, 51)
    #[arg(long)]
    pub listing: bool,

    /// The lang parameter of text/gemini responses, e.g. en or en,fr
    #[arg(long, value_name = "TAGS")]
    pub lang: Option<String>,

    /// Serve the experiment routes under /_bench/ (see below)
    #[arg(long)]
    pub bench_routes: bool,

    /// Size of the data file /_bench/read/N reads from (at most 1 GiB)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_READ_SIZE,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub bench_read_size: u64,

    /// Connections served at once; more wait in the kernel's accept queue
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Time a client has from connecting to finishing the TLS handshake (e.g. 10s, 500ms)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Time a client has after the handshake to send its request line
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Time a client may leave the server waiting to write a piece of the response
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Accept connections as soon as TCP completes, not when their first data arrives
    /// (TCP_DEFER_ACCEPT, the default, also keeps clients that never send out of the log)
    #[arg(long)]
    pub no_defer_accept: bool,

    /// Worker threads [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Capsule directory to copy
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,

    /// Database to write (replaced if it exists; must be outside --root)
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,
}

/// The sample capsule in the source tree, the default root.
pub fn sample_capsule() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("testdata").join("capsule");
    path.canonicalize().unwrap_or(path)
}

/// `$XDG_STATE_HOME/geminst`, else `~/.local/state/geminst` (XDG Base Directory Specification).
pub fn default_state_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Ok(dir.join("geminst"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/geminst")),
        None => Err(BadInput("neither XDG_STATE_HOME nor HOME is set: give --state-dir".into()).into()),
    }
}

impl ServeArgs {
    pub fn options(&self) -> Result<Options> {
        self.flags.options()
    }
}

impl ServeFlags {
    pub fn options(&self) -> Result<Options> {
        let source = match (&self.root, &self.db) {
            (_, Some(db)) => Source::Db(db.clone()),
            (Some(root), None) => Source::Root(root.clone()),
            (None, None) => {
                let sample = sample_capsule();
                if !sample.is_dir() {
                    return Err(BadInput(format!(
                        "no --root or --db given, and the sample capsule {} is not there",
                        sample.display()
                    ))
                    .into());
                }
                Source::Root(sample)
            }
        };
        let state_dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => default_state_dir()?,
        };
        let mut o = Options::new(source, state_dir);
        o.addr = self.addr;
        o.hostnames = dedup(&self.hostnames);
        o.cert = self.cert.clone().zip(self.key.clone());
        o.log = self.log.clone();
        o.listing = self.listing;
        o.lang = self.lang.clone();
        o.bench_routes = self.bench_routes;
        o.bench_read_size = self.bench_read_size;
        o.max_connections = self.max_connections;
        o.handshake_timeout = self.handshake_timeout;
        o.request_timeout = self.request_timeout;
        o.write_timeout = self.write_timeout;
        o.defer_accept = !self.no_defer_accept;
        if let Some(t) = self.threads {
            o.threads = t.into();
        }
        Ok(o)
    }
}

fn dedup(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// A DNS name (letters, digits, hyphens; labels of 1 to 63, 253 in all; lower-cased) or an IP
/// address (IPv6 with or without brackets).
pub fn parse_hostname(s: &str) -> Result<String, String> {
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{s:?} is neither a DNS name nor an IP address"));
    }
    Ok(name)
}

/// A duration: a number with `ms`, `s` or `m`, or plain seconds; more than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (s, 1000.0)
    };
    let value: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration like 10s or 500ms"))?;
    let ms = value * scale_ms;
    if !ms.is_finite() || ms <= 0.0 || ms > 86_400_000.0 {
        return Err(format!("{s:?}: a duration must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn hostnames() {
        assert_eq!(parse_hostname("LocalHost").as_deref(), Ok("localhost"));
        assert_eq!(parse_hostname("example.org.").as_deref(), Ok("example.org"));
        assert_eq!(parse_hostname("[::1]").as_deref(), Ok("::1"));
        assert_eq!(parse_hostname("127.0.0.1").as_deref(), Ok("127.0.0.1"));
        assert!(parse_hostname("bad_name").is_err());
        assert!(parse_hostname("-x.org").is_err());
        assert!(parse_hostname("").is_err());
        assert!(parse_hostname("a..b").is_err());
    }
}
