//! The command line of `geminst load`, and the plan it describes.

use std::path::PathBuf;

use clap::Args;

use super::{
    plan::{
        self, ClientCert, DEFAULT_MAX_IN_FLIGHT, DEFAULT_SEED, DEFAULT_TIMEOUT, End, Load, MixEntry, Phase,
        Plan, TlsSettings, TlsVersion, UrlSpec,
    },
    profile,
    url::GeminiUrl,
};
use crate::exit::BadInput;

/// Length of a run given neither --duration nor --count.
const DEFAULT_DURATION_S: u64 = 10;

#[derive(Debug, Clone, Args)]
#[command(after_long_help = "\
Open loop (--rate): requests start on a fixed schedule whether or not earlier ones have finished, \
and latency is measured from the scheduled start, so a stalled server cannot hide its queue. \
Closed loop (--concurrency, the default with 1): N connections, each starting its next request \
when the last one ends.

Exit status: 0 when every request got a 2x or 3x response; 1 when any failed (a transport error, \
a timeout, overload, or a status 1x, 4x, 5x or 6x); 2 for bad input. Ctrl-C stops early and still \
prints the summary and writes --out.

Profiles and the columns of --out: docs/load-profiles.md.")]
pub struct LoadArgs {
    /// gemini:// URL to request; with --profile, the target that the profile's paths join to
    #[arg(value_name = "URL", required_unless_present = "profile")]
    pub url: Option<String>,
    /// Load profile (TOML): phases with rates or concurrency, lengths and URL mixes
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Open loop: start R requests per second on a fixed schedule
    #[arg(long, value_name = "R", conflicts_with_all = ["concurrency", "profile"])]
    pub rate: Option<f64>,
    /// Closed loop: N connections back to back [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "profile")]
    pub concurrency: Option<u32>,
    /// Length of the run: seconds, or with a unit (500ms, 30s, 2m) [default: 10]
    #[arg(long, value_name = "SECS", conflicts_with_all = ["count", "profile"])]
    pub duration: Option<String>,
    /// Number of requests to send, instead of a duration
    #[arg(long, value_name = "N", conflicts_with = "profile")]
    pub count: Option<u64>,
    /// Size of each request, URL and CRLF, set by padding the URL's query (at most 1026)
    #[arg(long, value_name = "N", conflicts_with = "profile")]
    pub request_bytes: Option<usize>,
    /// Ask for N-byte responses: requests /_bench/bytes/N on the URL's host (built-in server)
    #[arg(long, value_name = "N", conflicts_with = "profile")]
    pub response_bytes: Option<u64>,
    /// How to connect and speak TLS (boxed: rarely set, and large)
    #[command(flatten)]
    pub connection: Box<ConnectionArgs>,
    /// Threads of the client (one keeps its cost lowest; more for rates one core cannot keep)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Write one row per request to this Parquet file
    #[arg(long, value_name = "FILE.parquet")]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// The connection options of `geminst load`; with --profile they override the profile's.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// Speak only this TLS version [default: 1.3 or 1.2, as the server prefers]
    #[arg(long, value_name = "VERSION", value_parser = ["1.2", "1.3"])]
    pub tls: Option<String>,
    /// Server name to send in SNI [default: the URL's host; none for an IP address]
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Accept only a server certificate with this SHA-256 fingerprint (hex, colons allowed)
    #[arg(long, value_name = "HEX")]
    pub pin_sha256: Option<String>,
    /// Full handshake on every request (the default)
    #[arg(long, overrides_with = "resumption")]
    pub no_resumption: bool,
    /// Resume TLS sessions from earlier requests of the run (tickets or session ids)
    #[arg(long, overrides_with = "no_resumption")]
    pub resumption: bool,
    /// Client certificate chain (PEM) to present
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Give up on a request this long after its start [default: 10]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<String>,
    /// Connect to this address instead of resolving the URL's host (SNI stays the URL's)
    #[arg(long, value_name = "ADDR")]
    pub connect: Option<String>,
    /// Seed of the URL mixes: the same seed sends the same URL sequence [default: 1]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Most requests in flight at once; a request due beyond it is counted as an "overload"
    /// error, never delayed [default: 10000, or what the open-file limit allows]
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,
}

