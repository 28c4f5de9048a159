//! Which segments and pure ACKs TCP makes of the writes of two applications talking in turn: a
//! small event model of Linux's sender and receiver rules on a path whose round trip is shorter
//! than the gaps between an application's writes (loopback, a LAN).
//!
//! Sender (RFC 9293 §3.7.4, RFC 896, and Linux's Minshall variant, `tcp_nagle_check` and
//! `tcp_minshall_check` in net/ipv4/tcp_output.c): full-sized segments leave at once; a
//! sub-MSS segment is held while an earlier sub-MSS segment is unacknowledged, unless
//! TCP_NODELAY is set; held bytes leave together when the ACK comes, or with the FIN (which
//! Linux pushes with Nagle off). A write made with MSG_MORE (`tcp_push` with TCP_NAGLE_CORK)
//! sends its full-sized segments and holds the partial one until more data or the FIN comes.
//!
//! Receiver (RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2, and Linux's `__tcp_ack_snd_check`,
//! `tcp_measure_rcv_mss`, `tcp_event_data_recv`, `__tcp_cleanup_rbuf`, `tcp_event_data_sent`,
//! `tcp_delack_timer_handler`, `tcp_fin` in net/ipv4/tcp_input.c, tcp.c, tcp_output.c, tcp_timer.c):
//! - an end estimates the peer's segment size (`rcv_mss`): 536 at first, then the largest
//!   segment received;
//! - it acknowledges at once when more than `rcv_mss` bytes of sequence space (data, and 1 for a
//!   FIN) arrived since it last sent an ACK, or while in quick-ACK mode: from its first data
//!   (up to 16 ACKs) until it answers data with data, which puts it in interactive ("pingpong")
//!   mode (threshold 1 since Linux 6.x);
//! - otherwise the ACK is delayed to ride on the end's next segment, except that the application's
//!   read acknowledges a drained buffer that held a small segment (two, in interactive mode);
//! - if nothing else happens, the delayed-ACK timer (40 ms, TCP_DELACK_MIN) sends the ACK and ends
//!   interactive mode;
//! - a FIN puts its receiver in interactive mode; a FIN that arrives after the receiver's own FIN
//!   is acknowledged at once.

use std::collections::VecDeque;

use super::calc::Side;

/// Linux's minimum delayed-ACK timeout, TCP_DELACK_MIN (HZ/25): the stall a timer ACK costs.
pub const DELAYED_ACK_MS: u64 = 40;
/// TCP_MSS_DEFAULT: the first estimate of the peer's segment size (`tcp_initialize_rcv_mss`).
const RCV_MSS_INITIAL: u64 = 536;
/// TCP_MIN_MSS.
const TCP_MIN_MSS: u64 = 88;
/// The TCP header without options, for `tcp_measure_rcv_mss`'s size checks.
const BARE_TCP_HEADER: u64 = 20;
/// TCP_MAX_QUICKACKS: quick ACKs granted by the first data (`tcp_incr_quickack`).
const MAX_QUICKACKS: u64 = 16;
/// TCP_DEFAULT_INIT_RCVWND: the first receive window, in segments (`tcp_select_initial_window`).
const INIT_RCVWND_SEGMENTS: u64 = 10;

/// One application write: `bytes` written to the socket in one system call.
#[derive(Debug, Clone)]
pub struct Write {
    pub side: Side,
    pub bytes: u64,
    /// Written with MSG_MORE: the last partial segment waits for more data or the FIN.
    pub more: bool,
}

/// One step of the exchange, in the order the applications take them: each step runs once its
/// side has received everything the other side wrote before it.
#[derive(Debug, Clone)]
pub enum Step {
    /// Index into the list of writes.
    Write(usize),
    /// shutdown(SHUT_WR) or close: the FIN.
    Close(Side),
}

/// The link as both ends see it.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Payload bytes of a full-sized segment.
    pub mss: u64,
    /// TCP_NODELAY, indexed client, server.
    pub nodelay: [bool; 2],
    /// TCP header bytes of a data segment, options included (32 with timestamps).
    pub tcp_header: u64,
}

