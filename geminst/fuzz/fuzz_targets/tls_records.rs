//! Fuzzes the TLS record parser: arbitrary bytes, fed in chunks whose sizes the input chooses,
//! with gaps in between. It must never panic and must account for every byte exactly once.

#![no_main]

use geminst::capture::TlsRecordParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the chunking: each control byte gives the next chunk's length
    // (0 = a gap of 7 unknown bytes instead). The rest is the stream.
    let split = data.len().min(16);
    let (control, mut stream) = data.split_at(split);
    let mut parser = TlsRecordParser::new();
    let mut accounted = 0u64;
    for &c in control.iter().cycle().take(4096) {
        if stream.is_empty() {
            break;
        }
        if c == 0 {
            parser.unknown(7);
            accounted += 7;
            continue;
        }
        let n = usize::from(c).min(stream.len());
        parser.feed(&stream[..n]);
        accounted += n as u64;
        stream = &stream[n..];
    }
    parser.feed(stream);
    accounted += stream.len() as u64;
    let counts = parser.finish();
    assert_eq!(counts.total_bytes(), accounted);
    assert!(counts.records() <= accounted / 5 + 1);
});
