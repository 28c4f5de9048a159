//! The request line (spec v0.16.1 §2) and the URI in it (§1.2, RFC 3986): framing, parsing, the
//! check that the URI names this server, and the decoding of its path into local segments.
//! Pure functions on bytes, with no I/O: `fuzz/fuzz_targets/request_parser.rs` drives them.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// The longest request URI (spec §2: "<URL> is a UTF-8 encoded absolute URL, including a scheme,
/// of maximum length 1024 bytes").
pub const MAX_URI_BYTES: usize = 1024;
/// The most the server ever reads of a request: the longest URI and its CRLF. A client that sent
/// this much without a CRLF sent a longer URI, and gets 59 without the server reading more.
pub const MAX_REQUEST_BYTES: usize = MAX_URI_BYTES + 2;
/// The port a `gemini` URI means when it names none (§1.2).
pub const DEFAULT_PORT: u16 = 1965;

/// Where the request line ends in what was read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A CRLF ends the URI, which is this many bytes long; what follows the CRLF is ignored
    /// (§2: servers MUST ignore anything sent after the first CRLF).
    Line(usize),
    /// No CRLF within `MAX_REQUEST_BYTES`: the URI is longer than the spec allows.
    TooLong,
    /// No CRLF yet (a bare LF does not end a request): read more.
    Incomplete,
}

/// Finds the end of the request line in `buf`.
pub fn frame(buf: &[u8]) -> Framing {
    let window = &buf[..buf.len().min(MAX_REQUEST_BYTES)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Framing::Line(end),
        None if buf.len() >= MAX_REQUEST_BYTES => Framing::TooLong,
        None => Framing::Incomplete,
    }
}

/// Why a request line is not a request the server can take (answered with 59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("empty request")]
    Empty,
    #[error("URI longer than 1024 bytes")]
    TooLong,
    #[error("request is not UTF-8")]
    NotUtf8,
    #[error("request begins with a byte order mark")]
    ByteOrderMark,
    #[error("character {0:?} is not allowed in a URI")]
    Char(char),
    #[error("malformed percent-encoding")]
    Percent,
    #[error("not an absolute URI: no scheme")]
    NoScheme,
    #[error("no authority (//host) in a gemini URI")]
    NoAuthority,
    #[error("userinfo is not allowed in a gemini URI")]
    Userinfo,
    #[error("fragments are not allowed in a request")]
    Fragment,
    #[error("missing or malformed host")]
    Host,
    #[error("malformed port")]
    Port,
}

/// The host of a URI: a registered name (as written) or an IP literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    Name(&'a str),
    Ip(IpAddr),
}

/// A parsed request URI. Components borrow the request line; the path and query are still
/// percent-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    pub scheme: &'a str,
    /// None only for URIs of other schemes without an authority (e.g. `mailto:x`).
    pub host: Option<Host<'a>>,
    /// None when absent or empty (`host:`), which RFC 3986 §6.2.3 makes the default port.
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Url<'_> {
    pub fn is_gemini(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("gemini")
    }
}

/// ASCII characters RFC 3986 allows in a URI (§2.2 reserved, §2.3 unreserved, and `%`). Others,
/// controls, space and `"<>\^`{|}` among them, make a request junk. Non-ASCII characters are
/// accepted as in IRIs (RFC 3987), since clients send them unencoded.
fn ascii_allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
}