/// A segment on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub side: Side,
    pub payload: u64,
    /// Writes whose bytes it carries (indices), in order.
    pub writes: Vec<usize>,
    pub fin: bool,
    /// A pure ACK (no payload, no FIN).
    pub pure_ack: bool,
    /// A pure ACK sent by the delayed-ACK timer after a stall.
    pub timer: bool,
}

/// The segments, and how many delayed-ACK stalls the exchange waits through.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub segments: Vec<Segment>,
    pub stalls: u32,
}

/// Bytes of one write not yet sent.
#[derive(Debug)]
struct Unsent {
    write: usize,
    bytes: u64,
    more: bool,
}

#[derive(Debug)]
struct End {
    nodelay: bool,
    unsent: VecDeque<Unsent>,
    /// A sub-MSS segment is unacknowledged (Minshall's check).
    small_in_flight: bool,
    fin_queued: bool,
    fin_sent: bool,
    /// Has received data (so that sending data is a reply).
    received_data: bool,
    /// Interactive (pingpong) mode: ACKs are delayed.
    pingpong: bool,
    /// Sequence space received since this end last sent an ACK (rcv_nxt − rcv_wup).
    unacked: u64,
    /// An ACK is owed (ICSK_ACK_SCHED).
    ack_scheduled: bool,
    /// The estimate of the peer's segment size.
    rcv_mss: u64,
    /// `icsk_ack.last_seg_size`.
    last_seg_size: u64,
    /// Small segments received since the last ACK (ICSK_ACK_PUSHED, PUSHED2): 0, 1 or 2.
    pushed: u8,
    /// Quick ACKs left.
    quick: u64,
    /// Data has been received (the delayed-ACK engine is initialised).
    ato_set: bool,
}

impl End {
    fn new(nodelay: bool) -> Self {
        Self {
            nodelay,
            unsent: VecDeque::new(),
            small_in_flight: false,
            fin_queued: false,
            fin_sent: false,
            received_data: false,
            pingpong: false,
            unacked: 0,
            ack_scheduled: false,
            rcv_mss: RCV_MSS_INITIAL,
            last_seg_size: 0,
            pushed: 0,
            quick: 0,
            ato_set: false,
        }
    }

    fn ack_owed(&self) -> bool {
        self.ack_scheduled || self.unacked > 0
    }

    /// Any segment this end sends acknowledges everything received (`tcp_event_ack_sent`).
    fn ack_sent(&mut self) {
        if self.ack_scheduled && self.quick > 0 {
            self.quick -= 1;
        }
        self.unacked = 0;
        self.ack_scheduled = false;
        self.pushed = 0;
    }

    /// `tcp_measure_rcv_mss` for a data segment of `len` bytes; `remnant`: PSH or FIN set.
    fn measure_rcv_mss(&mut self, len: u64, remnant: bool, link: &Link) {
        let lss = std::mem::take(&mut self.last_seg_size);
        if len >= self.rcv_mss {
            self.rcv_mss = len.min(link.mss);
            return;
        }
        let with_header = len + link.tcp_header;
        if with_header >= RCV_MSS_INITIAL + BARE_TCP_HEADER
            || (with_header >= TCP_MIN_MSS + BARE_TCP_HEADER && !remnant)
        {
            self.last_seg_size = len;
            if len == lss {
                self.rcv_mss = len;
                return;
            }
        }
        self.pushed = (self.pushed + 1).min(2);
    }

    /// Bytes Nagle's algorithm holds back (not the partial segment of a MSG_MORE write).
    fn held_by_nagle(&self) -> bool {
        self.unsent.back().is_some_and(|u| !u.more)
    }
}

enum Event {
    /// A segment with payload or FIN reaches `to`; `push`: PSH or FIN set.
    Deliver { to: Side, payload: u64, fin: bool, push: bool },
    /// `to` learns that everything it sent is acknowledged.
    Acked { to: Side },
}

fn idx(s: Side) -> usize {
    match s {
        Side::Client => 0,
        Side::Server => 1,
    }
}

