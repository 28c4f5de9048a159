//! Gemini URLs as the load generator needs them: where to connect, and the exact bytes to send.
//!
//! A Gemini request is the absolute URL followed by CRLF, the URL at most 1024 bytes
//! (gemini://geminiprotocol.net/docs/protocol-specification.gmi, "Requests"). The request size is
//! set exactly by padding the URL with a query parameter; see [`pad`].

use std::fmt;

/// Longest URL a request may carry, in bytes.
pub const MAX_URL_BYTES: usize = 1024;
/// Longest request: the URL and CRLF.
pub const MAX_REQUEST_BYTES: usize = MAX_URL_BYTES + 2;
/// The port a gemini:// URL without one means.
pub const DEFAULT_PORT: u16 = 1965;

const SCHEME: &str = "gemini://";

/// A parsed `gemini://host[:port][/path][?query]` URL. The text is kept exactly as given: it is
/// what goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeminiUrl {
    text: String,
    host: String,
    port: u16,
    /// Length of `gemini://authority`, the prefix a path is joined to.
    origin_len: usize,
}

impl GeminiUrl {
    /// Parses an absolute gemini:// URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scheme_ok = text.len() >= SCHEME.len() && text[..SCHEME.len()].eq_ignore_ascii_case(SCHEME);
        if !scheme_ok {
            return Err(format!("{text:?} is not a gemini:// URL"));
        }
        if let Some(c) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("{text:?} contains {c:?}: a URL has no spaces or control characters"));
        }
        if text.contains('#') {
            return Err(format!("{text:?} has a fragment (#...), which a Gemini request never carries"));
        }
        if text.len() > MAX_URL_BYTES {
            return Err(format!(
                "the URL is {} bytes; a Gemini URL is at most {MAX_URL_BYTES} bytes",
                text.len()
            ));
        }
        let rest = &text[SCHEME.len()..];
        let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        if authority.contains('@') {
            return Err(format!("{text:?} has user information (user@host), which Gemini does not allow"));
        }
        let (host, port) = split_host_port(authority).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Self { text: text.to_string(), host, port, origin_len: SCHEME.len() + authority_len })
    }

    /// The URL for `reference`: a path starting with `/` (joined to this URL's scheme, host and
    /// port) or an absolute gemini:// URL.
    pub fn join(&self, reference: &str) -> Result<Self, String> {
        if reference.starts_with('/') {
            Self::parse(&format!("{}{reference}", &self.text[..self.origin_len]))
        } else if reference.contains("://") {
            Self::parse(reference)
        } else {
            Err(format!("{reference:?} is neither a path starting with / nor a gemini:// URL"))
        }
    }

    /// The URL as sent.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host, without the brackets of an IPv6 literal.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when the URL already has a query, so padding is added with `&`.
    pub fn has_query(&self) -> bool {
        self.text[self.origin_len..].contains('?')
    }

    /// The URL padded so that the request (URL and CRLF) is exactly `request_bytes` long, or as
    /// it is when `request_bytes` is `None`.
    pub fn padded(&self, request_bytes: Option<usize>) -> Result<String, String> {
        match request_bytes {
            None => Ok(self.text.clone()),
            Some(n) => pad(&self.text, self.has_query(), n),
        }
    }
}

impl fmt::Display for GeminiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or("an IPv6 address opened with [ is not closed with ]")?;
        let after = &v6[end + 1..];
        let port = match after {
            "" => None,
            p if p.starts_with(':') => Some(&p[1..]),
            _ => return Err(format!("unexpected {after:?} after the IPv6 address")),
        };
        (&v6[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{p:?} is not a port (1 to 65535)")),
        },
    };
    Ok((host.to_string(), port))
}