/// Parses a request URI (the request line without its CRLF).
pub fn parse(line: &[u8]) -> Result<Url<'_>, Invalid> {
    if line.is_empty() {
        return Err(Invalid::Empty);
    }
    if line.len() > MAX_URI_BYTES {
        return Err(Invalid::TooLong);
    }
    let s = std::str::from_utf8(line).map_err(|_| Invalid::NotUtf8)?;
    // §2: "The request MUST NOT begin with a U+FEFF byte order mark."
    if s.starts_with('\u{feff}') {
        return Err(Invalid::ByteOrderMark);
    }
    if let Some(c) = s.chars().find(|&c| if c.is_ascii() { !ascii_allowed(c as u8) } else { c.is_control() })
    {
        return Err(Invalid::Char(c));
    }
    check_percent(s)?;
    // Fragments are the client's business (RFC 3986 §3.5) and newer spec text forbids sending
    // them; a request carrying one is malformed.
    if s.contains('#') {
        return Err(Invalid::Fragment);
    }
    let colon = s.find(':').ok_or(Invalid::NoScheme)?;
    let scheme = &s[..colon];
    if !valid_scheme(scheme) {
        return Err(Invalid::NoScheme);
    }
    let rest = &s[colon + 1..];
    let Some(after) = rest.strip_prefix("//") else {
        // §1.2: the authority component is required in gemini URIs.
        if scheme.eq_ignore_ascii_case("gemini") {
            return Err(Invalid::NoAuthority);
        }
        let (path, query) = split_query(rest);
        return Ok(Url { scheme, host: None, port: None, path, query });
    };
    let auth_end = after.find(['/', '?']).unwrap_or(after.len());
    let (host, port) = parse_authority(&after[..auth_end])?;
    let (path, query) = split_query(&after[auth_end..]);
    // Square brackets belong to IP literals in the authority and nowhere else (RFC 3986 §3.2.2).
    if let Some(c) = path.chars().chain(query.unwrap_or("").chars()).find(|c| matches!(c, '[' | ']')) {
        return Err(Invalid::Char(c));
    }
    Ok(Url { scheme, host: Some(host), port, path, query })
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    }
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn valid_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn check_percent(s: &str) -> Result<(), Invalid> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Err(Invalid::Percent);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// RFC 3986 §3.2: `[ userinfo "@" ] host [ ":" port ]`.
fn parse_authority(auth: &str) -> Result<(Host<'_>, Option<u16>), Invalid> {
    // §1.2: "the authority component is allowed and required, but its userinfo subcomponent is
    // NOT allowed".
    if auth.contains('@') {
        return Err(Invalid::Userinfo);
    }
    let (host, port) = if let Some(literal) = auth.strip_prefix('[') {
        let end = literal.find(']').ok_or(Invalid::Host)?;
        let ip: Ipv6Addr = literal[..end].parse().map_err(|_| Invalid::Host)?;
        let after = &literal[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(Invalid::Host),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (name, port) = match auth.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (auth, None),
        };
        if name.is_empty() || name.contains(['[', ']']) {
            return Err(Invalid::Host);
        }
        match name.parse::<Ipv4Addr>() {
            Ok(ip) => (Host::Ip(IpAddr::V4(ip)), port),
            Err(_) => (Host::Name(name), port),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u32>().ok().and_then(|n| u16::try_from(n).ok()).ok_or(Invalid::Port)?)
        }
        Some(_) => return Err(Invalid::Port),
    };
    Ok((host, port))
}

/// Why a well-formed URI is not for this server (answered with 53, "proxy request refused").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this server does not proxy other schemes")]
    Scheme,
    #[error("this server does not proxy other hosts")]
    Host,
    #[error("this server does not proxy other ports")]
    Port,
}

/// The names and port this server answers for.
#[derive(Debug, Clone)]
pub struct Identity {
    names: Vec<String>,
    ips: Vec<IpAddr>,
    port: u16,
}

impl Identity {
    /// `hostnames` are DNS names or IP addresses; `port` is the port the server listens on.
    pub fn new(hostnames: &[String], port: u16) -> Self {
        let mut names = Vec::new();
        let mut ips = Vec::new();
        for h in hostnames {
            match h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => names.push(normal_name(h).into_owned()),
            }
        }
        Self { names, ips, port }
    }

    /// Whether the URI names this server. Host names compare case-insensitively and without a
    /// final dot (RFC 3986 §3.2.2, DNS). A missing port and port 1965 are the same URI (§6.2.3),
    /// and are accepted even when listening elsewhere: a forward from 1965 is the usual reason.
    pub fn check(&self, url: &Url) -> Result<(), Refused> {
        if !url.is_gemini() {
            return Err(Refused::Scheme);
        }
        let ours = match url.host {
            Some(Host::Name(name)) => self.names.iter().any(|n| *n == normal_name(name)),
            Some(Host::Ip(ip)) => self.ips.contains(&ip),
            None => false,
        };
        if !ours {
            return Err(Refused::Host);
        }
        match url.port {
            None => Ok(()),
            Some(p) if p == self.port || p == DEFAULT_PORT => Ok(()),
            Some(_) => Err(Refused::Port),
        }
    }
}

fn normal_name(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// A URI path decoded into the segments of a local name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPath {
    /// Decoded segments, dot-segments resolved; never `.`, `..` or empty.
    pub segments: Vec<String>,
    /// The path ends like a directory: in `/`, `/.` or `/..`, or is empty.
    pub dir: bool,
}

impl LocalPath {
    /// The segments joined with `/`, without a leading slash; empty for the root.
    pub fn relative(&self) -> String {
        self.segments.join("/")
    }

