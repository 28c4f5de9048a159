//! The end of a run: the summary (rates, latency and start-lag percentiles from an HDR
//! histogram, counts by status and by error, bytes), as text or JSON, and the exit status.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, process::ExitCode};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{plan::Plan, record::Record};

/// Highest value the histograms hold: an hour in ns, far past any timeout.
const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Significant digits kept: values are exact to 0.1%.
const HIST_DIGITS: u8 = 3;

/// Everything a run produced: one record per request, in `seq` order, and the summary.
#[derive(Debug)]
pub struct LoadReport {
    pub records: Vec<Record>,
    pub summary: Summary,
    /// Names of the plan's phases, by index (`Record::phase`).
    pub phase_names: Vec<String>,
}

impl LoadReport {
    /// One Parquet row per request (columns in docs/load-profiles.md).
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        super::record::write_parquet(&self.records, &self.phase_names, path)
    }

    /// True when every request got a 2x or 3x response and none failed.
    pub fn all_ok(&self) -> bool {
        self.records.iter().all(Record::ok)
    }

    /// 0 when every request succeeded (see [`all_ok`](Self::all_ok)), 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        if self.all_ok() { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::FAILURE) }
    }
}

/// Facts about the run that the records do not hold.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub started_unix_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub stopped_early: bool,
    pub max_in_flight: usize,
    pub threads: usize,
    pub server_cert_sha256: Option<String>,
}

/// Percentiles of a set of ns values. Percentiles come from the HDR histogram (within 0.1%),
/// `max_ns` is exact.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    pub fn of(values: impl IntoIterator<Item = u64>) -> Option<Self> {
        let mut h =
            Histogram::<u64>::new_with_bounds(1, HIST_MAX_NS, HIST_DIGITS).expect("valid histogram bounds");
        let mut max = 0;
        for v in values {
            // Values of 0 ns (a start on time to the ns) go in the lowest bucket.
            h.saturating_record(v.max(1));
            max = max.max(v);
        }
        if h.is_empty() {
            return None;
        }
        let q = |q: f64| h.value_at_quantile(q).min(max);
        Some(Self {
            count: h.len(),
            mean_ns: h.mean(),
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: max,
        })
    }
}

/// How many requests got how far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Requests whose time came (open loop) or that a connection began (closed loop).
    pub scheduled: u64,
    /// Requests that started (all but those refused for overload).
    pub started: u64,
    /// Requests that got a whole response, whatever its status.
    pub completed: u64,
    /// Completed with a 2x or 3x status.
    pub ok: u64,
    /// Not ok: transport errors, overload, and statuses other than 2x and 3x.
    pub failed: u64,
}

/// Bytes moved, summed over requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bytes {
    pub request: u64,
    pub response_header: u64,
    pub response_body: u64,
    pub tcp_sent: u64,
    pub tcp_received: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub name: String,
    pub description: String,
    /// CLOCK_MONOTONIC ns of the phase's origin; `None` if the run stopped before it.
    pub start_ns: Option<u64>,
    pub requests: Counts,
    /// Rate of the schedule: (n − 1) / (last scheduled − first scheduled), per second.
    pub offered_rate: Option<f64>,
    /// Rate at which requests really started: the offered rate divided by the least-squares
    /// slope of start times against scheduled times (1 when the client kept pace), so a few late
    /// starts (which `start_lag` shows) do not swing it, while falling steadily behind does.
    pub achieved_rate: Option<f64>,
    pub latency: Option<Percentiles>,
    pub start_lag: Option<Percentiles>,
}

/// The summary of a run; `geminst load --json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub source: String,
    pub started_unix_ns: u64,
    /// CLOCK_MONOTONIC ns of the run's start (the first phase's origin) and end (last response).
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_s: f64,
    pub stopped_early: bool,
    pub max_in_flight: usize,
    pub threads: usize,
    pub requests: Counts,
    pub offered_rate: Option<f64>,
    /// As in [`PhaseSummary::achieved_rate`], over the whole run.
    pub achieved_rate: Option<f64>,
    /// Completed requests per second over the whole run.
    pub completed_rate: f64,
    /// From the scheduled start to the last byte, over completed requests.
    pub latency: Option<Percentiles>,
    /// From the scheduled start to the actual start, over started requests.
    pub start_lag: Option<Percentiles>,
    pub by_status: BTreeMap<String, u64>,
    pub by_error: BTreeMap<String, u64>,
    pub tls_versions: BTreeMap<String, u64>,
    pub tls_resumed: u64,
    pub bytes: Bytes,
    pub server_cert_sha256: Option<String>,
    pub phases: Vec<PhaseSummary>,
}

