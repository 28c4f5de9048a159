//! The TLS record layer of one direction of a TCP stream, counted by content type.
//!
//! Every TLS record starts with a 5-byte header: content type (1), legacy record version (2),
//! length (2) (RFC 8446 §5.1; RFC 5246 §6.2.1). The parser is fed the stream's bytes in order, in
//! chunks of any size: a record may be split across segments and a segment may hold several
//! records. Each byte is attributed to the record it belongs to, header included, as it arrives,
//! so a record cut off by a broken connection still counts the bytes that crossed the wire.
//!
//! The record layer is all a passive observer sees: in TLS 1.3 the encrypted handshake messages
//! (EncryptedExtensions through Finished, NewSessionTicket) and alerts such as close_notify travel
//! inside records of type application_data (RFC 8446 §5.2), and are counted as such.
//!
//! Bytes that cannot be framed (a header that is not TLS, bytes after a gap in the stream) are
//! counted as `unclassified_bytes` and the parser stops framing that direction: after a gap, the
//! next record boundary is unknown. The parser never panics, whatever it is fed.

use serde::Serialize;

/// TLS ContentType values (RFC 8446 §5.1; RFC 5246 §6.2.1).
pub mod content_type {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
}

/// Size of a record header: type, legacy_record_version, length (RFC 8446 §5.1).
pub const RECORD_HEADER: usize = 5;

/// The largest record body accepted: TLSCiphertext.length may not exceed 2^14 + 2048 (RFC 5246
/// §6.2.3; RFC 8446 §5.2 lowers it to 2^14 + 256 for TLS 1.3). Anything longer is not TLS.
pub const MAX_RECORD_BODY: usize = (1 << 14) + 2048;

/// Records and bytes (headers included) of one content type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecordTally {
    /// Records whose header was seen (a record cut off by the end of the stream counts).
    pub records: u64,
    /// Bytes of those records that crossed the wire, 5-byte headers included.
    pub bytes: u64,
}

/// The record-layer breakdown of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TlsCounts {
    pub handshake: RecordTally,
    pub change_cipher_spec: RecordTally,
    pub alert: RecordTally,
    pub application_data: RecordTally,
    /// Bytes that could not be attributed to a record: not TLS, or after a gap in the stream.
    pub unclassified_bytes: u64,
    /// True if the stream ended inside a record (the last record is shorter than its header says).
    pub truncated: bool,
    /// True once framing was lost (an invalid header or a gap); later bytes are unclassified.
    pub lost_sync: bool,
}

impl TlsCounts {
    /// All bytes accounted for: the four record types plus the unclassified bytes.
    pub fn total_bytes(&self) -> u64 {
        self.record_bytes() + self.unclassified_bytes
    }

    /// Bytes attributed to records of the four content types.
    pub fn record_bytes(&self) -> u64 {
        self.handshake.bytes + self.change_cipher_spec.bytes + self.alert.bytes + self.application_data.bytes
    }

    pub fn records(&self) -> u64 {
        self.handshake.records
            + self.change_cipher_spec.records
            + self.alert.records
            + self.application_data.records
    }