    /// The path as a URI path, each segment percent-encoded, with a leading slash and, if `dir`,
    /// a trailing one.
    pub fn to_uri_path(&self, dir: bool) -> String {
        let mut out = String::from("/");
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&encode_segment(seg));
        }
        if dir && !self.segments.is_empty() {
            out.push('/');
        }
        out
    }
}

/// Decodes a URI path (percent-encoded, as in `Url::path`) into local segments. Percent-decoding
/// comes first, so `%2e%2e` is a dot-segment like `..` (RFC 3986 §6.2.2.2); dot-segments are then
/// removed as in RFC 3986 §5.2.4, which never climbs above the root. Empty segments are dropped.
/// None when a segment cannot name a file: it decodes to bytes with `/` or NUL, or to non-UTF-8.
pub fn decode_path(raw: &str) -> Option<LocalPath> {
    let mut segments: Vec<String> = Vec::new();
    let mut dir = true;
    for raw_seg in raw.split('/').skip(usize::from(raw.starts_with('/'))) {
        let seg = percent_decode(raw_seg)?;
        match seg.as_str() {
            "" | "." => dir = true,
            ".." => {
                segments.pop();
                dir = true;
            }
            _ => {
                segments.push(seg);
                dir = false;
            }
        }
    }
    Some(LocalPath { segments, dir })
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return None;
            }
            out.push(hex(b[i + 1])? << 4 | hex(b[i + 2])?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.contains(&b'/') || out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters, so the result
/// is safe as a relative link in gemtext (no spaces, no `:` that would read as a scheme).
pub fn encode_segment(seg: &str) -> Cow<'_, str> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if seg.bytes().all(unreserved) {
        return Cow::Borrowed(seg);
    }
    let mut out = String::with_capacity(seg.len() + 8);
    for b in seg.bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Url<'_> {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn framing_finds_the_first_crlf_and_caps_at_1026() {
        assert_eq!(frame(b"gemini://a/\r\n"), Framing::Line(11));
        assert_eq!(frame(b"gemini://a/\r\nmore\r\n"), Framing::Line(11));
        assert_eq!(frame(b"gemini://a/\n"), Framing::Incomplete);
        assert_eq!(frame(b"gemini://a/\r"), Framing::Incomplete);
        assert_eq!(frame(b"\r\n"), Framing::Line(0));
        let mut max = vec![b'x'; MAX_URI_BYTES];
        max.extend_from_slice(b"\r\n");
        assert_eq!(frame(&max), Framing::Line(MAX_URI_BYTES));
        let mut long = vec![b'x'; MAX_URI_BYTES + 1];
        long.push(b'\r');
        assert_eq!(frame(&long), Framing::TooLong);
        long.push(b'\n');
        assert_eq!(frame(&long), Framing::TooLong);
    }

    #[test]
    fn parses_gemini_uris() {
        let u = ok("gemini://example.org/a/b.gmi?q=1");
        assert_eq!(u.scheme, "gemini");
        assert_eq!(u.host, Some(Host::Name("example.org")));
        assert_eq!((u.port, u.path, u.query), (None, "/a/b.gmi", Some("q=1")));
        assert_eq!(ok("gemini://example.org").path, "");
        assert_eq!(ok("GEMINI://h:1965/").port, Some(1965));
        assert_eq!(ok("gemini://h:/").port, None);
        assert_eq!(ok("gemini://127.0.0.1/").host, Some(Host::Ip("127.0.0.1".parse().unwrap())));
        assert_eq!(ok("gemini://[::1]:7/").host, Some(Host::Ip("::1".parse().unwrap())));
        assert_eq!(ok("gemini://[::1]:7/").port, Some(7));
        assert_eq!(ok("gemini://h/caf\u{e9}").path, "/caf\u{e9}");
        assert_eq!(ok("https://h/").scheme, "https");
        assert_eq!(ok("mailto:x@y").host, None);
        assert_eq!(ok("gemini://h?q").query, Some("q"));
    }

    #[test]
    fn rejects_malformed_requests() {
        let cases: &[(&[u8], Invalid)] = &[
            (b"", Invalid::Empty),
            (b"/index.gmi", Invalid::NoScheme),
            (b"example.org/", Invalid::NoScheme),
            (b"//example.org/", Invalid::NoScheme),
            (b"1gemini://h/", Invalid::NoScheme),
            (b"gemini:/h/", Invalid::NoAuthority),
            (b"gemini://u@h/", Invalid::Userinfo),
            (b"gemini://h/#f", Invalid::Fragment),
            (b"gemini://h/\xff", Invalid::NotUtf8),
            (b"\xef\xbb\xbfgemini://h/", Invalid::ByteOrderMark),
            (b"gemini://h/a b", Invalid::Char(' ')),
            (b"gemini://h/a\nb", Invalid::Char('\n')),
            (b"gemini://h/a\rb", Invalid::Char('\r')),
            (b"gemini://h/\x00", Invalid::Char('\0')),
            (b"gemini://h/<", Invalid::Char('<')),
            (b"gemini://h/[x]", Invalid::Char('[')),
            (b"gemini://h/%zz", Invalid::Percent),
            (b"gemini://h/%4", Invalid::Percent),
            (b"gemini://h/%", Invalid::Percent),
            (b"gemini:///p", Invalid::Host),
            (b"gemini://[::1/", Invalid::Host),
            (b"gemini://[nope]/", Invalid::Host),
            (b"gemini://[::1]x/", Invalid::Host),
            (b"gemini://h:65536/", Invalid::Port),
            (b"gemini://h:12a/", Invalid::Port),
            (b"gemini://h:123456/", Invalid::Port),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Err(*want), "{:?}", String::from_utf8_lossy(line));
        }
        let long = format!("gemini://h/{}", "x".repeat(MAX_URI_BYTES));
        assert_eq!(parse(long.as_bytes()), Err(Invalid::TooLong));
    }

    #[test]
    fn identity_refuses_other_schemes_hosts_and_ports() {
        let id = Identity::new(&["localhost".into(), "127.0.0.1".into(), "::1".into()], 4000);
        assert_eq!(id.check(&ok("gemini://localhost/")), Ok(()));
        assert_eq!(id.check(&ok("gemini://LocalHost.:4000/")), Ok(()));
        assert_eq!(id.check(&ok("gemini://localhost:1965/")), Ok(()));
        assert_eq!(id.check(&ok("gemini://127.0.0.1:4000/")), Ok(()));
        assert_eq!(id.check(&ok("gemini://[::1]:4000/")), Ok(()));
        assert_eq!(id.check(&ok("gemini://example.org/")), Err(Refused::Host));
        assert_eq!(id.check(&ok("gemini://127.0.0.2/")), Err(Refused::Host));
        assert_eq!(id.check(&ok("gemini://localhost:4001/")), Err(Refused::Port));
        assert_eq!(id.check(&ok("https://localhost:4000/")), Err(Refused::Scheme));
        assert_eq!(id.check(&ok("gopher:x")), Err(Refused::Scheme));
    }

    #[test]
    fn paths_decode_and_never_climb_above_the_root() {
        let p = |s: &str| decode_path(s).map(|p| (p.relative(), p.dir));
        assert_eq!(p(""), Some((String::new(), true)));
        assert_eq!(p("/"), Some((String::new(), true)));
        assert_eq!(p("/a/b.gmi"), Some(("a/b.gmi".into(), false)));
        assert_eq!(p("/a/"), Some(("a".into(), true)));
        assert_eq!(p("/a//b"), Some(("a/b".into(), false)));
        assert_eq!(p("/../../etc/passwd"), Some(("etc/passwd".into(), false)));
        assert_eq!(p("/%2e%2e/%2E%2E/etc"), Some(("etc".into(), false)));
        assert_eq!(p("/a/b/.."), Some(("a".into(), true)));
        assert_eq!(p("/a/./b"), Some(("a/b".into(), false)));
        assert_eq!(p("/hello%20world.txt"), Some(("hello world.txt".into(), false)));
        assert_eq!(p("/caf%C3%A9"), Some(("caf\u{e9}".into(), false)));
        assert_eq!(p("/a%2Fb"), None);
        assert_eq!(p("/a%00"), None);
        assert_eq!(p("/%ff"), None);
    }

    #[test]
    fn segments_encode_to_what_decodes_back() {
        for s in ["plain.gmi", "hello world.txt", "caf\u{e9}", "a:b", "100%", "?#"] {
            let enc = encode_segment(s);
            assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{enc}");
            assert_eq!(decode_path(&format!("/{enc}")).unwrap().segments, vec![s.to_string()]);
        }
        let p = LocalPath { segments: vec!["a b".into(), "c".into()], dir: true };
        assert_eq!(p.to_uri_path(true), "/a%20b/c/");
        assert_eq!(LocalPath { segments: vec![], dir: true }.to_uri_path(true), "/");
    }
}
