//! Which segments and pure ACKs TCP makes of the writes of two applications talking in turn: a
//! small event model of Linux's sender and receiver rules on a path whose round trip is shorter
//! than the gaps between an application's writes (loopback, a LAN).
//!
//! Sender (RFC 9293 §3.7.4, RFC 896, and Linux's Minshall variant, `tcp_nagle_check` and
//! `tcp_minshall_check` in net/ipv4/tcp_output.c): full-sized segments leave at once; a
//! sub-MSS segment is held while an earlier sub-MSS segment is unacknowledged, unless
//! TCP_NODELAY is set; held bytes leave together when the ACK comes, or with the FIN (which
//! Linux pushes with Nagle off).
//!
//! Receiver (RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2, and Linux's `__tcp_ack_snd_check`,
//! `tcp_in_quickack_mode`, `tcp_event_data_sent`, `tcp_delack_timer_handler`, `tcp_fin`): an end
//! that has not yet answered data with data ("quick-ACK mode") acknowledges each data segment at
//! once; once it has (interactive "pingpong" mode, threshold 1 since Linux 6.x), it delays the ACK
//! to ride on its own next data, but acknowledges at once on a second unacknowledged segment. If
//! nothing else happens, the delayed-ACK timer (40 ms, TCP_DELACK_MIN) sends the ACK and ends
//! interactive mode. A FIN puts the receiver in interactive mode; a FIN that arrives after the
//! receiver's own FIN is acknowledged at once.

use std::collections::VecDeque;

use super::calc::Side;

/// Linux's minimum delayed-ACK timeout, TCP_DELACK_MIN (HZ/25): the stall a timer ACK costs.
pub const DELAYED_ACK_MS: u64 = 40;

/// One application write: `bytes` written to the socket at once.
#[derive(Debug, Clone)]
pub struct Write {
    pub side: Side,
    pub bytes: u64,
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

#[derive(Debug, Default)]
struct End {
    nodelay: bool,
    /// Written and not yet sent: (write index, bytes).
    unsent: VecDeque<(usize, u64)>,
    /// A sub-MSS segment is unacknowledged (Minshall's check).
    small_in_flight: bool,
    fin_queued: bool,
    fin_sent: bool,
    /// Has received data (so that sending data is a reply).
    received_data: bool,
    /// Interactive (pingpong) mode: ACKs are delayed.
    pingpong: bool,
    /// Data segments (or a FIN) received and not yet acknowledged.
    delack: u32,
}

enum Event {
    /// A segment with payload or FIN reaches `to`.
    Deliver { to: Side, fin: bool },
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
    mss: u64,
    ends: [End; 2],
    events: VecDeque<Event>,
    out: Outcome,
}

impl Model {
    fn end(&mut self, s: Side) -> &mut End {
        &mut self.ends[idx(s)]
    }

    fn emit(&mut self, side: Side, payload: u64, writes: Vec<usize>, fin: bool) {
        let mss = self.mss;
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
        // Any pending ACK rides on this segment.
        let piggyback = e.delack > 0;
        e.delack = 0;
        self.out.segments.push(Segment { side, payload, writes, fin, pure_ack: false, timer: false });
        if piggyback {
            self.events.push_back(Event::Acked { to: peer(side) });
        }
        self.events.push_back(Event::Deliver { to: peer(side), fin });
    }

    fn pure_ack(&mut self, side: Side, timer: bool) {
        let e = self.end(side);
        e.delack = 0;
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
            let mss = self.mss;
            let e = self.end(side);
            let total: u64 = e.unsent.iter().map(|u| u.1).sum();
            if total == 0 {
                if e.fin_queued && !e.fin_sent {
                    self.emit(side, 0, Vec::new(), true);
                }
                return;
            }
            let take = total.min(mss);
            let partial = take < mss;
            if partial && !(e.nodelay || !e.small_in_flight || e.fin_queued) {
                return; // Nagle holds it.
            }
            let mut left = take;
            let mut writes = Vec::new();
            while left > 0 {
                let (w, b) = e.unsent.front_mut().expect("bytes to send");
                let n = (*b).min(left);
                if writes.last() != Some(w) {
                    writes.push(*w);
                }
                *b -= n;
                left -= n;
                if *b == 0 {
                    e.unsent.pop_front();
                }
            }
            let fin = e.fin_queued && e.unsent.is_empty();
            self.emit(side, take, writes, fin);
        }
    }

    fn run_events(&mut self) {
        while let Some(ev) = self.events.pop_front() {
            match ev {
                Event::Acked { to } => {
                    self.end(to).small_in_flight = false;
                    self.try_send(to);
                }
                Event::Deliver { to, fin } => {
                    let e = self.end(to);
                    if fin && e.fin_sent {
                        // FIN in FIN-WAIT: acknowledged at once (then TIME-WAIT).
                        self.pure_ack(to, false);
                        continue;
                    }
                    if fin {
                        e.pingpong = true;
                    } else {
                        e.received_data = true;
                    }
                    e.delack += 1;
                    if !e.pingpong || e.delack >= 2 {
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

/// Runs the steps; `writes` gives each write's side and size. `nodelay` is indexed client, server.
pub fn run(writes: &[Write], steps: &[Step], mss: u64, nodelay: [bool; 2]) -> Outcome {
    let mut m = Model {
        mss: mss.max(1),
        ends: [End { nodelay: nodelay[0], ..End::default() }, End { nodelay: nodelay[1], ..End::default() }],
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
            if m.end(peer(side)).unsent.is_empty() {
                break;
            }
            m.stall(side);
        }
        match step {
            Step::Write(w) => {
                m.end(side).unsent.push_back((*w, writes[*w].bytes));
            }
            Step::Close(s) => m.end(*s).fin_queued = true,
        }
        m.try_send(side);
        m.run_events();
    }
    // Held bytes still waiting, or ACKs still owed, go when the timers fire.
    for side in [Side::Client, Side::Server] {
        if !m.end(peer(side)).unsent.is_empty() {
            m.stall(side);
        }
    }
    for side in [Side::Client, Side::Server] {
        let e = m.end(side);
        if e.delack > 0 && !(e.fin_sent && m.end(peer(side)).fin_sent) {
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
        Write { side, bytes }
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
        let out = run(&writes, &steps, 1000, [false, false]);
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
        let out = run(&writes, &steps, 1000, [false, false]);
        assert_eq!(out.stalls, 1, "{:#?}", out.segments);
        let last = out.segments.iter().rev().find(|s| s.payload > 0).unwrap();
        assert_eq!(last.writes, vec![3]);
        // With TCP_NODELAY on the client, no stall.
        let out = run(&writes, &steps, 1000, [true, false]);
        assert_eq!(out.stalls, 0);
    }
}
