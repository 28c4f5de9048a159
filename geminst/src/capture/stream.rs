//! One direction of a TCP connection in sequence space: which bytes were already seen (so a
//! retransmission is recognised), and the in-order byte stream handed to the TLS record parser.
//!
//! Sequence numbers (RFC 9293 §3.4) are 32-bit and wrap; they are unwrapped here onto a 64-bit
//! line that starts at `ORIGIN` for the first sequence number seen, so a stream longer than 4 GiB
//! and a segment that arrives before the first one seen both have a place.
//!
//! Counting rule for retransmissions: a payload byte is retransmitted if a byte with the same
//! sequence number was already seen in this direction. A segment is a retransmission if any of the
//! sequence space it occupies (SYN, payload, FIN) was seen before. Keep-alive probes (no payload,
//! sequence number one below the next) occupy no sequence space and are not retransmissions.

use std::collections::BTreeMap;

use super::tls_records::{TlsCounts, TlsRecordParser};

/// Where the first sequence number seen lands on the unwrapped line: far from 0, so segments from
/// before it (reordered, or retransmitted from before the capture started) still fit.
const ORIGIN: u64 = 1 << 40;

/// Out-of-order bytes held for the record parser, per direction, before the gap in front of them
/// is given up on (the parser then loses sync).
const MAX_OUT_OF_ORDER: usize = 4 << 20;

/// Ranges of sequence space already seen kept separately; beyond this, the two lowest ranges are
/// merged (the hole between them is treated as seen), which keeps memory bounded on hostile input.
const MAX_RANGES: usize = 64;

/// A set of half-open ranges on the unwrapped sequence line, sorted and non-overlapping.
#[derive(Debug, Clone, Default)]
struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Bytes of `[start, end)` already in the set.
    fn overlap(&self, start: u64, end: u64) -> u64 {
        self.0.iter().map(|&(a, b)| b.min(end).saturating_sub(a.max(start))).sum()
    }

    /// Adds `[start, end)`, calling `new` for each sub-range that was not in the set before.
    fn insert(&mut self, start: u64, end: u64, mut new: impl FnMut(u64, u64)) {
        if start >= end {
            return;
        }
        // The common case, in-order data: the range starts at or after everything seen. No
        // allocation.
        match self.0.last_mut() {
            None => {
                new(start, end);
                self.0.push((start, end));
                return;
            }
            Some(last) if last.1 <= start => {
                new(start, end);
                if last.1 == start {
                    last.1 = end;
                } else {
                    self.0.push((start, end));
                    self.bound();
                }
                return;
            }
            _ => {}
        }
        let mut at = start;
        for &(a, b) in &self.0 {
            if b <= at {
                continue;
            }
            if a >= end {
                break;
            }
            if a > at {
                new(at, a);
            }
            at = at.max(b);
            if at >= end {
                break;
            }
        }
        if at < end {
            new(at, end);
        }
        // Merge [start, end) into the set.
        let mut merged = Vec::with_capacity(self.0.len() + 1);
        let (mut s, mut e) = (start, end);
        let mut placed = false;
        for &(a, b) in &self.0 {
            if b < s {
                merged.push((a, b));
            } else if a > e {
                if !placed {
                    merged.push((s, e));
                    placed = true;
                }
                merged.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            merged.push((s, e));
        }
        self.0 = merged;
        self.bound();
    }

    /// Keeps at most `MAX_RANGES` ranges by merging the two lowest.
    fn bound(&mut self) {
        if self.0.len() > MAX_RANGES {
            let (a, _) = self.0[0];
            let (_, d) = self.0.remove(1);
            self.0[0] = (a, d);
        }
    }
}

/// What one segment added to a direction's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentOutcome {
    /// Payload bytes whose sequence numbers were seen before.
    pub retransmitted_bytes: u64,
    /// Whether the segment repeats sequence space already seen (SYN, payload or FIN).
    pub retransmission: bool,
}

/// One direction of a connection.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// The first sequence number seen, which sits at `ORIGIN`.
    base: Option<u32>,
    /// The unwrapped position of the highest sequence number seen, to unwrap the next one near it.
    high: u64,
    seen: RangeSet,
    /// The next stream position the parser expects; `None` until the stream's start is known.
    next: Option<u64>,
    /// Payload that arrived ahead of `next`, keyed by position (ranges never overlap).
    ahead: BTreeMap<u64, Vec<u8>>,
    ahead_bytes: usize,
    parser: TlsRecordParser,
}

impl Stream {
    /// Maps a sequence number onto the unwrapped line: the position within 2^31 of the highest
    /// one seen so far (the usual serial-number arithmetic, RFC 1982).
    fn unwrap(&mut self, seq: u32) -> u64 {
        let base = *self.base.get_or_insert(seq);
        if self.high == 0 {
            self.high = ORIGIN;
        }
        let high_seq = base.wrapping_add((self.high - ORIGIN) as u32);
        let delta = i64::from(seq.wrapping_sub(high_seq) as i32);
        self.high.wrapping_add_signed(delta)
    }

