//! Load profiles: TOML files of phases (docs/load-profiles.md). Every error names the file, the
//! line and column, and what is wrong, from the spans the toml parser keeps.

use std::{
    fmt::Display,
    ops::Range,
    path::{Path, PathBuf},
};

use anyhow::Result;
use serde::Deserialize;
use toml::Spanned;

use super::{
    plan::{
        self, ClientCert, DEFAULT_MAX_IN_FLIGHT, DEFAULT_SEED, DEFAULT_TIMEOUT, End, Load, MixEntry, Phase,
        Plan, TlsSettings, TlsVersion, UrlSpec,
    },
    url::{GeminiUrl, MAX_REQUEST_BYTES},
};
use crate::exit::BadInput;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    defaults: Option<DefaultsDoc>,
    #[serde(default)]
    phase: Vec<Spanned<PhaseDoc>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsDoc {
    target: Option<Spanned<String>>,
    connect: Option<Spanned<String>>,
    request_bytes: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    timeout: Option<Spanned<DurationDoc>>,
    max_in_flight: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    sni: Option<Spanned<String>>,
    pin_sha256: Option<Spanned<String>>,
    resumption: Option<bool>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseDoc {
    name: Option<String>,
    duration: Option<Spanned<DurationDoc>>,
    count: Option<Spanned<i64>>,
    rate: Option<Spanned<f64>>,
    ramp_to: Option<Spanned<f64>>,
    concurrency: Option<Spanned<i64>>,
    request_bytes: Option<Spanned<i64>>,
    url: Option<Spanned<String>>,
    response_bytes: Option<Spanned<i64>>,
    mix: Option<Spanned<Vec<Spanned<MixDoc>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixDoc {
    url: Option<Spanned<String>>,
    response_bytes: Option<Spanned<i64>>,
    weight: Option<Spanned<f64>>,
}

/// A duration as written: seconds as a number, or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationDoc {
    Int(i64),
    Float(f64),
    Text(String),
}

impl DurationDoc {
    fn to_duration(&self) -> Result<std::time::Duration, String> {
        match self {
            Self::Int(n) => plan::seconds(*n as f64),
            Self::Float(f) => plan::seconds(*f),
            Self::Text(t) => plan::parse_duration(t),
        }
    }
}

impl Plan {
    /// The plan of the profile file at `path` (docs/load-profiles.md). Errors are
    /// [`BadInput`] naming the file, line and column.
    pub fn from_profile(path: &Path) -> Result<Plan> {
        read(path)
    }

    /// The plan of a profile's text; `name` is how errors refer to it, `base` the folder that
    /// relative paths in it are taken from.
    pub fn from_profile_text(text: &str, name: &str, base: &Path) -> Result<Plan> {
        parse(text, name, base)
    }
}

/// Reads the profile at `path`.
pub fn read(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("reading the profile {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), base)
}

/// Parses a profile's text; `name` is how errors refer to it, `base` the folder that relative
/// paths (client certificates) are taken from.
pub fn parse(text: &str, name: &str, base: &Path) -> Result<Plan> {
    let src = Source { text, name };
    let doc: FileDoc = toml::from_str(text).map_err(|e| src.error(e.span().unwrap_or(0..0), e.message()))?;
    let d = doc.defaults.unwrap_or_default();

    let target = match &d.target {
        Some(t) => Some(GeminiUrl::parse(t.get_ref()).map_err(|e| src.error(t.span(), e))?),
        None => None,
    };
    let default_request_bytes = d.request_bytes.as_ref().map(|n| src.request_size(n)).transpose()?;
    let tls = TlsSettings {
        version: match &d.tls {
            Some(v) => Some(TlsVersion::parse(v.get_ref()).map_err(|e| src.error(v.span(), e))?),
            None => None,
        },
        sni: d.sni.as_ref().map(|s| s.get_ref().clone()),
        pin_sha256: match &d.pin_sha256 {
            Some(p) => Some(plan::parse_sha256(p.get_ref()).map_err(|e| src.error(p.span(), e))?),
            None => None,
        },
        resumption: d.resumption.unwrap_or(false),
        client_cert: match (&d.client_cert, &d.client_key) {
            (Some(c), Some(k)) => {
                Some(ClientCert { cert: relative(base, c.get_ref()), key: relative(base, k.get_ref()) })
            }
            (None, None) => None,
            (Some(c), None) => return Err(src.error(c.span(), "client_cert needs client_key beside it")),
            (None, Some(k)) => return Err(src.error(k.span(), "client_key needs client_cert beside it")),
        },
        verify_signatures: true,
    };
    let timeout = match &d.timeout {
        Some(t) => {
            let v = t.get_ref().to_duration().map_err(|e| src.error(t.span(), e))?;
            if v.is_zero() {
                return Err(src.error(t.span(), "timeout must be above 0"));
            }
            v
        }
        None => DEFAULT_TIMEOUT,
    };
    let seed = match &d.seed {
        Some(s) if *s.get_ref() < 0 => return Err(src.error(s.span(), "seed must be 0 or more")),
        Some(s) => *s.get_ref() as u64,
        None => DEFAULT_SEED,
    };
    let max_in_flight = match &d.max_in_flight {
        Some(m) if *m.get_ref() < 1 => return Err(src.error(m.span(), "max_in_flight must be at least 1")),
        Some(m) => *m.get_ref() as usize,
        None => DEFAULT_MAX_IN_FLIGHT,
    };

    if doc.phase.is_empty() {
        return Err(src.error(0..0, "the profile has no [[phase]]"));
    }
    let phases = doc
        .phase
        .iter()
        .enumerate()
        .map(|(i, p)| src.phase(i, p, default_request_bytes, target.as_ref()))
        .collect::<Result<Vec<_>>>()?;

    Ok(Plan {
        target,
        phases,
        tls,
        connect: d.connect.map(|c| c.into_inner()),
        timeout,
        seed,
        max_in_flight,
        source: name.to_string(),
    })
}

fn relative(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

struct Source<'a> {
    text: &'a str,
    name: &'a str,
}

impl Source<'_> {
    /// A bad-input error pointing at `span`: `file:line:col: message` and the line itself.
    fn error(&self, span: Range<usize>, message: impl Display) -> anyhow::Error {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let shown = self.text.lines().nth(line - 1).unwrap_or("").trim_end();
        let message = message.to_string();
        let message = message.trim_end();
        BadInput(format!("{}:{line}:{col}: {message}\n{line:>5} | {shown}", self.name)).into()
    }

    fn size(&self, key: &str, n: &Spanned<i64>) -> Result<usize> {
        match usize::try_from(*n.get_ref()) {
            Ok(v) => Ok(v),
            Err(_) => Err(self.error(n.span(), format!("{key} must be a number of bytes, 0 or more"))),
        }
    }

    fn request_size(&self, n: &Spanned<i64>) -> Result<usize> {
        let v = self.size("request_bytes", n)?;
        if v > MAX_REQUEST_BYTES {
            return Err(self.error(
                n.span(),
                format!("request_bytes {v} is over the Gemini limit of {MAX_REQUEST_BYTES} bytes (a 1024-byte URL and CRLF)"),
            ));
        }
        Ok(v)
    }

    fn phase(
        &self,
        index: usize,
        doc: &Spanned<PhaseDoc>,
        default_request_bytes: Option<usize>,
        target: Option<&GeminiUrl>,
    ) -> Result<Phase> {
        let p = doc.get_ref();
        let name = p.name.clone().unwrap_or_else(|| format!("phase {}", index + 1));
        let here = doc.span();
        let err = |span: Range<usize>, msg: &str| self.error(span, format!("phase {name:?}: {msg}"));

        let load = match (&p.rate, &p.concurrency) {
            (Some(_), Some(c)) => return Err(err(c.span(), "give rate or concurrency, not both")),
            (None, None) => {
                return Err(err(here, "give rate (open loop, per second) or concurrency (closed loop)"));
            }
            (Some(r), None) => {
                let rate = *r.get_ref();
                if !rate.is_finite() || rate < 0.0 {
                    return Err(err(
                        r.span(),
                        &format!("rate must be 0 or more requests per second, not {rate}"),
                    ));
                }
                let ramp_to = match &p.ramp_to {
                    Some(t) if !t.get_ref().is_finite() || *t.get_ref() < 0.0 => {
                        return Err(err(t.span(), "ramp_to must be 0 or more requests per second"));
                    }
                    Some(t) => Some(*t.get_ref()),
                    None => None,
                };
                Load::Rate { rate, ramp_to }
            }
            (None, Some(c)) => {
                if let Some(t) = &p.ramp_to {
                    return Err(err(t.span(), "ramp_to ramps a rate; it does not go with concurrency"));
                }
                match u32::try_from(*c.get_ref()) {
                    Ok(n) if n >= 1 => Load::Concurrency(n),
                    _ => return Err(err(c.span(), "concurrency must be a whole number, at least 1")),
                }
            }
        };

        let end = match (&p.duration, &p.count) {
            (Some(_), Some(c)) => return Err(err(c.span(), "give duration or count, not both")),
            (None, None) => return Err(err(here, "give duration (e.g. \"10s\") or count (requests)")),
            (Some(d), None) => {
                let v = d.get_ref().to_duration().map_err(|e| err(d.span(), &e))?;
                if v.is_zero() {
                    return Err(err(d.span(), "duration must be above 0"));
                }
                End::Duration(v)
            }
            (None, Some(c)) => match u64::try_from(*c.get_ref()) {
                Ok(n) if n >= 1 => End::Count(n),
                _ => return Err(err(c.span(), "count must be a whole number, at least 1")),
            },
        };

        let request_bytes = match &p.request_bytes {
            Some(n) => Some(self.request_size(n)?),
            None => default_request_bytes,
        };

        // Where the URLs come from: exactly one of url, response_bytes and mix.
        let given: Vec<(&str, Range<usize>)> = [
            p.url.as_ref().map(|u| ("url", u.span())),
            p.response_bytes.as_ref().map(|r| ("response_bytes", r.span())),
            p.mix.as_ref().map(|m| ("mix", m.span())),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            let names: Vec<&str> = given.iter().map(|g| g.0).collect();
            return Err(err(
                given[1].1.clone(),
                &format!("give one of url, response_bytes and mix, not {}", names.join(" and ")),
            ));
        }
        let mut spans = Vec::new();
        let mix = if let Some(u) = &p.url {
            spans.push(u.span());
            vec![MixEntry { url: UrlSpec::parse(u.get_ref()).map_err(|e| err(u.span(), &e))?, weight: 1.0 }]
        } else if let Some(r) = &p.response_bytes {
            spans.push(r.span());
            let n = u64::try_from(*r.get_ref())
                .map_err(|_| err(r.span(), "response_bytes must be a number of bytes, 0 or more"))?;
            vec![MixEntry { url: UrlSpec::response_bytes(n), weight: 1.0 }]
        } else if let Some(m) = &p.mix {
            if m.get_ref().is_empty() {
                return Err(err(m.span(), "the mix is empty: give at least one [[phase.mix]] entry"));
            }
            m.get_ref()
                .iter()
                .map(|e| {
                    spans.push(e.span());
                    self.mix_entry(&name, e)
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            match target {
                Some(t) => {
                    spans.push(here.clone());
                    vec![MixEntry { url: UrlSpec::Absolute(t.clone()), weight: 1.0 }]
                }
                None => {
                    return Err(err(
                        here,
                        "give url, response_bytes or [[phase.mix]] (or a [defaults] target)",
                    ));
                }
            }
        };

        let phase = Phase { name: name.clone(), load, end, mix, request_bytes };
        phase.check().map_err(|e| err(here.clone(), &e))?;
        // Check request sizes against the URLs now when they can be resolved, so the error
        // points at the line; paths wait for the target (given later on the command line).
        for (entry, span) in phase.mix.iter().zip(&spans) {
            let Ok(url) = entry.url.resolve(target) else { continue };
            if let Err(e) = url.padded(request_bytes) {
                let at = p.request_bytes.as_ref().map_or(span.clone(), |r| r.span());
                return Err(err(at, &e));
            }
        }
        Ok(phase)
    }

    fn mix_entry(&self, phase: &str, e: &Spanned<MixDoc>) -> Result<MixEntry> {
        let m = e.get_ref();
        let err = |span: Range<usize>, msg: &str| self.error(span, format!("phase {phase:?}, mix: {msg}"));
        let url = match (&m.url, &m.response_bytes) {
            (Some(_), Some(r)) => return Err(err(r.span(), "give url or response_bytes, not both")),
            (None, None) => return Err(err(e.span(), "each mix entry needs url or response_bytes")),
            (Some(u), None) => UrlSpec::parse(u.get_ref()).map_err(|x| err(u.span(), &x))?,
            (None, Some(r)) => UrlSpec::response_bytes(
                u64::try_from(*r.get_ref())
                    .map_err(|_| err(r.span(), "response_bytes must be a number of bytes, 0 or more"))?,
            ),
        };
        let weight = match &m.weight {
            Some(w) if !(w.get_ref().is_finite() && *w.get_ref() > 0.0) => {
                return Err(err(w.span(), &format!("weight must be above 0, not {}", w.get_ref())));
            }
            Some(w) => *w.get_ref(),
            None => 1.0,
        };
        Ok(MixEntry { url, weight })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse_ok(text: &str) -> Plan {
        parse(text, "t.toml", Path::new("/base")).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn parse_err(text: &str) -> String {
        let e = parse(text, "t.toml", Path::new("/base")).unwrap_err();
        assert!(e.downcast_ref::<BadInput>().is_some(), "not bad input: {e:#}");
        format!("{e:#}")
    }

    #[test]
    fn a_full_profile_parses() {
        let plan = parse_ok(
            r#"
[defaults]
target = "gemini://localhost:1965"
request_bytes = 200
seed = 42
timeout = "5s"
tls = "1.2"
resumption = true
client_cert = "c.pem"
client_key = "k.pem"

[[phase]]
name = "warm"
duration = "2s"
rate = 10
ramp_to = 50.5

[[phase.mix]]
response_bytes = 1024
weight = 3

[[phase.mix]]
url = "/_bench/cpu/500"

[[phase]]
count = 100
concurrency = 4
url = "gemini://other/x"
request_bytes = 300
"#,
        );
        assert_eq!(plan.seed, 42);
        assert_eq!(plan.timeout, Duration::from_secs(5));
        assert_eq!(plan.tls.version, Some(TlsVersion::Tls12));
        assert!(plan.tls.resumption);
        assert_eq!(plan.tls.client_cert.as_ref().unwrap().cert, Path::new("/base/c.pem"));
        let [warm, second] = &plan.phases[..] else { panic!("two phases") };
        assert_eq!(warm.name, "warm");
        assert_eq!(warm.load, Load::Rate { rate: 10.0, ramp_to: Some(50.5) });
        assert_eq!(warm.end, End::Duration(Duration::from_secs(2)));
        assert_eq!(warm.request_bytes, Some(200));
        assert_eq!(warm.mix.len(), 2);
        assert_eq!(warm.mix[0], MixEntry { url: UrlSpec::Path("/_bench/bytes/1024".into()), weight: 3.0 });
        assert_eq!(warm.mix[1].weight, 1.0);
        assert_eq!(second.name, "phase 2");
        assert_eq!((second.load, second.end), (Load::Concurrency(4), End::Count(100)));
        assert_eq!(second.request_bytes, Some(300));
        let reqs = plan.requests().unwrap();
        assert!(reqs[0][1].sent.starts_with("gemini://localhost:1965/_bench/cpu/500?pad="));
    }

    #[test]
    fn a_phase_without_urls_uses_the_target() {
        let plan = parse_ok("[defaults]\ntarget = \"gemini://h/\"\n[[phase]]\nrate = 1\nduration = 1\n");
        assert_eq!(plan.requests().unwrap()[0][0].sent, "gemini://h/");
    }

    #[test]
    fn errors_name_line_and_problem() {
        let cases: &[(&str, &str, &str)] = &[
            ("[[phase]]\nrate = 1\nduraton = \"1s\"\n", "t.toml:3:1:", "unknown field `duraton`"),
            ("[[phase]]\nrate = -5\nduration = 1\nurl = \"/x\"\n", "t.toml:2:8:", "rate must be 0 or more"),
            (
                "[[phase]]\nduration = 1\nrate = 5\nconcurrency = 2\nurl = \"/x\"\n",
                "t.toml:4:15:",
                "not both",
            ),
            ("[[phase]]\nduration = 1\nurl = \"/x\"\n", "t.toml:1:", "give rate"),
            ("[[phase]]\nrate = 1\nurl = \"/x\"\n", "t.toml:1:", "give duration"),
            ("[[phase]]\nrate = 1\ncount = 0\nurl = \"/x\"\n", "t.toml:3:9:", "count must be"),
            (
                "[[phase]]\nrate = 1\nduration = \"1 fortnight\"\nurl = \"/x\"\n",
                "t.toml:3:",
                "not a duration",
            ),
            ("[[phase]]\nrate = 1\nduration = 1\nmix = []\n", "t.toml:4:7:", "mix is empty"),
            (
                "[[phase]]\nrate = 1\nduration = 1\n[[phase.mix]]\nurl = \"/a\"\nweight = 0\n",
                "t.toml:6:10:",
                "weight must be above 0",
            ),
            (
                "[[phase]]\nrate = 1\nduration = 1\nurl = \"/a\"\nresponse_bytes = 4\n",
                "t.toml:5:",
                "give one of url",
            ),
            ("[[phase]]\nconcurrency = 2\nramp_to = 4\nduration = 1\nurl = \"/a\"\n", "t.toml:3:", "ramp_to"),
            ("[[phase]]\nrate = \"fast\"\nduration = 1\n", "t.toml:2:8:", "invalid type"),
            ("[defaults]\ntarget = \"http://x/\"\n", "t.toml:2:10:", "not a gemini:// URL"),
            (
                "[defaults]\ntarget = \"gemini://h/\"\n[[phase]]\nrate = 1\nduration = 1\nrequest_bytes = 2000\n",
                "t.toml:6:17:",
                "over the Gemini limit of 1026",
            ),
            (
                "[defaults]\ntarget = \"gemini://h/\"\n[[phase]]\nrate = 1\nduration = 1\nrequest_bytes = 5\n",
                "t.toml:6:17:",
                "smaller than",
            ),
            ("[defaults]\ntls = \"1.1\"\n[[phase]]\n", "t.toml:2:7:", "not 1.2 or 1.3"),
            ("rate = 5\n", "t.toml:1:1:", "unknown field `rate`"),
            ("", "t.toml:1:1:", "no [[phase]]"),
            ("[[phase]\n", "t.toml:1:9:", "unclosed array table"),
        ];
        for (text, at, what) in cases {
            let e = parse_err(text);
            assert!(e.starts_with(at), "{text:?}: wanted {at}, got {e}");
            assert!(e.contains(what), "{text:?}: wanted {what:?}, got {e}");
        }
    }

    #[test]
    fn shipped_profiles_parse_and_default_is_short() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/profiles");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let plan = read(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                let plan = plan.with_target(GeminiUrl::parse("gemini://127.0.0.1:1965").unwrap());
                plan.requests().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3, "only {seen} profiles in {}", dir.display());
        let default = read(&dir.join("default.toml")).unwrap();
        let total = default.planned_duration().unwrap();
        assert!((10.0..=15.0).contains(&total.as_secs_f64()), "default lasts {total:?}");
        assert!(default.phases.len() >= 3);
        let urls: Vec<String> =
            default.phases.iter().flat_map(|p| p.mix.iter().map(|m| m.url.to_string())).collect();
        assert!(urls.iter().any(|u| u.starts_with("/_bench/bytes/")));
        assert!(urls.iter().any(|u| u.starts_with("/_bench/cpu/")));
    }
}
