//! Per-connection wire counts, and the table that assigns each captured segment to its connection
//! and direction.
//!
//! A connection is identified by its 4-tuple, oriented server/client. Which end is the server:
//! the end with the configured port; without one, the receiver of the first SYN (or the sender of
//! a SYN-ACK); without a handshake in the capture, the end with the lower port. A SYN that opens a
//! new connection on a 4-tuple whose earlier connection was closed (FIN or RST) or that carries a
//! different initial sequence number starts a new record (4-tuple reuse after TIME-WAIT).

use std::{collections::HashMap, net::SocketAddr};

use serde::Serialize;

use super::{
    packet::{Segment, tcp_flags},
    stream::Stream,
    tls_records::TlsCounts,
};

/// What crossed the wire in one direction of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirWire {
    /// Frames (packets as captured; on an interface with TSO/GSO, one frame may be a
    /// super-segment that a NIC would split into several).
    pub packets: u64,
    /// Frame bytes: the original length pcap reports, link-layer header included (14 bytes of
    /// Ethernet on `lo` and Ethernet NICs; no preamble, FCS or inter-frame gap).
    pub frame_bytes: u64,
    /// IP header bytes (IPv4 options and IPv6 extension headers included).
    pub ip_header_bytes: u64,
    /// TCP header bytes, options included.
    pub tcp_header_bytes: u64,
    /// TCP payload bytes, retransmissions included.
    pub tcp_payload_bytes: u64,
    /// Payload bytes whose sequence numbers had been seen before in this direction.
    pub retransmitted_payload_bytes: u64,
    /// Segments that repeat sequence space already seen (SYN, payload or FIN).
    pub retransmitted_packets: u64,
    /// Frame bytes of those segments (whole frames, even when part of one was new).
    pub retransmitted_frame_bytes: u64,
    /// Segments with no payload and no SYN, FIN or RST: pure ACKs and window updates.
    pub pure_acks: u64,
    /// Whether this direction sent a SYN, a FIN, an RST.
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    /// The MSS option of this direction's SYN, if seen.
    pub mss_option: Option<u16>,
    /// TLS record-layer breakdown of this direction's payload (each unique byte once).
    pub tls: TlsCounts,
}

impl DirWire {
    /// Payload bytes counted once each: what the sending application's TCP stream carried, as far
    /// as the capture saw it (equals the bytes the sender wrote to its socket when nothing was
    /// missed).
    pub fn unique_payload_bytes(&self) -> u64 {
        self.tcp_payload_bytes - self.retransmitted_payload_bytes
    }

    /// Link-layer bytes: frame bytes not in the IP packet (headers, VLAN tags, padding).
    pub fn link_bytes(&self) -> u64 {
        self.frame_bytes.saturating_sub(self.ip_header_bytes + self.tcp_header_bytes + self.tcp_payload_bytes)
    }
}

/// One TCP connection as seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnWire {
    /// The server's end (address and port), as on the wire.
    pub server: SocketAddr,
    /// The client's end, as on the wire.
    pub client: SocketAddr,
    /// Time of the first and the last packet, CLOCK_MONOTONIC ns (pcap's CLOCK_REALTIME stamps
    /// shifted by the offset between the clocks measured at capture start).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Whether the three-way handshake's SYN (client) was captured; false when the capture began
    /// mid-connection, in which case the TLS breakdown may start inside a record.
    pub handshake_seen: bool,
    /// Client to server.
    pub to_server: DirWire,
    /// Server to client.
    pub to_client: DirWire,
}

impl ConnWire {
    /// True if a FIN was seen from both ends, or an RST from either: the connection ended
    /// within the capture.
    pub fn closed(&self) -> bool {
        (self.to_server.fin && self.to_client.fin) || self.to_server.rst || self.to_client.rst
    }

    /// Frames and frame bytes in both directions.
    pub fn total(&self) -> (u64, u64) {
        (
            self.to_server.packets + self.to_client.packets,
            self.to_server.frame_bytes + self.to_client.frame_bytes,
        )
    }
}

/// A connection being counted.
struct Live {
    wire: ConnWire,
    client_isn: Option<u32>,
    to_server: Stream,
    to_client: Stream,
}

impl Live {
    fn new(server: SocketAddr, client: SocketAddr, ns: u64) -> Self {
        Self {
            wire: ConnWire {
                server,
                client,
                first_ns: ns,
                last_ns: ns,
                handshake_seen: false,
                to_server: DirWire::default(),
                to_client: DirWire::default(),
            },
            client_isn: None,
            to_server: Stream::default(),
            to_client: Stream::default(),
        }
    }