    fn tally(&mut self, ty: u8) -> &mut RecordTally {
        match ty {
            content_type::CHANGE_CIPHER_SPEC => &mut self.change_cipher_spec,
            content_type::ALERT => &mut self.alert,
            content_type::HANDSHAKE => &mut self.handshake,
            _ => &mut self.application_data,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a record header; `have` bytes of it are in `buf`.
    Header { buf: [u8; RECORD_HEADER], have: u8 },
    /// Inside the body of a record of type `ty`, `left` bytes to go.
    Body { ty: u8, left: u32 },
    /// Framing lost: every further byte is unclassified.
    Lost,
}

/// Parses the TLS records of one direction of a stream. Feed bytes in stream order.
#[derive(Debug, Clone)]
pub struct TlsRecordParser {
    state: State,
    counts: TlsCounts,
}

impl Default for TlsRecordParser {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a record header is plausible TLS: a known content type, a 3.x version (SSL 3.0 to
/// TLS 1.3 all use major version 3) and a length within the protocol's limit.
pub fn valid_header(h: &[u8; RECORD_HEADER]) -> bool {
    let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
    (content_type::CHANGE_CIPHER_SPEC..=content_type::APPLICATION_DATA).contains(&h[0])
        && h[1] == 3
        && h[2] <= 4
        && len <= MAX_RECORD_BODY
}

impl TlsRecordParser {
    pub fn new() -> Self {
        Self { state: State::Header { buf: [0; RECORD_HEADER], have: 0 }, counts: TlsCounts::default() }
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => {
                    self.counts.unclassified_bytes += data.len() as u64;
                    return;
                }
                State::Body { ty, left } => {
                    let take = (*left as usize).min(data.len());
                    let ty = *ty;
                    *left -= take as u32;
                    self.counts.tally(ty).bytes += take as u64;
                    if *left == 0 {
                        self.state = State::Header { buf: [0; RECORD_HEADER], have: 0 };
                    }
                    data = &data[take..];
                }
                State::Header { buf, have } => {
                    let take = (RECORD_HEADER - *have as usize).min(data.len());
                    buf[*have as usize..*have as usize + take].copy_from_slice(&data[..take]);
                    *have += take as u8;
                    data = &data[take..];
                    if usize::from(*have) == RECORD_HEADER {
                        let header = *buf;
                        if valid_header(&header) {
                            let ty = header[0];
                            let len = u32::from(u16::from_be_bytes([header[3], header[4]]));
                            let tally = self.counts.tally(ty);
                            tally.records += 1;
                            tally.bytes += RECORD_HEADER as u64;
                            self.state = if len == 0 {
                                State::Header { buf: [0; RECORD_HEADER], have: 0 }
                            } else {
                                State::Body { ty, left: len }
                            };
                        } else {
                            self.counts.unclassified_bytes += RECORD_HEADER as u64;
                            self.counts.lost_sync = true;
                            self.state = State::Lost;
                        }
                    }
                }
            }
        }
    }

    /// Bytes of the stream whose contents were not seen (cut by the snap length) or that arrive
    /// after a gap: they count as unclassified and framing is lost from here on.
    pub fn unknown(&mut self, bytes: u64) {
        self.lose_sync();
        self.counts.unclassified_bytes += bytes;
    }

    /// A gap in the stream (bytes that were never captured): framing is lost from here on.
    /// Pending header bytes become unclassified; the gap itself is not counted (it was never seen).
    pub fn lose_sync(&mut self) {
        match self.state {
            State::Lost => return,
            State::Header { have, .. } => self.counts.unclassified_bytes += u64::from(have),
            State::Body { .. } => self.counts.truncated = true,
        }
        self.counts.lost_sync = true;
        self.state = State::Lost;
    }

    /// The end of the stream: bytes of an incomplete header become unclassified, and a record cut
    /// short is flagged. Returns the final counts; feeding more afterwards starts a new record.
    pub fn finish(&mut self) -> TlsCounts {
        match self.state {
            State::Header { have, .. } if have > 0 => {
                self.counts.unclassified_bytes += u64::from(have);
                self.counts.truncated = true;
                self.state = State::Header { buf: [0; RECORD_HEADER], have: 0 };
            }
            State::Body { .. } => {
                self.counts.truncated = true;
                self.state = State::Header { buf: [0; RECORD_HEADER], have: 0 };
            }
            _ => {}
        }
        self.counts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic PRNG (xorshift64*) for the no-panic tests.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn record(ty: u8, body: usize) -> Vec<u8> {
        let mut r = vec![ty, 3, 3, (body >> 8) as u8, body as u8];
        r.extend(std::iter::repeat_n(0xab, body));
        r
    }

    /// A TLS 1.3-like stream: ClientHello-sized handshake, CCS, application data of several sizes,
    /// an alert.
    fn sample_stream() -> Vec<u8> {
        let mut s = record(content_type::HANDSHAKE, 512);
        s.extend(record(content_type::CHANGE_CIPHER_SPEC, 1));
        s.extend(record(content_type::APPLICATION_DATA, 16384 + 17));
        s.extend(record(content_type::APPLICATION_DATA, 0));
        s.extend(record(content_type::APPLICATION_DATA, 300));
        s.extend(record(content_type::ALERT, 2));
        s
    }

    fn expected() -> TlsCounts {
        TlsCounts {
            handshake: RecordTally { records: 1, bytes: 517 },
            change_cipher_spec: RecordTally { records: 1, bytes: 6 },
            alert: RecordTally { records: 1, bytes: 7 },
            application_data: RecordTally { records: 3, bytes: 5 + 16401 + 5 + 5 + 300 },
            ..TlsCounts::default()
        }
    }

    #[test]
    fn whole_stream_at_once() {
        let mut p = TlsRecordParser::new();
        p.feed(&sample_stream());
        assert_eq!(p.finish(), expected());
    }

    #[test]
    fn any_split_gives_the_same_counts() {
        let s = sample_stream();
        // Byte by byte, and every split into chunks of a fixed size (headers split across chunks).
        for chunk in [1, 2, 3, 4, 5, 6, 7, 100, 1448, 16406, 65483] {
            let mut p = TlsRecordParser::new();
            for c in s.chunks(chunk) {
                p.feed(c);
            }
            assert_eq!(p.finish(), expected(), "chunk size {chunk}");
        }
    }

    #[test]
    fn stream_cut_inside_a_record_counts_what_arrived() {
        let s = sample_stream();
        let cut = 517 + 6 + 5 + 1000;
        let mut p = TlsRecordParser::new();
        p.feed(&s[..cut]);
        let c = p.finish();
        assert!(c.truncated && !c.lost_sync);
        assert_eq!(c.application_data, RecordTally { records: 1, bytes: 1005 });
        assert_eq!(c.total_bytes(), cut as u64);
        // Cut inside a header: the 3 header bytes are unclassified.
        let mut p = TlsRecordParser::new();
        p.feed(&s[..517 + 3]);
        let c = p.finish();
        assert_eq!((c.handshake.bytes, c.unclassified_bytes, c.truncated), (517, 3, true));
    }

    #[test]
    fn non_tls_is_unclassified() {
        let mut p = TlsRecordParser::new();
        p.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let c = p.finish();
        assert_eq!(c.records(), 0);
        assert_eq!(c.unclassified_bytes, 27);
        assert!(c.lost_sync);
        // An oversized length is not TLS either.
        let mut p = TlsRecordParser::new();
        p.feed(&[23, 3, 3, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(p.finish().unclassified_bytes, 8);
    }

    #[test]
    fn gap_loses_sync_and_later_bytes_are_unclassified() {
        let s = sample_stream();
        let mut p = TlsRecordParser::new();
        p.feed(&s[..600]);
        p.lose_sync();
        p.feed(&s[700..]);
        let c = p.finish();
        assert!(c.lost_sync && c.truncated);
        assert_eq!(c.total_bytes(), (s.len() - 100) as u64);
        assert_eq!(c.unclassified_bytes, (s.len() - 700) as u64);
    }

    /// Random and mutated inputs in random chunkings: never a panic, and every byte fed is
    /// accounted for exactly once.
    #[test]
    fn random_and_mutated_inputs_never_panic_and_account_for_every_byte() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let base = sample_stream();
        for i in 0..4000 {
            let mut input = if i % 2 == 0 {
                let len = (rng.next() % 2048) as usize;
                (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
            } else {
                base.clone()
            };
            for _ in 0..(rng.next() % 8) {
                if input.is_empty() {
                    break;
                }
                let at = (rng.next() as usize) % input.len();
                match rng.next() % 3 {
                    0 => input[at] = rng.next() as u8,
                    1 => input.truncate(at),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            let mut p = TlsRecordParser::new();
            let mut fed = 0u64;
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + (rng.next() as usize) % rest.len().min(3000);
                p.feed(&rest[..n]);
                fed += n as u64;
                rest = &rest[n..];
                if rng.next().is_multiple_of(50) {
                    p.unknown(7);
                    fed += 7;
                }
            }
            let c = p.finish();
            assert_eq!(c.total_bytes(), fed, "input {i}");
        }
    }
}