impl Plan {
    /// The plan the command line describes: a profile with the connection settings overridden,
    /// or one phase against one URL.
    pub fn from_args(args: &LoadArgs) -> anyhow::Result<Plan> {
        let bad = |m: String| anyhow::Error::from(BadInput(m));
        let url = match &args.url {
            Some(u) => Some(GeminiUrl::parse(u).map_err(bad)?),
            None => None,
        };
        let mut plan = match &args.profile {
            Some(path) => {
                let plan = profile::read(path)?;
                match url {
                    Some(u) => plan.with_target(u),
                    None => plan,
                }
            }
            None => {
                let url = url.ok_or_else(|| bad("give a gemini:// URL or --profile".into()))?;
                let load = match (args.rate, args.concurrency) {
                    (Some(rate), _) => Load::Rate { rate, ramp_to: None },
                    (None, Some(n)) => Load::Concurrency(n),
                    (None, None) => Load::Concurrency(1),
                };
                let end = match (&args.duration, args.count) {
                    (Some(d), _) => {
                        End::Duration(plan::parse_duration(d).map_err(|e| bad(format!("--duration: {e}")))?)
                    }
                    (None, Some(n)) => End::Count(n),
                    (None, None) => End::Duration(std::time::Duration::from_secs(DEFAULT_DURATION_S)),
                };
                let entry = match args.response_bytes {
                    Some(n) => UrlSpec::response_bytes(n),
                    None => UrlSpec::Absolute(url.clone()),
                };
                Plan {
                    source: url.to_string(),
                    target: Some(url),
                    phases: vec![Phase {
                        name: "main".into(),
                        load,
                        end,
                        mix: vec![MixEntry { url: entry, weight: 1.0 }],
                        request_bytes: args.request_bytes,
                    }],
                    tls: TlsSettings::default(),
                    connect: None,
                    timeout: DEFAULT_TIMEOUT,
                    seed: DEFAULT_SEED,
                    max_in_flight: DEFAULT_MAX_IN_FLIGHT,
                }
            }
        };

        // Connection settings from the command line win over the profile's.
        let args_c = &args.connection;
        let tls = &mut plan.tls;
        if let Some(v) = &args_c.tls {
            tls.version = Some(TlsVersion::parse(v).map_err(bad)?);
        }
        if let Some(s) = &args_c.sni {
            tls.sni = Some(s.clone());
        }
        if let Some(p) = &args_c.pin_sha256 {
            tls.pin_sha256 = Some(plan::parse_sha256(p).map_err(|e| bad(format!("--pin-sha256: {e}")))?);
        }
        if args_c.resumption {
            tls.resumption = true;
        }
        if args_c.no_resumption {
            tls.resumption = false;
        }
        if let (Some(cert), Some(key)) = (&args_c.client_cert, &args_c.client_key) {
            tls.client_cert = Some(ClientCert { cert: cert.clone(), key: key.clone() });
        }
        if let Some(t) = &args_c.timeout {
            let t = plan::parse_duration(t).map_err(|e| bad(format!("--timeout: {e}")))?;
            if t.is_zero() {
                return Err(bad("--timeout must be above 0".into()));
            }
            plan.timeout = t;
        }
        if let Some(c) = &args_c.connect {
            plan.connect = Some(c.clone());
        }
        if let Some(s) = args_c.seed {
            plan.seed = s;
        }
        if let Some(m) = args_c.max_in_flight {
            plan.max_in_flight = m;
        }
        if args.threads == 0 {
            return Err(bad("--threads must be at least 1".into()));
        }
        // Check now, so bad input is reported before anything is sent.
        plan.requests().map_err(bad)?;
        Ok(plan)
    }
}