fn counts<'a>(records: impl Iterator<Item = &'a Record>) -> Counts {
    let mut c = Counts::default();
    for r in records {
        c.scheduled += 1;
        c.started += u64::from(r.start_ns.is_some());
        c.completed += u64::from(r.completed());
        c.ok += u64::from(r.ok());
    }
    c.failed = c.scheduled - c.ok;
    c
}

/// (n − 1) / (last − first) in per-second units, for n ≥ 2 distinct times.
fn rate(times: impl Iterator<Item = u64>) -> Option<f64> {
    let (mut n, mut first, mut last) = (0u64, u64::MAX, 0u64);
    for t in times {
        n += 1;
        first = first.min(t);
        last = last.max(t);
    }
    (n >= 2 && last > first).then(|| (n - 1) as f64 * 1e9 / (last - first) as f64)
}

/// The offered rate over the slope of start against scheduled time, over started requests.
fn achieved<'a>(records: impl Iterator<Item = &'a Record> + Clone) -> Option<f64> {
    let offered = rate(records.clone().filter(|r| r.start_ns.is_some()).map(|r| r.scheduled_ns))?;
    let points: Vec<(f64, f64)> =
        records.filter_map(|r| r.start_ns.map(|s| (r.scheduled_ns as f64, s as f64))).collect();
    let slope = slope(&points)?;
    (slope > 0.0).then(|| offered / slope)
}

/// Least-squares slope of y on x, computed about the first point to keep the sums small.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let &(x0, y0) = points.first()?;
    let n = points.len() as f64;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for &(x, y) in points {
        let (x, y) = (x - x0, y - y0);
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    let den = n * sxx - sx * sx;
    (den > 0.0).then(|| (n * sxy - sx * sy) / den)
}

fn latency<'a>(records: impl Iterator<Item = &'a Record>) -> Option<Percentiles> {
    Percentiles::of(records.filter(|r| r.completed()).filter_map(Record::latency_ns))
}

fn start_lag<'a>(records: impl Iterator<Item = &'a Record>) -> Option<Percentiles> {
    Percentiles::of(records.filter_map(Record::start_lag_ns))
}

impl Summary {
    pub fn new(records: &[Record], plan: &Plan, phase_starts: &[u64], facts: RunFacts) -> Self {
        let mut by_status = BTreeMap::new();
        let mut by_error = BTreeMap::new();
        let mut tls_versions = BTreeMap::new();
        let mut bytes = Bytes::default();
        let mut tls_resumed = 0;
        for r in records {
            if let Some(s) = r.status {
                *by_status.entry(format!("{s:02}")).or_insert(0) += 1;
            }
            if let Some(k) = r.error_kind() {
                *by_error.entry(k.as_str().to_string()).or_insert(0) += 1;
            }
            if let Some(v) = r.tls_version {
                *tls_versions.entry(v.as_str().to_string()).or_insert(0) += 1;
            }
            tls_resumed += u64::from(r.tls_resumed == Some(true));
            bytes.request += r.request_bytes;
            bytes.response_header += r.response_header_bytes;
            bytes.response_body += r.response_body_bytes;
            bytes.tcp_sent += r.tcp_bytes_sent;
            bytes.tcp_received += r.tcp_bytes_received;
        }
        let phases = plan
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let of_phase = || records.iter().filter(move |r| r.phase == i);
                PhaseSummary {
                    name: p.name.clone(),
                    description: p.describe(),
                    start_ns: phase_starts.get(i).copied(),
                    requests: counts(of_phase()),
                    offered_rate: rate(of_phase().map(|r| r.scheduled_ns)),
                    achieved_rate: achieved(of_phase()),
                    latency: latency(of_phase()),
                    start_lag: start_lag(of_phase()),
                }
            })
            .collect();
        let duration_s = facts.end_ns.saturating_sub(facts.start_ns) as f64 / 1e9;
        let requests = counts(records.iter());
        Self {
            source: plan.source.clone(),
            started_unix_ns: facts.started_unix_ns,
            start_ns: facts.start_ns,
            end_ns: facts.end_ns,
            duration_s,
            stopped_early: facts.stopped_early,
            max_in_flight: facts.max_in_flight,
            threads: facts.threads,
            completed_rate: if duration_s > 0.0 { requests.completed as f64 / duration_s } else { 0.0 },
            requests,
            offered_rate: rate(records.iter().map(|r| r.scheduled_ns)),
            achieved_rate: achieved(records.iter()),
            latency: latency(records.iter()),
            start_lag: start_lag(records.iter()),
            by_status,
            by_error,
            tls_versions,
            tls_resumed,
            bytes,
            server_cert_sha256: facts.server_cert_sha256,
            phases,
        }
    }

    /// The summary for people.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let r = &self.requests;
        let _ = writeln!(
            o,
            "geminst load: {} requests in {:.3} s from {}{}",
            r.scheduled,
            self.duration_s,
            self.source,
            if self.stopped_early { " (stopped early)" } else { "" }
        );
        let _ = writeln!(
            o,
            "  requests   {} started, {} completed, {} ok (2x/3x), {} failed",
            r.started, r.completed, r.ok, r.failed
        );
        let _ = writeln!(
            o,
            "  rate       offered {}  achieved {}  completed {:.1}/s",
            per_s(self.offered_rate),
            per_s(self.achieved_rate),
            self.completed_rate
        );
        let _ = writeln!(o, "  start lag  {}", pcts(self.start_lag.as_ref()));
        let _ = writeln!(o, "  latency    {}  (from the scheduled start)", pcts(self.latency.as_ref()));
        let _ = writeln!(o, "  status     {}", map(&self.by_status));
        let _ = writeln!(o, "  errors     {}", map(&self.by_error));
        let b = &self.bytes;
        let _ = writeln!(
            o,
            "  bytes      requests {}, response headers {}, bodies {}; TCP sent {}, received {}",
            b.request, b.response_header, b.response_body, b.tcp_sent, b.tcp_received
        );
        let _ = writeln!(o, "  tls        {}, {} resumed", map(&self.tls_versions), self.tls_resumed);
        if let Some(fp) = &self.server_cert_sha256 {
            let _ = writeln!(o, "  server     certificate sha256 {fp}");
        }
        if self.phases.len() > 1 {
            for p in &self.phases {
                let lat = p.latency.as_ref();
                let _ = writeln!(
                    o,
                    "  phase {:?} ({}): {} requests, {} failed, achieved {}, latency p50 {} p99 {}, start lag p99 {}",
                    p.name,
                    p.description,
                    p.requests.scheduled,
                    p.requests.failed,
                    per_s(p.achieved_rate),
                    ns(lat.map(|l| l.p50_ns)),
                    ns(lat.map(|l| l.p99_ns)),
                    ns(p.start_lag.as_ref().map(|l| l.p99_ns)),
                );
            }
        }
        o
    }
}

