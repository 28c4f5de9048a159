//! Experiment routes, served only with `--bench-routes`, each with an exactly known cost:
//!
//! - `/_bench/bytes/N`: a body of exactly N bytes (0..=64 MiB) of the deterministic pattern
//!   below, made in memory (no file I/O).
//! - `/_bench/cpu/US`: burns US microseconds (0..=10 s) of the serving thread's CPU time, measured
//!   with CLOCK_THREAD_CPUTIME_ID, then answers `cpu US us` and a newline: the ground truth for
//!   CPU attribution.
//! - `/_bench/read/N`: reads the first N bytes of a data file in the state directory with
//!   ordinary 64 KiB `read` calls, and answers them. The file holds the same pattern, so the body
//!   equals `/_bench/bytes/N`; N is at most the file's size (`--bench-read-size`).
//!
//! The query string is ignored, so a load generator can pad requests to exact sizes. A number
//! out of range or not a plain decimal is a bad request (59); an unknown route is not found (51).

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::{content::Body, response::Response};
use crate::clock;

/// The largest `/_bench/bytes/N`.
pub const MAX_BYTES: u64 = 64 << 20;
/// The largest `/_bench/cpu/US`.
pub const MAX_CPU_US: u64 = 10_000_000;
/// The default size of the `/_bench/read` data file.
pub const DEFAULT_READ_SIZE: u64 = 64 << 20;
/// The pattern every bench body repeats: byte i of a body is `PATTERN[i % 64]`.
pub const PATTERN: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.\n";
/// The MIME type of bench bodies (the pattern is lines of ASCII).
pub const MIME: &str = "text/plain";

/// A block of the pattern, so bodies are written without being built.
pub static BLOCK: [u8; 64 * 1024] = {
    let mut b = [0u8; 64 * 1024];
    let mut i = 0;
    while i < b.len() {
        b[i] = PATTERN[i % 64];
        i += 1;
    }
    b
};

/// The bench routes of one server: where the read route's data file is and how big.
#[derive(Debug, Clone)]
pub struct BenchRoutes {
    read_file: PathBuf,
    read_size: u64,
}

impl BenchRoutes {
    /// Makes sure the data file exists with `read_size` bytes of the pattern (created once; kept
    /// while its size is right).
    pub fn prepare(state_dir: &Path, read_size: u64) -> Result<Self> {
        let read_file = state_dir.join("bench-read.dat");
        let current = fs::metadata(&read_file).map(|m| m.len()).ok();
        if current != Some(read_size) {
            crate::dataset::files::write_atomic_with(&read_file, |file| {
                let mut left = read_size;
                let mut out = io::BufWriter::new(file);
                while left > 0 {
                    let n = left.min(BLOCK.len() as u64) as usize;
                    out.write_all(&BLOCK[..n])?;
                    left -= n as u64;
                }
                out.flush()?;
                Ok(())
            })
            .with_context(|| format!("creating the bench data file {}", read_file.display()))?;
        }
        Ok(Self { read_file, read_size })
    }

    /// Answers `/_bench/<segments>`.
    pub fn handle(&self, segments: &[String]) -> Response {
        let [route, arg] = segments else { return Response::not_found() };
        match route.as_str() {
            "bytes" => match number(arg, MAX_BYTES) {
                Some(n) => Response::success(MIME, Body::Pattern(n)),
                None => Response::bad_request(format!("N must be a decimal from 0 to {MAX_BYTES}")),
            },
            "cpu" => match number(arg, MAX_CPU_US) {
                Some(us) => {
                    burn_cpu_ns(us * 1000);
                    Response::success(MIME, Body::Bytes(format!("cpu {us} us\n").into_bytes()))
                }
                None => Response::bad_request(format!("US must be a decimal from 0 to {MAX_CPU_US}")),
            },
            "read" => match number(arg, self.read_size) {
                Some(n) => match fs::File::open(&self.read_file) {
                    Ok(file) => Response::success(MIME, Body::File { file, len: n }),
                    Err(e) => {
                        Response::temporary_failure(format!("opening {}: {e}", self.read_file.display()))
                    }
                },
                None => Response::bad_request(format!("N must be a decimal from 0 to {}", self.read_size)),
            },
            _ => Response::not_found(),
        }
    }
}

/// A plain decimal (no sign, at most 20 digits) no larger than `max`.
fn number(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= max)
}

/// Spins until the calling thread has used `ns` more CPU time. The clock is read every few
/// hundred multiplications, so the overshoot is well under a microsecond plus one clock read.
pub fn burn_cpu_ns(ns: u64) {
    let end = clock::thread_cpu_ns() + ns;
    let mut x = 1u64;
    while clock::thread_cpu_ns() < end {
        for _ in 0..256 {
            x = std::hint::black_box(
                x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimals_in_range() {
        assert_eq!(number("0", 5), Some(0));
        assert_eq!(number("5", 5), Some(5));
        assert_eq!(number("6", 5), None);
        assert_eq!(number("+5", 5), None);
        assert_eq!(number("-1", 5), None);
        assert_eq!(number("", 5), None);
        assert_eq!(number("99999999999999999999999", u64::MAX), None);
        assert_eq!(number("18446744073709551615", u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn the_block_repeats_the_pattern() {
        assert_eq!(&BLOCK[..64], PATTERN);
        assert_eq!(&BLOCK[64 * 1023..], PATTERN);
    }

    #[test]
    fn burning_uses_at_least_the_asked_cpu() {
        let before = clock::thread_cpu_ns();
        burn_cpu_ns(2_000_000);
        let used = clock::thread_cpu_ns() - before;
        assert!((2_000_000..20_000_000).contains(&used), "{used}");
    }
}