/// Pads `url` so that `url CRLF` is exactly `request_bytes` long.
///
/// The padding is one query parameter, `?pad=xxx…` (or `&pad=xxx…` when the URL has a query
/// already). When fewer than 5 bytes are missing, `pad=` does not fit and the padding is `?` (or
/// `&`) followed by up to three `x`. A server that ignores unknown query parameters, as the
/// built-in `/_bench/` routes do, serves the same resource.
pub fn pad(url: &str, has_query: bool, request_bytes: usize) -> Result<String, String> {
    let unpadded = url.len() + 2;
    if request_bytes > MAX_REQUEST_BYTES {
        return Err(format!(
            "request size {request_bytes} is over the Gemini limit of {MAX_REQUEST_BYTES} bytes \
             (a {MAX_URL_BYTES}-byte URL and CRLF)"
        ));
    }
    if request_bytes < unpadded {
        return Err(format!(
            "request size {request_bytes} is smaller than the {unpadded} bytes of {url} and CRLF unpadded"
        ));
    }
    let gap = request_bytes - unpadded;
    let sep = if has_query { '&' } else { '?' };
    let mut out = String::with_capacity(request_bytes - 2);
    out.push_str(url);
    match gap {
        0 => {}
        1..=4 => {
            out.push(sep);
            out.extend(std::iter::repeat_n('x', gap - 1));
        }
        _ => {
            out.push(sep);
            out.push_str("pad=");
            out.extend(std::iter::repeat_n('x', gap - 5));
        }
    }
    debug_assert_eq!(out.len() + 2, request_bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_defaults() {
        let u = GeminiUrl::parse("gemini://example.org/a/b?q").unwrap();
        assert_eq!((u.host(), u.port(), u.has_query()), ("example.org", 1965, true));
        let u = GeminiUrl::parse("gemini://127.0.0.1:7000").unwrap();
        assert_eq!((u.host(), u.port(), u.has_query()), ("127.0.0.1", 7000, false));
        let u = GeminiUrl::parse("GEMINI://[::1]:19/x").unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 19));
        assert_eq!(u.as_str(), "GEMINI://[::1]:19/x");
    }

    #[test]
    fn refuses_what_a_request_cannot_carry() {
        for (bad, why) in [
            ("http://x/", "not a gemini"),
            ("gemini:///path", "no host"),
            ("gemini://h:0/", "not a port"),
            ("gemini://h:99999/", "not a port"),
            ("gemini://u@h/", "user information"),
            ("gemini://h/#frag", "fragment"),
            ("gemini://h/a b", "spaces"),
            ("gemini://[::1/", "not closed"),
        ] {
            let err = GeminiUrl::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("gemini://h/{}", "a".repeat(1014));
        assert_eq!(long.len(), 1025);
        assert!(GeminiUrl::parse(&long).unwrap_err().contains("at most 1024"));
        assert!(GeminiUrl::parse(&long[..1024]).is_ok());
    }

    #[test]
    fn joins_paths_to_the_origin() {
        let t = GeminiUrl::parse("gemini://h:7/base/page?x").unwrap();
        assert_eq!(t.join("/_bench/bytes/10").unwrap().as_str(), "gemini://h:7/_bench/bytes/10");
        assert_eq!(t.join("gemini://o/").unwrap().host(), "o");
        assert!(t.join("relative").is_err());
    }

    #[test]
    fn padding_gives_every_size_exactly() {
        let url = "gemini://h/p";
        let base = url.len() + 2;
        for n in base..=MAX_REQUEST_BYTES {
            let p = pad(url, false, n).unwrap();
            assert_eq!(p.len() + 2, n);
            assert!(p.starts_with(url));
            if n >= base + 5 {
                assert!(p[url.len()..].starts_with("?pad="), "{p}");
            }
        }
        assert_eq!(pad(url, false, base).unwrap(), url);
        assert_eq!(pad(url, false, base + 1).unwrap(), "gemini://h/p?");
        assert_eq!(pad("gemini://h/p?a=1", true, 23).unwrap(), "gemini://h/p?a=1&pad=");
    }

    #[test]
    fn padding_refuses_impossible_sizes() {
        let err = pad("gemini://h/p", false, 1027).unwrap_err();
        assert!(err.contains("1026"), "{err}");
        let err = pad("gemini://h/p", false, 13).unwrap_err();
        assert!(err.contains("14 bytes"), "{err}");
    }
}