fn per_s(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.1}/s"))
}

/// A duration in ns for people: µs below a millisecond, ms below a second, else s.
pub fn ns(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 1_000_000 => format!("{:.1} µs", v as f64 / 1e3),
        Some(v) if v < 1_000_000_000 => format!("{:.2} ms", v as f64 / 1e6),
        Some(v) => format!("{:.3} s", v as f64 / 1e9),
    }
}

fn pcts(p: Option<&Percentiles>) -> String {
    match p {
        None => "-".into(),
        Some(p) => format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ns(Some(p.p50_ns)),
            ns(Some(p.p90_ns)),
            ns(Some(p.p99_ns)),
            ns(Some(p.p999_ns)),
            ns(Some(p.max_ns))
        ),
    }
}

fn map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_close_and_max_exact() {
        let p = Percentiles::of((1..=10_000u64).map(|v| v * 1000)).unwrap();
        assert_eq!(p.count, 10_000);
        assert_eq!(p.max_ns, 10_000_000);
        for (got, want) in [(p.p50_ns, 5_000_000), (p.p99_ns, 9_900_000), (p.p999_ns, 9_990_000)] {
            assert!((got as f64 - want as f64).abs() / (want as f64) < 0.001, "{got} vs {want}");
        }
        assert!(Percentiles::of(std::iter::empty()).is_none());
        assert_eq!(Percentiles::of([0, 0]).unwrap().max_ns, 0);
    }

    #[test]
    fn achieved_rate_follows_the_trend_not_one_late_start() {
        let rec = |i: u64, lag: u64| {
            let mut r = Record::new(i, 0, "u".into(), i * 5_000_000, "127.0.0.1:1".parse().unwrap());
            r.start_ns = Some(i * 5_000_000 + lag);
            r
        };
        // On time but for the last request, 60 ms late: still 200/s.
        let recs: Vec<Record> =
            (0..800).map(|i| rec(i, if i == 799 { 60_000_000 } else { 50_000 })).collect();
        let a = achieved(recs.iter()).unwrap();
        assert!((a - 200.0).abs() < 0.2, "{a}");
        // Falling behind steadily, each start 1% later than the last: 1% slower.
        let recs: Vec<Record> = (0..800).map(|i| rec(i, i * 50_000)).collect();
        let a = achieved(recs.iter()).unwrap();
        assert!((a - 200.0 / 1.01).abs() < 0.01, "{a}");
    }

    #[test]
    fn rates_span_first_to_last() {
        assert_eq!(rate([0u64, 5_000_000, 10_000_000].into_iter()), Some(200.0));
        assert_eq!(rate([7u64].into_iter()), None);
    }
}
