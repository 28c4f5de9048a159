//! Parsing one captured frame down to its TCP segment: the link-layer header (Ethernet, Linux
//! cooked capture, raw IP, BSD loopback), IPv4 or IPv6, and TCP. Sizes come from the headers'
//! own length fields, not from how much of the frame was captured, so a frame cut short by the
//! snap length still counts its full size.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Link-layer header types (pcap `LINKTYPE_*` values, <https://www.tcpdump.org/linktypes.html>).
pub mod linktype {
    /// BSD loopback: a 4-byte address family in host byte order.
    pub const NULL: i32 = 0;
    /// Ethernet II (also what Linux's `lo` presents, with zero MAC addresses).
    pub const ETHERNET: i32 = 1;
    /// Raw IP as OpenBSD and old Linux `DLT_RAW` numbered it.
    pub const RAW_OPENBSD: i32 = 12;
    pub const RAW_BSDOS: i32 = 14;
    /// Raw IP: the frame starts with the IP header.
    pub const RAW: i32 = 101;
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    pub const LOOP: i32 = 108;
    /// Linux cooked capture v1 (the `any` pseudo-interface), 16-byte header.
    pub const LINUX_SLL: i32 = 113;
    /// Linux cooked capture v2, 20-byte header.
    pub const LINUX_SLL2: i32 = 276;
}

/// EtherType values (IEEE 802.3, IANA "ieee-802-numbers").
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;

/// Address families in the BSD loopback header: AF_INET is 2 everywhere; AF_INET6 differs by OS.
const AF_INET: u32 = 2;
const AF_INET6: [u32; 3] = [10, 24, 28];

/// IP protocol number of TCP (IANA "protocol-numbers"; RFC 9293).
pub const IPPROTO_TCP: u8 = 6;

/// IPv6 extension headers that may precede TCP (RFC 8200 §4).
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTIONS: u8 = 60;

/// Fixed header sizes: IPv4 without options (RFC 791 §3.1), IPv6 (RFC 8200 §3), TCP without
/// options (RFC 9293 §3.1).
pub const IPV4_HEADER: u32 = 20;
pub const IPV6_HEADER: u32 = 40;
pub const TCP_HEADER: u32 = 20;

/// TCP control bits (RFC 9293 §3.1).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// TCP option kinds (RFC 9293 §3.2).
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;

/// Why a frame was not counted as a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IPv4/IPv6 carrying TCP (ARP, UDP, ICMP, an unknown link type).
    NotTcp,
    /// An IP fragment: TCP ports are only in the first fragment, so fragments are not attributed.
    Fragment,
    /// A header that is cut short or inconsistent.
    Malformed,
}

/// One TCP segment as seen in a captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP header bytes: IPv4 with options, or IPv6 with its extension headers.
    pub ip_header_len: u32,
    /// TCP header bytes, options included (the data offset field times four).
    pub tcp_header_len: u32,
    /// TCP payload bytes according to the IP length field (not the captured length).
    pub payload_len: u32,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The MSS option, if the segment carries one (SYNs do).
    pub mss_option: Option<u16>,
    /// The captured part of the payload: `payload_len` bytes unless the snap length cut it.
    pub payload: &'a [u8],
}