    fn finish(mut self) -> ConnWire {
        self.wire.to_server.tls = self.to_server.finish();
        self.wire.to_client.tls = self.to_client.finish();
        self.wire
    }
}

/// Segments not attributed to a connection, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub not_tcp: u64,
    pub fragments: u64,
    pub malformed: u64,
    /// TCP segments that matched no configured port (only when a port is set).
    pub other_port: u64,
}

/// All connections of a capture.
pub struct ConnTable {
    ports: Vec<u16>,
    live: HashMap<(SocketAddr, SocketAddr), Live>,
    /// Connections replaced by a new one on the same 4-tuple.
    done: Vec<ConnWire>,
    pub skipped: Skipped,
}

impl ConnTable {
    /// `ports`: the server's ports, which decide which end is the server (empty: guess from the
    /// handshake).
    pub fn new(ports: Vec<u16>) -> Self {
        Self { ports, live: HashMap::new(), done: Vec::new(), skipped: Skipped::default() }
    }

    /// Which end of a segment is the server: returns (server, client, from_client).
    fn orient(&self, s: &Segment) -> Option<(SocketAddr, SocketAddr, bool)> {
        let src = SocketAddr::new(s.src, s.src_port);
        let dst = SocketAddr::new(s.dst, s.dst_port);
        if !self.ports.is_empty() {
            return if self.ports.contains(&s.dst_port) {
                Some((dst, src, true))
            } else if self.ports.contains(&s.src_port) {
                Some((src, dst, false))
            } else {
                None
            };
        }
        if self.live.contains_key(&(dst, src)) {
            return Some((dst, src, true));
        }
        if self.live.contains_key(&(src, dst)) {
            return Some((src, dst, false));
        }
        let syn = s.has(tcp_flags::SYN);
        let ack = s.has(tcp_flags::ACK);
        let from_client = if syn && !ack {
            true
        } else if syn && ack {
            false
        } else {
            s.dst_port <= s.src_port
        };
        Some(if from_client { (dst, src, true) } else { (src, dst, false) })
    }

    /// Counts one captured segment. `frame_len` is the frame's original length, `ns` its time.
    pub fn add(&mut self, s: &Segment, frame_len: u32, ns: u64) {
        let Some((server, client, from_client)) = self.orient(s) else {
            self.skipped.other_port += 1;
            return;
        };
        let key = (server, client);
        let syn = s.has(tcp_flags::SYN);
        let opening = syn && !s.has(tcp_flags::ACK) && from_client;
        if opening && let Some(old) = self.live.get(&key) {
            let w = &old.wire;
            let ended = w.to_server.fin || w.to_client.fin || w.to_server.rst || w.to_client.rst;
            if ended || old.client_isn.is_some_and(|isn| isn != s.seq) {
                let old = self.live.remove(&key).unwrap();
                self.done.push(old.finish());
            }
        }
        let live = self.live.entry(key).or_insert_with(|| Live::new(server, client, ns));
        live.wire.first_ns = live.wire.first_ns.min(ns);
        live.wire.last_ns = live.wire.last_ns.max(ns);
        if opening {
            live.wire.handshake_seen = true;
            live.client_isn = Some(s.seq);
        }
        let (dir, stream) = if from_client {
            (&mut live.wire.to_server, &mut live.to_server)
        } else {
            (&mut live.wire.to_client, &mut live.to_client)
        };
        let fin = s.has(tcp_flags::FIN);
        let rst = s.has(tcp_flags::RST);
        dir.packets += 1;
        dir.frame_bytes += u64::from(frame_len);
        dir.ip_header_bytes += u64::from(s.ip_header_len);
        dir.tcp_header_bytes += u64::from(s.tcp_header_len);
        dir.tcp_payload_bytes += u64::from(s.payload_len);
        dir.syn |= syn;
        dir.fin |= fin;
        dir.rst |= rst;
        if syn && s.mss_option.is_some() {
            dir.mss_option = s.mss_option;
        }
        if s.payload_len == 0 && !syn && !fin && !rst {
            dir.pure_acks += 1;
        }
        // An RST carries no sequence space of its own (RFC 9293 §3.5.3), nor do its data bytes
        // (RFC 9293 §3.5.3 allows diagnostic data); it is not passed to the stream.
        if !rst || s.payload_len > 0 {
            let o = stream.segment(s.seq, syn, fin, s.payload_len, s.payload);
            dir.retransmitted_payload_bytes += o.retransmitted_bytes;
            if o.retransmission {
                dir.retransmitted_packets += 1;
                dir.retransmitted_frame_bytes += u64::from(frame_len);
            }
        }
    }