fn peer(s: Side) -> Side {
    match s {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

struct Model {
    link: Link,
    ends: [End; 2],
    events: VecDeque<Event>,
    out: Outcome,
}

impl Model {
    fn end(&mut self, s: Side) -> &mut End {
        &mut self.ends[idx(s)]
    }

    fn emit(&mut self, side: Side, payload: u64, writes: Vec<usize>, fin: bool, push: bool) {
        let mss = self.link.mss;
        let e = self.end(side);
        if payload > 0 && payload < mss {
            e.small_in_flight = true;
        }
        if payload > 0 && e.received_data {
            e.pingpong = true;
        }
        if fin {
            e.fin_sent = true;
        }
        // Any owed ACK rides on this segment.
        let piggyback = e.ack_owed();
        e.ack_sent();
        self.out.segments.push(Segment { side, payload, writes, fin, pure_ack: false, timer: false });
        if piggyback {
            self.events.push_back(Event::Acked { to: peer(side) });
        }
        self.events.push_back(Event::Deliver { to: peer(side), payload, fin, push });
    }

    fn pure_ack(&mut self, side: Side, timer: bool) {
        let e = self.end(side);
        e.ack_sent();
        if timer {
            e.pingpong = false;
        }
        self.out.segments.push(Segment {
            side,
            payload: 0,
            writes: Vec::new(),
            fin: false,
            pure_ack: true,
            timer,
        });
        self.events.push_back(Event::Acked { to: peer(side) });
    }

    /// Sends what the sender rules allow.
    fn try_send(&mut self, side: Side) {
        loop {
            let mss = self.link.mss;
            let e = self.end(side);
            let total: u64 = e.unsent.iter().map(|u| u.bytes).sum();
            if total == 0 {
                if e.fin_queued && !e.fin_sent {
                    self.emit(side, 0, Vec::new(), true, true);
                }
                return;
            }
            let take = total.min(mss);
            if take < mss && !e.fin_queued {
                if e.unsent.back().is_some_and(|u| u.more) {
                    return; // MSG_MORE holds the partial segment.
                }
                if !e.nodelay && e.small_in_flight {
                    return; // Nagle holds it.
                }
            }
            let mut left = take;
            let mut writes = Vec::new();
            let mut ends_write = false;
            while left > 0 {
                let u = e.unsent.front_mut().expect("bytes to send");
                let n = u.bytes.min(left);
                if writes.last() != Some(&u.write) {
                    writes.push(u.write);
                }
                u.bytes -= n;
                left -= n;
                ends_write = false;
                if u.bytes == 0 {
                    // The last segment of a write carries PSH, unless MSG_MORE asked for more.
                    ends_write = !u.more;
                    e.unsent.pop_front();
                }
            }
            let fin = e.fin_queued && e.unsent.is_empty();
            self.emit(side, take, writes, fin, fin || ends_write);
        }
    }

    fn run_events(&mut self) {
        while let Some(ev) = self.events.pop_front() {
            match ev {
                Event::Acked { to } => {
                    self.end(to).small_in_flight = false;
                    self.try_send(to);
                }
                Event::Deliver { to, payload, fin, push } => {
                    let link = self.link;
                    let e = self.end(to);
                    if payload > 0 {
                        e.ack_scheduled = true;
                        e.measure_rcv_mss(payload, push, &link);
                        if !e.ato_set {
                            // The first data: `tcp_incr_quickack` with the first receive window.
                            e.ato_set = true;
                            let window = (INIT_RCVWND_SEGMENTS * link.mss).min(65_535);
                            e.quick = (window / (2 * e.rcv_mss)).clamp(2, MAX_QUICKACKS);
                        }
                        e.received_data = true;
                    }
                    e.unacked += payload + u64::from(fin);
                    if fin {
                        e.ack_scheduled = true;
                        if e.fin_sent {
                            // FIN in FIN-WAIT: acknowledged at once (then TIME-WAIT).
                            self.pure_ack(to, false);
                            continue;
                        }
                        e.pingpong = true;
                    }
                    let at_once = e.unacked > e.rcv_mss || (e.quick > 0 && !e.pingpong);
                    // The application reads at once; its read acknowledges a drained buffer that
                    // held small segments (`__tcp_cleanup_rbuf`).
                    let on_read = payload > 0 && (e.pushed >= 2 || (e.pushed == 1 && !e.pingpong));
                    if at_once || on_read {
                        self.pure_ack(to, false);
                    }
                }
            }
        }
    }

    /// Waits out a stall: the side holding data waits for an ACK the other side delays; its
    /// delayed-ACK timer fires.
    fn stall(&mut self, waiting: Side) {
        self.out.stalls += 1;
        self.pure_ack(waiting, true);
        self.run_events();
    }
}

/// Runs the steps; `writes` gives each write's side, size and flags.
pub fn run(writes: &[Write], steps: &[Step], link: Link) -> Outcome {
    let link = Link { mss: link.mss.max(1), ..link };
    let mut m = Model {
        link,
        ends: [End::new(link.nodelay[0]), End::new(link.nodelay[1])],
        events: VecDeque::new(),
        out: Outcome::default(),
    };
    for step in steps {
        let side = match step {
            Step::Write(w) => writes[*w].side,
            Step::Close(s) => *s,
        };
        // Everything the other side wrote before this step must have arrived.
        for _ in 0..4 {
            if !m.end(peer(side)).held_by_nagle() {
                break;
            }
            m.stall(side);
        }
        match step {
            Step::Write(w) => {
                let Write { bytes, more, .. } = writes[*w];
                m.end(side).unsent.push_back(Unsent { write: *w, bytes, more });
            }
            Step::Close(s) => m.end(*s).fin_queued = true,
        }
        m.try_send(side);
        m.run_events();
    }
    // Held bytes still waiting, or ACKs still owed, go when the timers fire.
    for side in [Side::Client, Side::Server] {
        if m.end(peer(side)).held_by_nagle() {
            m.stall(side);
        }
    }
    for side in [Side::Client, Side::Server] {
        let both_closed = m.end(side).fin_sent && m.end(peer(side)).fin_sent;
        if m.end(side).ack_owed() && !both_closed {
            m.pure_ack(side, true);
            m.run_events();
        }
    }
    m.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(side: Side, bytes: u64) -> Write {
        Write { side, bytes, more: false }
    }

    fn link(mss: u64, nodelay: [bool; 2]) -> Link {
        Link { mss, nodelay, tcp_header: 32 }
    }

    /// A bulk write is cut into MSS-sized segments, and the receiver, in interactive mode since
    /// its request, acknowledges every second one.
    #[test]
    fn bulk_write_is_segmented_and_acked_every_second_segment() {
        let writes = [w(Side::Server, 10), w(Side::Client, 100), w(Side::Server, 10_000)];
        let steps = [
            Step::Write(0),
            Step::Write(1),
            Step::Write(2),
            Step::Close(Side::Server),
            Step::Close(Side::Client),
        ];
        let out = run(&writes, &steps, link(1000, [false, false]));
        let data: Vec<_> = out.segments.iter().filter(|s| s.side == Side::Server && s.payload > 0).collect();
        assert_eq!(data.len(), 1 + 10);
        assert!(data[1..].iter().all(|s| s.payload == 1000 && s.writes == vec![2]));
        // The client: one ACK for the first small segment (quick-ACK mode), then one per two of
        // the ten; its FIN carries the ACK of the server's FIN, which the server acknowledges.
        let client_acks = out.segments.iter().filter(|s| s.side == Side::Client && s.pure_ack).count();
        assert_eq!(client_acks, 1 + 5, "{:#?}", out.segments);
        let last = out.segments.last().unwrap();
        assert!(last.side == Side::Server && last.pure_ack);
        assert_eq!(out.stalls, 0);
    }

    /// Two small writes in a row with the first unacknowledged by an interactive receiver: the
    /// second waits for the delayed-ACK timer (the 40 ms stall of a TLS 1.2 handshake).
    #[test]
    fn nagle_holds_a_small_write_behind_a_delayed_ack() {
        let writes = [w(Side::Client, 10), w(Side::Server, 10), w(Side::Client, 10), w(Side::Client, 10)];
        let steps = [Step::Write(0), Step::Write(1), Step::Write(2), Step::Write(3)];
        let out = run(&writes, &steps, link(1000, [false, false]));
        assert_eq!(out.stalls, 1, "{:#?}", out.segments);
        let last = out.segments.iter().rev().find(|s| s.payload > 0).unwrap();
        assert_eq!(last.writes, vec![3]);
        // With TCP_NODELAY on the client, no stall.
        let out = run(&writes, &steps, link(1000, [true, false]));
        assert_eq!(out.stalls, 0);
    }

    fn sent(out: &Outcome) -> Vec<(Side, u64, bool, bool)> {
        out.segments.iter().map(|s| (s.side, s.payload, s.fin, s.pure_ack)).collect()
    }

    /// geminst load and geminst serve on loopback (TLS 1.3, a 256-byte request, a 1024-byte
    /// body), segment for segment as tcpdump showed them: each end acknowledges the first data it
    /// receives at once (quick-ACK mode); the request and the response ride on each other's ACKs
    /// (interactive mode); the response's last send, made with MSG_MORE, waits for the FIN and
    /// carries it; that segment is larger than any the client received before, so it and the FIN
    /// exceed the client's estimate of the server's segment size and are acknowledged at once; the
    /// client's FIN, after the server's, is acknowledged at once.
    #[test]
    fn geminst_serve_exchange_segment_for_segment() {
        let writes = [
            w(Side::Client, 232),
            w(Side::Server, 643),
            w(Side::Client, 342),
            Write { side: Side::Server, bytes: 1188, more: true },
        ];
        let steps = [
            Step::Write(0),
            Step::Write(1),
            Step::Write(2),
            Step::Write(3),
            Step::Close(Side::Server),
            Step::Close(Side::Client),
        ];
        let out = run(&writes, &steps, link(65483, [true, true]));
        use Side::{Client as C, Server as S};
        assert_eq!(
            sent(&out),
            vec![
                (C, 232, false, false),
                (S, 0, false, true),
                (S, 643, false, false),
                (C, 0, false, true),
                (C, 342, false, false),
                (S, 1188, true, false),
                (C, 0, false, true),
                (C, 0, true, false),
                (S, 0, false, true),
            ]
        );
        assert_eq!(out.stalls, 0);
        // Had the last send been smaller than a segment the client received before, the client
        // would have delayed its ACK and sent it with its FIN.
        let writes = [
            w(Side::Client, 232),
            w(Side::Server, 643),
            w(Side::Client, 342),
            Write { side: Side::Server, bytes: 300, more: true },
        ];
        let out = run(&writes, &steps, link(65483, [true, true]));
        assert_eq!(sent(&out)[5..], [(S, 300, true, false), (C, 0, true, false), (S, 0, false, true)]);
    }

    /// MSG_MORE: full segments leave, the partial one waits and leaves with the FIN; without it
    /// (TCP_NODELAY) the partial segment leaves at once and the FIN follows alone.
    #[test]
    fn msg_more_holds_the_partial_segment_for_the_fin() {
        let steps = [Step::Write(0), Step::Write(1), Step::Close(Side::Server), Step::Close(Side::Client)];
        for more in [true, false] {
            let writes = [w(Side::Client, 100), Write { side: Side::Server, bytes: 50_000, more }];
            let out = run(&writes, &steps, link(20_000, [true, true]));
            let server: Vec<(u64, bool)> = out
                .segments
                .iter()
                .filter(|s| s.side == Side::Server && !s.pure_ack)
                .map(|s| (s.payload, s.fin))
                .collect();
            let want = if more {
                vec![(20_000, false), (20_000, false), (10_000, true)]
            } else {
                vec![(20_000, false), (20_000, false), (10_000, false), (0, true)]
            };
            assert_eq!(server, want, "more {more}");
        }
    }
}
