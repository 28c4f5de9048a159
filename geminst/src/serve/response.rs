//! A response: status, META and body (spec v0.16.1 §3), with the header's exact bytes.

use super::{content::Body, request::MAX_URI_BYTES, status::Status};

/// The longest META (§3.1: "<META> is a UTF-8 encoded string of maximum length 1024 bytes").
pub const MAX_META_BYTES: usize = 1024;

#[derive(Debug)]
pub struct Response {
    pub status: Status,
    /// Never empty, never with CR or LF, at most `MAX_META_BYTES`.
    pub meta: String,
    /// Empty unless the status is 2x.
    pub body: Body,
    /// What went wrong on the server side, for the log only (never sent to the client).
    pub error: Option<String>,
}

impl Response {
    fn header_only(status: Status, meta: String) -> Self {
        debug_assert!(!status.has_body());
        Self { status, meta, body: Body::Empty, error: None }
    }

    pub fn success(mime: &str, body: Body) -> Self {
        Self { status: Status::SUCCESS, meta: mime.to_owned(), body, error: None }
    }

    /// 31 to `target` (a URI reference), or 51 if it would not fit in META.
    pub fn redirect_permanent(target: String) -> Self {
        if target.len() > MAX_META_BYTES.min(MAX_URI_BYTES) {
            return Self::not_found();
        }
        Self::header_only(Status::REDIRECT_PERMANENT, target)
    }

    pub fn not_found() -> Self {
        Self::header_only(Status::NOT_FOUND, "Not found".to_owned())
    }

    pub fn bad_request(reason: impl std::fmt::Display) -> Self {
        Self::header_only(Status::BAD_REQUEST, format!("Bad request: {reason}"))
    }

    pub fn proxy_refused(reason: impl std::fmt::Display) -> Self {
        Self::header_only(Status::PROXY_REQUEST_REFUSED, format!("Proxy request refused: {reason}"))
    }

    /// 40, with the detail kept for the log.
    pub fn temporary_failure(detail: String) -> Self {
        let mut r = Self::header_only(Status::TEMPORARY_FAILURE, "Temporary failure".to_owned());
        r.error = Some(detail);
        r
    }

    /// The header line: `NN SP META CRLF`, one space, no byte order mark (§3.1).
    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(self.meta.len() + 5);
        h.extend_from_slice(&self.status.digits());
        h.push(b' ');
        h.extend_from_slice(self.meta.as_bytes());
        h.extend_from_slice(b"\r\n");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_two_digits_a_space_meta_and_crlf() {
        assert_eq!(Response::not_found().header(), b"51 Not found\r\n");
        assert_eq!(Response::success("text/gemini", Body::Empty).header(), b"20 text/gemini\r\n");
        assert_eq!(Response::redirect_permanent("/sub/".into()).header(), b"31 /sub/\r\n");
        let long = Response::redirect_permanent(format!("/{}/", "a".repeat(1023)));
        assert_eq!(long.status, Status::NOT_FOUND);
    }
}