    /// Records a segment: `syn`/`fin` flags, its sequence number, its payload length (from the IP
    /// header) and the captured part of the payload (possibly shorter).
    pub fn segment(
        &mut self,
        seq: u32,
        syn: bool,
        fin: bool,
        payload_len: u32,
        payload: &[u8],
    ) -> SegmentOutcome {
        let start = self.unwrap(seq);
        let data_start = start + u64::from(syn);
        let data_end = data_start + u64::from(payload_len);
        let end = data_end + u64::from(fin);
        let retransmitted_bytes = self.seen.overlap(data_start, data_end);
        let retransmission = self.seen.overlap(start, end) > 0;
        let mut pieces = [(0u64, 0u64); 4];
        let mut n = 0;
        let mut more = Vec::new();
        self.seen.insert(start, end, |a, b| {
            if n < pieces.len() {
                pieces[n] = (a, b);
                n += 1;
            } else {
                more.push((a, b));
            }
        });
        self.high = self.high.max(end);
        if syn && self.next.is_none() {
            self.next = Some(data_start);
        }
        if payload_len > 0 {
            if self.next.is_none() {
                // The capture began after the handshake: parse from the first payload seen.
                self.next = Some(data_start);
            }
            for (a, b) in pieces[..n].iter().copied().chain(more) {
                let (a, b) = (a.max(data_start), b.min(data_end));
                if a < b {
                    self.deliver(a, b, data_start, payload);
                }
            }
        }
        SegmentOutcome { retransmitted_bytes, retransmission }
    }

    /// Hands new payload `[a, b)` (the segment's payload starts at `data_start`) to the parser in
    /// stream order, holding it back if it is ahead of the parser.
    fn deliver(&mut self, a: u64, b: u64, data_start: u64, payload: &[u8]) {
        let lo = (a - data_start) as usize;
        let hi = (b - data_start) as usize;
        let captured = &payload[lo.min(payload.len())..hi.min(payload.len())];
        let missing = (hi - lo - captured.len()) as u64;
        let next = self.next.unwrap_or(a);
        if a < next {
            // New bytes behind the parser: they fill a gap it already gave up on.
            self.parser.unknown(b - a);
        } else if a == next {
            self.parser.feed(captured);
            if missing > 0 {
                self.parser.unknown(missing);
            }
            self.next = Some(b);
            self.drain_ahead();
        } else {
            let mut held = captured.to_vec();
            if missing > 0 {
                // Bytes cut by the snap length: their contents are unknown, so framing is lost
                // (they are held as zeros, only for their length).
                self.parser.lose_sync();
                held.resize(hi - lo, 0);
            }
            self.ahead_bytes += held.len();
            self.ahead.insert(a, held);
            if self.ahead_bytes > MAX_OUT_OF_ORDER {
                // Too much waiting behind a gap: give up on the gap.
                self.parser.lose_sync();
                self.drain_ahead_all();
            }
        }
    }

    /// Feeds held-back payload that has become contiguous with the parser's position.
    fn drain_ahead(&mut self) {
        while let Some(entry) = self.ahead.first_entry() {
            let next = self.next.unwrap_or(0);
            if *entry.key() != next {
                break;
            }
            let data = entry.remove();
            self.ahead_bytes -= data.len();
            self.parser.feed(&data);
            self.next = Some(next + data.len() as u64);
        }
    }

    /// Feeds all held-back payload in order, skipping the gaps between (framing is lost).
    fn drain_ahead_all(&mut self) {
        while let Some((at, data)) = self.ahead.pop_first() {
            self.ahead_bytes -= data.len();
            let next = self.next.unwrap_or(at);
            if at > next {
                self.parser.lose_sync();
            }
            self.parser.feed(&data);
            self.next = Some(next.max(at + data.len() as u64));
        }
    }