impl Segment<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a frame of the given link type. `wire_len` is the frame's original length (pcap's
/// `len`), used when an IP length field is zero (IPv4 or IPv6 packets larger than 64 KiB made by
/// Linux "BIG TCP" carry no length of their own).
pub fn parse(link: i32, frame: &[u8], wire_len: u32) -> Result<Segment<'_>, Skip> {
    let (ethertype, l3) = match link {
        linktype::ETHERNET => {
            let mut at = 12;
            let mut ty = be16(frame, at).ok_or(Skip::Malformed)?;
            // 802.1Q / 802.1ad tags: 4 bytes each before the real EtherType.
            while ty == ETHERTYPE_VLAN || ty == ETHERTYPE_QINQ {
                at += 4;
                ty = be16(frame, at).ok_or(Skip::Malformed)?;
            }
            (ty, at + 2)
        }
        linktype::LINUX_SLL => (be16(frame, 14).ok_or(Skip::Malformed)?, 16),
        linktype::LINUX_SLL2 => (be16(frame, 0).ok_or(Skip::Malformed)?, 20),
        linktype::RAW | linktype::RAW_OPENBSD | linktype::RAW_BSDOS => match frame.first().map(|b| b >> 4) {
            Some(4) => (ETHERTYPE_IPV4, 0),
            Some(6) => (ETHERTYPE_IPV6, 0),
            _ => return Err(Skip::NotTcp),
        },
        linktype::NULL | linktype::LOOP => {
            let raw: [u8; 4] = frame.get(..4).ok_or(Skip::Malformed)?.try_into().unwrap();
            let family =
                if link == linktype::LOOP { u32::from_be_bytes(raw) } else { u32::from_ne_bytes(raw) };
            let ty = if family == AF_INET {
                ETHERTYPE_IPV4
            } else if AF_INET6.contains(&family) {
                ETHERTYPE_IPV6
            } else {
                return Err(Skip::NotTcp);
            };
            (ty, 4)
        }
        _ => return Err(Skip::NotTcp),
    };
    let packet = frame.get(l3..).ok_or(Skip::Malformed)?;
    let l3_wire_len = wire_len.saturating_sub(l3 as u32);
    let (src, dst, ip_header_len, ip_total_len, l4_at) = match ethertype {
        ETHERTYPE_IPV4 => ipv4(packet, l3_wire_len)?,
        ETHERTYPE_IPV6 => ipv6(packet, l3_wire_len)?,
        _ => return Err(Skip::NotTcp),
    };
    let tcp = packet.get(l4_at..).ok_or(Skip::Malformed)?;
    let src_port = be16(tcp, 0).ok_or(Skip::Malformed)?;
    let dst_port = be16(tcp, 2).ok_or(Skip::Malformed)?;
    let seq = be32(tcp, 4).ok_or(Skip::Malformed)?;
    let ack = be32(tcp, 8).ok_or(Skip::Malformed)?;
    let offset = u32::from(*tcp.get(12).ok_or(Skip::Malformed)? >> 4) * 4;
    let flags = *tcp.get(13).ok_or(Skip::Malformed)?;
    // RFC 9293 §3.1: the data offset counts 32-bit words and is at least 5.
    if offset < TCP_HEADER || ip_header_len + offset > ip_total_len {
        return Err(Skip::Malformed);
    }
    let payload_len = ip_total_len - ip_header_len - offset;
    let options = tcp.get(TCP_HEADER as usize..(offset as usize).min(tcp.len())).unwrap_or(&[]);
    let payload_start = (offset as usize).min(tcp.len());
    let payload_end = (payload_start + payload_len as usize).min(tcp.len());
    Ok(Segment {
        src,
        dst,
        src_port,
        dst_port,
        ip_header_len,
        tcp_header_len: offset,
        payload_len,
        seq,
        ack,
        flags,
        mss_option: mss_option(options),
        payload: &tcp[payload_start..payload_end],
    })
}

/// IPv4 (RFC 791 §3.1): returns (src, dst, header length, total length, offset of TCP).
fn ipv4(p: &[u8], wire_len: u32) -> Result<(IpAddr, IpAddr, u32, u32, usize), Skip> {
    let first = *p.first().ok_or(Skip::Malformed)?;
    if first >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = u32::from(first & 0x0f) * 4;
    let mut total = u32::from(be16(p, 2).ok_or(Skip::Malformed)?);
    if total == 0 {
        // Linux BIG TCP (and some TSO captures) leave the total length 0 for packets over 64 KiB.
        total = wire_len;
    }
    let frag = be16(p, 6).ok_or(Skip::Malformed)?;
    let proto = *p.get(9).ok_or(Skip::Malformed)?;
    let src: [u8; 4] = p.get(12..16).ok_or(Skip::Malformed)?.try_into().unwrap();
    let dst: [u8; 4] = p.get(16..20).ok_or(Skip::Malformed)?.try_into().unwrap();
    if ihl < IPV4_HEADER || ihl > total {
        return Err(Skip::Malformed);
    }
    if proto != IPPROTO_TCP {
        return Err(Skip::NotTcp);
    }
    // More-fragments flag, or a non-zero fragment offset.
    if frag & 0x3fff != 0 {
        return Err(Skip::Fragment);
    }
    Ok((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into(), ihl, total, ihl as usize))
}

/// IPv6 (RFC 8200 §3, §4): walks the extension headers up to TCP; their bytes count as IP header.
fn ipv6(p: &[u8], wire_len: u32) -> Result<(IpAddr, IpAddr, u32, u32, usize), Skip> {
    if p.first().ok_or(Skip::Malformed)? >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let payload = u32::from(be16(p, 4).ok_or(Skip::Malformed)?);
    // A zero payload length means a jumbogram (RFC 2675) or Linux BIG TCP: use the frame length.
    let total = if payload == 0 { wire_len } else { IPV6_HEADER + payload };
    let mut next = *p.get(6).ok_or(Skip::Malformed)?;
    let src: [u8; 16] = p.get(8..24).ok_or(Skip::Malformed)?.try_into().unwrap();
    let dst: [u8; 16] = p.get(24..40).ok_or(Skip::Malformed)?.try_into().unwrap();
    let mut at = IPV6_HEADER as usize;
    // Bounded: each extension header is at least 8 bytes, so a frame holds only so many.
    for _ in 0..16 {
        match next {
            IPPROTO_TCP => {
                if at as u32 > total {
                    return Err(Skip::Malformed);
                }
                return Ok((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into(), at as u32, total, at));
            }
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTIONS => {
                next = *p.get(at).ok_or(Skip::Malformed)?;
                at += (usize::from(*p.get(at + 1).ok_or(Skip::Malformed)?) + 1) * 8;
            }
            IPV6_FRAGMENT => return Err(Skip::Fragment),
            _ => return Err(Skip::NotTcp),
        }
    }
    Err(Skip::Malformed)
}

