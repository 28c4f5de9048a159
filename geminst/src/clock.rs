//! Clocks. Every time geminst records is CLOCK_MONOTONIC ns, the clock of bpf_ktime_get_ns, so the
//! server's log, the tracer's maps and the capture line up without conversion; wall-clock (Unix)
//! ns are recorded beside them where a human needs a date.

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write into; the clocks used here always exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Wall-clock time in ns since the Unix epoch.
pub fn unix_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// CPU time consumed by the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The UTC date and time of `unix_ns` (the `time` crate does the calendar).
fn utc(unix_ns: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .expect("a u64 of ns since 1970 is within time's range")
}

/// RFC 3339 UTC time with nanoseconds, e.g. `2026-11-22T02:45:01.123456789Z`.
pub fn rfc3339(unix_ns: u64) -> String {
    let t = utc(unix_ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Compact UTC stamp for folder names, e.g. `20261122T024501Z`.
pub fn stamp(unix_ns: u64) -> String {
    let t = utc(unix_ns);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56 UTC.
        assert_eq!(rfc3339(951_827_696_000_000_007), "2000-02-29T12:34:56.000000007Z");
        // 2026-11-22 02:45:01 UTC.
        assert_eq!(stamp(1_795_315_501_000_000_000), "20261122T024501Z");
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
