//! What a load run does: its phases, what each sends, and how it connects. Built from the
//! command line ([`Plan::from_args`](super::args)) or a profile file ([`Plan::from_profile`]),
//! checked once, then run by [`super::run`].

use std::{fmt, path::PathBuf, time::Duration};

use super::{
    schedule::RateSchedule,
    url::{GeminiUrl, MAX_REQUEST_BYTES},
};

/// Default cap on requests in flight at once in open-loop mode; lowered to what the file
/// descriptor limit allows.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// Default time a request may take from its start to its last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default seed of the URL mixes.
pub const DEFAULT_SEED: u64 = 1;

/// A whole load run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The URL relative mix entries are joined to; `None` when every entry is absolute.
    pub target: Option<GeminiUrl>,
    pub phases: Vec<Phase>,
    pub tls: TlsSettings,
    /// Connect here instead of resolving each URL's host (the Host and SNI stay the URL's).
    pub connect: Option<String>,
    pub timeout: Duration,
    pub seed: u64,
    pub max_in_flight: usize,
    /// Where the plan came from (a URL or a profile path), for the summary.
    pub source: String,
}

/// One phase: how requests are started, when the phase ends, and which URLs it asks for.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub load: Load,
    pub end: End,
    pub mix: Vec<MixEntry>,
    /// Size of each whole request (URL and CRLF) in bytes; `None` sends the URLs unpadded.
    pub request_bytes: Option<usize>,
}

/// How requests are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop: requests start on a fixed schedule at `rate` per second, ramping linearly to
    /// `ramp_to` over the phase when set, whether or not earlier ones have finished.
    Rate { rate: f64, ramp_to: Option<f64> },
    /// Closed loop: this many connections, each starting its next request when one ends.
    Concurrency(u32),
}

/// When a phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    Duration(Duration),
    Count(u64),
}

/// One URL of a phase's mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixEntry {
    pub url: UrlSpec,
    pub weight: f64,
}

/// A URL as written: a path joined to the target, or absolute.
#[derive(Debug, Clone, PartialEq)]
pub enum UrlSpec {
    Path(String),
    Absolute(GeminiUrl),
}

impl UrlSpec {
    /// A URL as the user wrote it: a path (starting with /) or a gemini:// URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with('/') {
            Ok(Self::Path(text.to_string()))
        } else {
            GeminiUrl::parse(text).map(Self::Absolute)
        }
    }

    /// The path of the built-in server's route that answers with `n` body bytes.
    pub fn response_bytes(n: u64) -> Self {
        Self::Path(format!("/_bench/bytes/{n}"))
    }

    pub fn resolve(&self, target: Option<&GeminiUrl>) -> Result<GeminiUrl, String> {
        match (self, target) {
            (Self::Absolute(u), _) => Ok(u.clone()),
            (Self::Path(p), Some(t)) => t.join(p),
            (Self::Path(p), None) => Err(format!(
                "{p} is a path but there is no target to join it to: give a gemini:// URL \
                 (or [defaults] target in the profile)"
            )),
        }
    }
}

impl fmt::Display for UrlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => f.write_str(p),
            Self::Absolute(u) => write!(f, "{u}"),
        }
    }
}

/// TLS as the client speaks it.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// Only this version; `None` offers 1.3 and 1.2 (1.3 preferred).
    pub version: Option<TlsVersion>,
    /// Server name to send; `None` sends the URL's host (no SNI when it is an IP address).
    pub sni: Option<String>,
    /// SHA-256 of the server's certificate (DER); any other certificate fails the handshake.
    pub pin_sha256: Option<[u8; 32]>,
    /// Offer to resume sessions (tickets or ids) from earlier requests of the run.
    pub resumption: bool,
    pub client_cert: Option<ClientCert>,
    /// Check the server's handshake signature with the key in its certificate. Self-signed
    /// certificates are accepted without a chain either way; turning this off only serves to
    /// measure what the check costs.
    pub verify_signatures: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            version: None,
            sni: None,
            pin_sha256: None,
            resumption: false,
            client_cert: None,
            verify_signatures: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err(format!("TLS version {text:?} is not 1.2 or 1.3")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Parses a SHA-256 fingerprint: 64 hex digits, colons allowed (as `openssl x509 -fingerprint`
/// prints them).
pub fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|&c| c != ':').collect();
    let bad = || format!("{text:?} is not a SHA-256 fingerprint (64 hex digits)");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Parses a duration: a number of seconds (`30`, `1.5`) or a number with a unit (`500ms`,
/// `10s`, `2m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?} is not a duration (e.g. 30, 30s, 500ms, 2m)")),
    };
    let n: f64 = num.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 30, 30s, 500ms, 2m)"))?;
    seconds(n * scale).map_err(|e| format!("duration {text:?}: {e}"))
}