/// The MSS option's value (RFC 9293 §3.2, kind 2, length 4), if present and well formed.
fn mss_option(mut opts: &[u8]) -> Option<u16> {
    while let Some(&kind) = opts.first() {
        match kind {
            TCPOPT_EOL => return None,
            TCPOPT_NOP => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?);
                if len < 2 || len > opts.len() {
                    return None;
                }
                if kind == TCPOPT_MSS && len == 4 {
                    return be16(opts, 2);
                }
                opts = &opts[len..];
            }
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an Ethernet + IPv4 + TCP frame (for tests): `options` must be a multiple of 4 bytes.
    pub fn frame_v4(
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        flags: u8,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let total = 20 + tcp_len + payload.len();
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            IPPROTO_TCP,
            0,
            0,
        ]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.1.to_be_bytes());
        f.extend_from_slice(&dst.1.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&[((tcp_len / 4) << 4) as u8, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(options);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethernet_ipv4_tcp_sizes_come_from_headers() {
        // SYN with MSS 65495, SACK-permitted, timestamps, NOP, window scale: 20 option bytes.
        let opts = [2, 4, 0xff, 0xd7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let f = frame_v4(([127, 0, 0, 1], 40000), ([127, 0, 0, 1], 1965), 7, tcp_flags::SYN, &opts, &[]);
        let s = parse(linktype::ETHERNET, &f, f.len() as u32).unwrap();
        assert_eq!((s.ip_header_len, s.tcp_header_len, s.payload_len), (20, 40, 0));
        assert_eq!((s.src_port, s.dst_port, s.seq), (40000, 1965, 7));
        assert_eq!(s.mss_option, Some(65495));
        assert!(s.has(tcp_flags::SYN) && !s.has(tcp_flags::ACK));
    }

    #[test]
    fn truncated_capture_keeps_the_ip_length() {
        let f = frame_v4(([10, 0, 0, 1], 1), ([10, 0, 0, 2], 2), 0, tcp_flags::ACK, &[], &[7u8; 100]);
        let cut = &f[..60];
        let s = parse(linktype::ETHERNET, cut, f.len() as u32).unwrap();
        assert_eq!(s.payload_len, 100);
        assert_eq!(s.payload.len(), 60 - 14 - 40);
    }

    #[test]
    fn ipv6_extension_headers_count_as_ip_header() {
        let mut p = vec![0x60, 0, 0, 0];
        let tcp_len = 20u16;
        p.extend_from_slice(&(8 + tcp_len).to_be_bytes());
        p.extend_from_slice(&[IPV6_DEST_OPTIONS, 64]);
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[0, 80, 0, 81, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0, 0, 0, 0, 0, 0]);
        let s = parse(linktype::RAW, &p, p.len() as u32).unwrap();
        assert_eq!((s.ip_header_len, s.tcp_header_len, s.payload_len), (48, 20, 0));
    }

    #[test]
    fn fragments_and_non_tcp_are_skipped() {
        let mut f = frame_v4(([1, 1, 1, 1], 1), ([2, 2, 2, 2], 2), 0, 0, &[], &[1, 2, 3]);
        f[14 + 6] = 0x20; // more fragments
        assert_eq!(parse(linktype::ETHERNET, &f, f.len() as u32), Err(Skip::Fragment));
        f[14 + 6] = 0;
        f[14 + 9] = 17; // UDP
        assert_eq!(parse(linktype::ETHERNET, &f, f.len() as u32), Err(Skip::NotTcp));
        assert_eq!(parse(linktype::ETHERNET, &f[..20], f.len() as u32), Err(Skip::Malformed));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = crate::capture::tls_records::tests::Rng(0x5eed);
        for _ in 0..20_000 {
            let len = (rng.next() % 120) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len > 14 && rng.next().is_multiple_of(2) {
                buf[12] = 0x08;
                buf[13] = 0;
                buf[14] = 0x40 | (rng.next() % 16) as u8;
            }
            for link in [linktype::ETHERNET, linktype::RAW, linktype::LINUX_SLL, linktype::NULL, 276] {
                let _ = parse(link, &buf, rng.next() as u32);
            }
        }
    }
}