    /// The end of the capture or of the connection: payload still held behind a gap is counted
    /// (unclassified), and the record-layer counts are final.
    pub fn finish(&mut self) -> TlsCounts {
        if !self.ahead.is_empty() {
            self.parser.lose_sync();
            self.drain_ahead_all();
        }
        self.parser.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::tls_records::tests::Rng;

    fn record(ty: u8, body: usize) -> Vec<u8> {
        let mut r = vec![ty, 3, 3, (body >> 8) as u8, body as u8];
        r.extend(std::iter::repeat_n(0x11, body));
        r
    }

    fn stream_bytes() -> Vec<u8> {
        let mut s = record(22, 300);
        for _ in 0..5 {
            s.extend(record(23, 1000));
        }
        s.extend(record(21, 2));
        s
    }

    #[test]
    fn in_order_segments_with_syn_and_fin() {
        let data = stream_bytes();
        let isn = u32::MAX - 1000; // wraps inside the stream
        let mut st = Stream::default();
        assert_eq!(st.segment(isn, true, false, 0, &[]), SegmentOutcome::default());
        let mut seq = isn.wrapping_add(1);
        for chunk in data.chunks(777) {
            let o = st.segment(seq, false, false, chunk.len() as u32, chunk);
            assert_eq!(o, SegmentOutcome::default());
            seq = seq.wrapping_add(chunk.len() as u32);
        }
        assert!(!st.segment(seq, false, true, 0, &[]).retransmission);
        let c = st.finish();
        assert_eq!(c.total_bytes(), data.len() as u64);
        assert_eq!(c.application_data.records, 5);
        assert_eq!(c.alert.bytes, 7);
        assert!(!c.lost_sync && !c.truncated);
    }

    #[test]
    fn retransmissions_are_counted_once_and_not_reparsed() {
        let data = stream_bytes();
        let mut st = Stream::default();
        st.segment(100, true, false, 0, &[]);
        st.segment(101, false, false, 1000, &data[..1000]);
        // Retransmit bytes 500..1500: 500 seen, 500 new.
        let o = st.segment(601, false, false, 1000, &data[500..1500]);
        assert_eq!(o, SegmentOutcome { retransmitted_bytes: 500, retransmission: true });
        // A repeated SYN is a retransmission without payload bytes.
        assert_eq!(
            st.segment(100, true, false, 0, &[]),
            SegmentOutcome { retransmitted_bytes: 0, retransmission: true }
        );
        st.segment(1601, false, false, (data.len() - 1500) as u32, &data[1500..]);
        let c = st.finish();
        assert_eq!(c.total_bytes(), data.len() as u64);
        assert!(!c.lost_sync);
    }

    #[test]
    fn reordered_segments_are_reassembled() {
        let data = stream_bytes();
        let mut st = Stream::default();
        st.segment(0, true, false, 0, &[]);
        st.segment(2001, false, false, (data.len() - 2000) as u32, &data[2000..]);
        st.segment(1, false, false, 1000, &data[..1000]);
        let o = st.segment(1001, false, false, 1000, &data[1000..2000]);
        assert_eq!(o, SegmentOutcome::default());
        let c = st.finish();
        assert_eq!(c.total_bytes(), data.len() as u64);
        assert_eq!(c.application_data.records, 5);
        assert!(!c.lost_sync);
    }

    #[test]
    fn a_gap_that_never_fills_is_skipped_at_the_end() {
        let data = stream_bytes();
        let mut st = Stream::default();
        st.segment(0, true, false, 0, &[]);
        st.segment(1, false, false, 1000, &data[..1000]);
        st.segment(2001, false, false, 500, &data[2000..2500]);
        let c = st.finish();
        assert_eq!(c.total_bytes(), 1500);
        assert_eq!(c.unclassified_bytes, 500);
        assert!(c.lost_sync);
    }

    #[test]
    fn capture_cut_short_by_snaplen_counts_unknown_bytes() {
        let data = stream_bytes();
        let mut st = Stream::default();
        st.segment(0, true, false, 0, &[]);
        st.segment(1, false, false, 2000, &data[..300]);
        let c = st.finish();
        assert_eq!(c.total_bytes(), 2000);
        assert!(c.lost_sync);
    }

    #[test]
    fn range_set_reports_new_pieces() {
        let mut r = RangeSet::default();
        let mut insert = |a, b| {
            let mut v = Vec::new();
            r.insert(a, b, |x, y| v.push((x, y)));
            v
        };
        assert_eq!(insert(10, 20), vec![(10, 20)]);
        assert_eq!(insert(20, 25), vec![(20, 25)]);
        assert_eq!(insert(30, 40), vec![(30, 40)]);
        assert_eq!(insert(5, 45), vec![(5, 10), (25, 30), (40, 45)]);
        assert!(insert(6, 7).is_empty());
        assert_eq!(r.0, vec![(5, 45)]);
        assert_eq!(r.overlap(0, 100), 40);
    }

    #[test]
    fn range_set_stays_bounded() {
        let mut r = RangeSet::default();
        for i in 0..1000u64 {
            r.insert(i * 10, i * 10 + 5, |_, _| {});
        }
        assert!(r.0.len() <= MAX_RANGES);
        assert_eq!(r.0.last(), Some(&(9990, 9995)));
    }

    /// Random segments (random order, duplicates, wraps): the parser sees every unique byte once,
    /// so its total equals payload minus retransmitted payload.
    #[test]
    fn random_segment_orders_account_for_every_byte() {
        let mut rng = Rng(42);
        for round in 0..300 {
            let isn = rng.next() as u32;
            let len = 1 + (rng.next() % 20_000) as u32;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut st = Stream::default();
            let (mut payload, mut retx) = (0u64, 0u64);
            if rng.next().is_multiple_of(2) {
                st.segment(isn, true, false, 0, &[]);
            }
            for _ in 0..(1 + rng.next() % 60) {
                let a = (rng.next() % u64::from(len)) as u32;
                let n = 1 + (rng.next() % 3000) as u32;
                let b = (a + n).min(len);
                let o =
                    st.segment(isn.wrapping_add(1 + a), false, false, b - a, &data[a as usize..b as usize]);
                payload += u64::from(b - a);
                retx += o.retransmitted_bytes;
            }
            let c = st.finish();
            assert_eq!(c.total_bytes(), payload - retx, "round {round}");
        }
    }
}