/// A non-negative, finite number of seconds as a Duration.
pub fn seconds(s: f64) -> Result<Duration, String> {
    if !s.is_finite() || s < 0.0 {
        return Err(format!("{s} s is not a positive length of time"));
    }
    Duration::try_from_secs_f64(s).map_err(|_| format!("{s} s is too long"))
}

impl Phase {
    /// Checks what can be checked without a target; errors name the rule broken.
    pub fn check(&self) -> Result<(), String> {
        match self.load {
            Load::Rate { rate, ramp_to } => {
                check_rate("rate", rate)?;
                if let Some(r) = ramp_to {
                    check_rate("ramp_to", r)?;
                }
                if let End::Count(_) = self.end
                    && rate + ramp_to.unwrap_or(rate) <= 0.0
                {
                    return Err("a phase with a count needs a rate above 0".into());
                }
            }
            Load::Concurrency(0) => return Err("concurrency must be at least 1".into()),
            Load::Concurrency(_) => {
                if let End::Count(0) = self.end {
                    return Err("count must be at least 1".into());
                }
            }
        }
        if let End::Duration(d) = self.end
            && d.is_zero()
        {
            return Err("duration must be above 0".into());
        }
        if self.mix.is_empty() {
            return Err("the phase has no URL: give url, response_bytes or a non-empty mix".into());
        }
        if let Some(w) = self.mix.iter().find(|m| !(m.weight.is_finite() && m.weight > 0.0)) {
            return Err(format!("weight {} of {} must be a number above 0", w.weight, w.url));
        }
        if let Some(n) = self.request_bytes
            && n > MAX_REQUEST_BYTES
        {
            return Err(format!(
                "request size {n} is over the Gemini limit of {MAX_REQUEST_BYTES} bytes \
                 (a 1024-byte URL and CRLF)"
            ));
        }
        Ok(())
    }

    /// The open-loop schedule of a rate phase.
    pub fn schedule(&self) -> Option<RateSchedule> {
        let Load::Rate { rate, ramp_to } = self.load else { return None };
        let to = ramp_to.unwrap_or(rate);
        Some(match self.end {
            End::Duration(d) => RateSchedule::for_duration(rate, to, d),
            End::Count(n) => RateSchedule::for_count(rate, to, n),
        })
    }

    /// Requests the phase will start, when known in advance.
    pub fn planned_count(&self) -> Option<u64> {
        match (self.load, self.end) {
            (_, End::Count(n)) => Some(n),
            (Load::Rate { .. }, End::Duration(_)) => self.schedule().map(|s| s.count()),
            (Load::Concurrency(_), End::Duration(_)) => None,
        }
    }

    /// How long the phase lasts, when known in advance.
    pub fn planned_duration(&self) -> Option<Duration> {
        match (self.load, self.end) {
            (_, End::Duration(d)) => Some(d),
            (Load::Rate { .. }, End::Count(_)) => {
                self.schedule().map(|s| Duration::from_nanos(s.duration_ns()))
            }
            (Load::Concurrency(_), End::Count(_)) => None,
        }
    }

    /// A short description, e.g. `rate 200/s for 10s` or `concurrency 4, 1000 requests`.
    pub fn describe(&self) -> String {
        let load = match self.load {
            Load::Rate { rate, ramp_to: Some(to) } => format!("rate {rate}/s ramping to {to}/s"),
            Load::Rate { rate, ramp_to: None } => format!("rate {rate}/s"),
            Load::Concurrency(n) => format!("concurrency {n}"),
        };
        let end = match self.end {
            End::Duration(d) => format!("for {:.3}s", d.as_secs_f64()),
            End::Count(n) => format!("{n} requests"),
        };
        format!("{load}, {end}")
    }
}

