//! The open-loop schedule: when each request of a rate phase is due.
//!
//! Every start time is computed from the phase's origin and the request's index, never by adding
//! an interval to the previous time, so rounding cannot accumulate into drift and a late start
//! does not push the ones after it (wrk2 keeps its schedule the same way).

use std::time::Duration;

const NS_PER_S: f64 = 1e9;

/// The start offsets of one rate phase: constant, or ramping linearly from `from` to `to`
/// requests per second over the phase.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSchedule {
    from: f64,
    to: f64,
    duration_s: f64,
    count: u64,
}

impl RateSchedule {
    /// A phase that lasts `duration`; the requests are those due before its end.
    pub fn for_duration(from: f64, to: f64, duration: Duration) -> Self {
        let mut s = Self { from, to, duration_s: duration.as_secs_f64(), count: 0 };
        // The expected number is the area under the rate; the exact one is fixed by the offsets
        // themselves, so that `count` and `offset_ns` never disagree at the edge.
        let area = (from + to) / 2.0 * s.duration_s;
        let mut n = area.ceil().max(0.0) as u64;
        while n > 0 && s.raw_offset_s(n - 1).is_none_or(|t| t >= s.duration_s) {
            n -= 1;
        }
        while s.raw_offset_s(n).is_some_and(|t| t < s.duration_s) {
            n += 1;
        }
        s.count = n;
        s
    }

    /// A phase of exactly `count` requests; it lasts as long as that many take at the rate (for
    /// a ramp, the duration whose area under the rate is `count`).
    pub fn for_count(from: f64, to: f64, count: u64) -> Self {
        let duration_s = if from + to > 0.0 { 2.0 * count as f64 / (from + to) } else { 0.0 };
        Self { from, to, duration_s, count }
    }

    /// Number of requests in the phase.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Length of the phase in ns: the next phase's origin is this phase's origin plus this.
    pub fn duration_ns(&self) -> u64 {
        (self.duration_s * NS_PER_S).round() as u64
    }

    /// Offset of request `i` (from 0) from the phase origin, or `None` past the last one.
    pub fn offset_ns(&self, i: u64) -> Option<u64> {
        if i >= self.count {
            return None;
        }
        self.raw_offset_s(i).map(|t| (t * NS_PER_S).round() as u64)
    }

    /// The time t at which the cumulative count N(t) = from·t + (to−from)·t²/(2T) reaches `i`.
    fn raw_offset_s(&self, i: u64) -> Option<f64> {
        let i = i as f64;
        let b = self.from;
        if self.duration_s <= 0.0 {
            return None;
        }
        let a = (self.to - self.from) / (2.0 * self.duration_s);
        if a == 0.0 {
            return if b > 0.0 { Some(i / b) } else { None };
        }
        // Solve a·t² + b·t − i = 0 in the form that stays exact when a is small or b is 0.
        let disc = b * b + 4.0 * a * i;
        if disc < 0.0 {
            return None;
        }
        let denom = b + disc.sqrt();
        if denom <= 0.0 { if i == 0.0 { Some(0.0) } else { None } } else { Some(2.0 * i / denom) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_is_exact_and_does_not_drift() {
        let s = RateSchedule::for_duration(200.0, 200.0, Duration::from_secs(4));
        assert_eq!(s.count(), 800);
        assert_eq!(s.duration_ns(), 4_000_000_000);
        for i in 0..800 {
            assert_eq!(s.offset_ns(i), Some(i * 5_000_000));
        }
        assert_eq!(s.offset_ns(800), None);
        // A rate whose interval is not a whole number of ns: the millionth request is still due
        // at exactly a million thirds of a second, rounded once.
        let s = RateSchedule::for_duration(3.0, 3.0, Duration::from_secs(400_000));
        assert_eq!(s.offset_ns(999_999), Some(333_333_000_000_000));
        assert_eq!(s.offset_ns(1_000_000 - 2), Some(333_332_666_666_667));
    }

    #[test]
    fn fractional_rates_count_requests_due_before_the_end() {
        let s = RateSchedule::for_duration(2.5, 2.5, Duration::from_secs(1));
        // Due at 0, 0.4, 0.8 s.
        assert_eq!(s.count(), 3);
        let s = RateSchedule::for_duration(0.0, 0.0, Duration::from_secs(5));
        assert_eq!((s.count(), s.duration_ns()), (0, 5_000_000_000));
    }

    #[test]
    fn count_phases_last_as_long_as_the_count_takes() {
        let s = RateSchedule::for_count(500.0, 500.0, 1000);
        assert_eq!((s.count(), s.duration_ns()), (1000, 2_000_000_000));
        assert_eq!(s.offset_ns(999), Some(1_998_000_000));
        let s = RateSchedule::for_count(100.0, 300.0, 400);
        assert_eq!(s.duration_ns(), 2_000_000_000);
        assert_eq!(s.count(), 400);
    }

    #[test]
    fn ramps_follow_the_integral_of_the_rate() {
        // 100/s to 300/s over 10 s: 2000 requests, N(t) = 100t + 10t².
        let s = RateSchedule::for_duration(100.0, 300.0, Duration::from_secs(10));
        assert_eq!(s.count(), 2000);
        for (t, n) in [(1.0f64, 110u64), (5.0, 750), (9.0, 1710)] {
            let off = s.offset_ns(n).unwrap();
            assert!((off as f64 / 1e9 - t).abs() < 1e-9, "request {n} at {off} ns, wanted {t} s");
        }
        // Offsets increase strictly, and the gaps shrink as the rate rises.
        let offs: Vec<u64> = (0..2000).map(|i| s.offset_ns(i).unwrap()).collect();
        assert!(offs.windows(2).all(|w| w[1] > w[0]));
        assert!(offs[1] - offs[0] > offs[1999] - offs[1998]);
        // Down to zero: 200 → 0 over 2 s is 200 requests, the last before the end.
        let s = RateSchedule::for_duration(200.0, 0.0, Duration::from_secs(2));
        assert_eq!(s.count(), 200);
        assert!(s.offset_ns(199).unwrap() < 2_000_000_000);
        // Up from zero: the first request is due at the origin.
        let s = RateSchedule::for_duration(0.0, 100.0, Duration::from_secs(2));
        assert_eq!((s.count(), s.offset_ns(0)), (100, Some(0)));
        assert_eq!(s.offset_ns(25), Some(1_000_000_000));
    }
}