    /// Ends the capture: every connection, closed or not, in order of its first packet.
    pub fn finish(mut self) -> Vec<ConnWire> {
        let mut all = std::mem::take(&mut self.done);
        all.extend(self.live.into_values().map(Live::finish));
        all.sort_by_key(|c| (c.first_ns, c.client, c.server));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::packet::{linktype, parse, tests::frame_v4};

    const C: [u8; 4] = [127, 0, 0, 1];

    fn add(t: &mut ConnTable, from_client: bool, cport: u16, seq: u32, flags: u8, payload: &[u8], ns: u64) {
        let (src, dst) = if from_client { ((C, cport), (C, 1965)) } else { ((C, 1965), (C, cport)) };
        let f = frame_v4(src, dst, seq, flags, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], payload);
        let s = parse(linktype::ETHERNET, &f, f.len() as u32).unwrap();
        t.add(&s, f.len() as u32, ns);
    }

    #[test]
    fn a_connection_in_both_directions() {
        use tcp_flags::*;
        let mut t = ConnTable::new(vec![1965]);
        add(&mut t, true, 5000, 10, SYN, &[], 1);
        add(&mut t, false, 5000, 90, SYN | ACK, &[], 2);
        add(&mut t, true, 5000, 11, ACK, &[], 3);
        let hello = [22, 3, 1, 0, 3, 1, 2, 3];
        add(&mut t, true, 5000, 11, ACK | PSH, &hello, 4);
        add(&mut t, true, 5000, 11, ACK | PSH, &hello, 5); // retransmitted
        add(&mut t, false, 5000, 91, ACK | FIN, &[], 6);
        add(&mut t, true, 5000, 19, ACK | FIN, &[], 7);
        add(&mut t, false, 5000, 92, ACK, &[], 8);
        let conns = t.finish();
        assert_eq!(conns.len(), 1);
        let c = &conns[0];
        assert_eq!(c.server.port(), 1965);
        assert_eq!((c.first_ns, c.last_ns), (1, 8));
        assert!(c.handshake_seen && c.closed());
        let up = &c.to_server;
        assert_eq!((up.packets, up.tcp_payload_bytes, up.retransmitted_payload_bytes), (5, 16, 8));
        assert_eq!((up.retransmitted_packets, up.pure_acks), (1, 1));
        assert_eq!(up.retransmitted_frame_bytes, 14 + 20 + 32 + 8);
        assert_eq!(up.tcp_header_bytes, 5 * 32);
        assert_eq!(up.frame_bytes, 5 * (14 + 20 + 32) + 16);
        assert_eq!(up.link_bytes(), 5 * 14);
        assert_eq!(up.tls.handshake.records, 1);
        assert_eq!(up.tls.total_bytes(), up.unique_payload_bytes());
        assert_eq!(c.to_client.pure_acks, 1);
    }

    #[test]
    fn a_new_syn_after_close_starts_a_new_connection() {
        use tcp_flags::*;
        let mut t = ConnTable::new(Vec::new());
        add(&mut t, true, 6000, 10, SYN, &[], 1);
        add(&mut t, false, 6000, 90, SYN | ACK, &[], 2);
        add(&mut t, true, 6000, 11, RST, &[], 3);
        add(&mut t, true, 6000, 5000, SYN, &[], 4);
        add(&mut t, true, 6000, 5000, SYN, &[], 5); // SYN retransmitted: same connection
        let conns = t.finish();
        assert_eq!(conns.len(), 2);
        assert!(conns[0].to_server.rst);
        assert_eq!(conns[1].to_server.packets, 2);
        assert_eq!(conns[1].to_server.retransmitted_packets, 1);
        assert_eq!(conns[1].server.port(), 1965);
    }

    #[test]
    fn without_a_port_the_syn_decides_the_server() {
        use tcp_flags::*;
        let mut t = ConnTable::new(Vec::new());
        // Client on a lower port than the server.
        let f = frame_v4((C, 80), (C, 9000), 1, SYN, &[], &[]);
        t.add(&parse(linktype::ETHERNET, &f, f.len() as u32).unwrap(), f.len() as u32, 1);
        let f = frame_v4((C, 9000), (C, 80), 1, SYN | ACK, &[], &[]);
        t.add(&parse(linktype::ETHERNET, &f, f.len() as u32).unwrap(), f.len() as u32, 2);
        let conns = t.finish();
        assert_eq!(conns.len(), 1);
        assert_eq!((conns[0].server.port(), conns[0].client.port()), (9000, 80));
        assert_eq!((conns[0].to_server.packets, conns[0].to_client.packets), (1, 1));
    }
}