fn check_rate(key: &str, r: f64) -> Result<(), String> {
    if !r.is_finite() || r < 0.0 {
        return Err(format!("{key} must be a number of requests per second, 0 or more; got {r}"));
    }
    Ok(())
}

/// A URL of a phase, resolved and padded: what one request sends.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: GeminiUrl,
    /// The URL as sent, padding included.
    pub sent: String,
}

impl Plan {
    /// Checks every phase and resolves every URL against the target, padding each to its
    /// phase's request size: the requests each phase draws from, in mix order.
    pub fn requests(&self) -> Result<Vec<Vec<Request>>, String> {
        if self.phases.is_empty() {
            return Err("the plan has no phase".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        self.phases
            .iter()
            .map(|phase| {
                let in_phase = |e: String| format!("phase {:?}: {e}", phase.name);
                phase.check().map_err(in_phase)?;
                if let Load::Concurrency(n) = phase.load
                    && n as usize > self.max_in_flight
                {
                    return Err(in_phase(format!(
                        "concurrency {n} is above max_in_flight {}",
                        self.max_in_flight
                    )));
                }
                phase
                    .mix
                    .iter()
                    .map(|entry| {
                        let url = entry.url.resolve(self.target.as_ref()).map_err(in_phase)?;
                        let sent = url.padded(phase.request_bytes).map_err(in_phase)?;
                        Ok(Request { url, sent })
                    })
                    .collect()
            })
            .collect()
    }

    /// Replaces the target that paths are joined to (e.g. the address of a server just started).
    pub fn with_target(mut self, target: GeminiUrl) -> Self {
        self.target = Some(target);
        self
    }

    /// Total planned length when every phase's length is known in advance.
    pub fn planned_duration(&self) -> Option<Duration> {
        self.phases.iter().map(Phase::planned_duration).sum()
    }

    /// Total planned requests when every phase's count is known in advance.
    pub fn planned_count(&self) -> Option<u64> {
        self.phases.iter().map(Phase::planned_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(load: Load, end: End) -> Phase {
        Phase {
            name: "p".into(),
            load,
            end,
            mix: vec![MixEntry { url: UrlSpec::response_bytes(10), weight: 1.0 }],
            request_bytes: None,
        }
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn fingerprints_parse_with_colons() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_sha256(&hex).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256(&colons).unwrap(), [0xab; 32]);
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn phases_are_checked() {
        let secs = End::Duration(Duration::from_secs(1));
        assert!(phase(Load::Rate { rate: 10.0, ramp_to: None }, secs).check().is_ok());
        assert!(phase(Load::Rate { rate: 0.0, ramp_to: None }, secs).check().is_ok());
        let err = phase(Load::Rate { rate: -1.0, ramp_to: None }, secs).check().unwrap_err();
        assert!(err.contains("rate must be"), "{err}");
        let err = phase(Load::Concurrency(0), secs).check().unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = phase(Load::Rate { rate: 0.0, ramp_to: None }, End::Count(5)).check().unwrap_err();
        assert!(err.contains("above 0"), "{err}");
        let mut p = phase(Load::Concurrency(1), secs);
        p.mix.clear();
        assert!(p.check().unwrap_err().contains("no URL"));
    }

    #[test]
    fn requests_resolve_and_pad_every_entry() {
        let mut p = phase(Load::Concurrency(1), End::Count(3));
        p.request_bytes = Some(100);
        p.mix.push(MixEntry { url: UrlSpec::parse("gemini://other:9/x").unwrap(), weight: 2.0 });
        let plan = Plan {
            target: Some(GeminiUrl::parse("gemini://h:1/").unwrap()),
            phases: vec![p],
            tls: TlsSettings::default(),
            connect: None,
            timeout: DEFAULT_TIMEOUT,
            seed: 1,
            max_in_flight: 10,
            source: String::new(),
        };
        let reqs = plan.requests().unwrap();
        assert_eq!(reqs[0].len(), 2);
        assert!(reqs[0][0].sent.starts_with("gemini://h:1/_bench/bytes/10?pad="));
        assert_eq!(reqs[0][1].url.host(), "other");
        assert!(reqs[0].iter().all(|r| r.sent.len() + 2 == 100));
        let mut no_target = plan.clone();
        no_target.target = None;
        assert!(no_target.requests().unwrap_err().contains("no target"));
    }
}
