//! Fuzzes the request line: framing, URI parsing, the check against the server's names, and the
//! path's decoding, with the invariants the server relies on. Any panic is a bug: the server
//! must answer every input with a response or silence, never a crash.
//!
//! `cargo +nightly fuzz run request_parser fuzz/seeds/request_parser -- -max_total_time=60`
//! (from geminst/; new inputs go to the first corpus directory given).

#![no_main]

use geminst::serve::request::{self, Framing, Identity, MAX_REQUEST_BYTES, MAX_URI_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Framing never looks past MAX_REQUEST_BYTES and a line ends at the first CRLF.
    let line = match request::frame(data) {
        Framing::Line(end) => {
            assert!(end <= MAX_URI_BYTES);
            assert_eq!(&data[end..end + 2], b"\r\n");
            assert!(!data[..end].windows(2).any(|w| w == b"\r\n"));
            &data[..end]
        }
        Framing::TooLong => {
            assert!(data.len() >= MAX_REQUEST_BYTES);
            assert!(!data[..MAX_REQUEST_BYTES].windows(2).any(|w| w == b"\r\n"));
            return;
        }
        Framing::Incomplete => {
            assert!(data.len() < MAX_REQUEST_BYTES);
            data
        }
    };
    let Ok(url) = request::parse(line) else { return };
    // A parsed URI is UTF-8 without controls, spaces or fragments, and borrows the line.
    let text = std::str::from_utf8(line).expect("parse accepted non-UTF-8");
    assert!(!text.contains(['#', ' ', '\r', '\n', '\0']));
    assert!(!url.scheme.is_empty() && text.starts_with(url.scheme));
    if url.host.is_some() {
        assert!(url.path.is_empty() || url.path.starts_with('/'));
    }
    let identity = Identity::new(&["localhost".into(), "127.0.0.1".into(), "::1".into()], 1965);
    let _ = identity.check(&url);
    if let Some(path) = request::decode_path(url.path) {
        // No segment can climb, be empty, or hide a separator or NUL.
        for seg in &path.segments {
            assert!(!seg.is_empty() && seg != "." && seg != "..");
            assert!(!seg.contains('/') && !seg.contains('\0'));
        }
        // Encoding the segments gives a path that decodes to the same segments.
        let again = request::decode_path(&path.to_uri_path(path.dir)).expect("re-encoded path decodes");
        assert_eq!(again.segments, path.segments);
    }
});
