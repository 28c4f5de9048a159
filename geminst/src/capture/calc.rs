//! Wire bytes of one Gemini request predicted from the protocol specifications: every TLS record
//! of the handshake, the request, the response and the closure, cut into TCP segments and wrapped
//! in TCP, IP and link-layer headers, with the pure ACKs each side sends.
//!
//! Sizes of messages and records come from the specifications (RFC 8446 for TLS 1.3; RFC 5246,
//! RFC 5288, RFC 8422, RFC 7627, RFC 5746 for TLS 1.2; RFC 6066 for SNI; RFC 9293 and RFC 7323
//! for TCP; RFC 791 and RFC 8200 for IP). How messages are grouped into records, records into
//! sends and sends into segments, and when a pure ACK is sent, the specifications leave to the
//! implementation: the model follows one of two server styles ([`ServerStyle`]: geminst's own
//! server, or rustls writing one record per send) and two client styles ([`ClientStyle`]: geminst
//! load, or rustls one record per send) over Linux TCP (Nagle's algorithm, MSG_MORE, quick-ACK and
//! delayed-ACK modes), described step by step in docs/wire-bytes.md with the source of each step.

use serde::Serialize;

use super::{
    certs::CertChain,
    connection::ConnWire,
    tcp_model::{self, DELAYED_ACK_MS, Link, Segment, Step, Write},
    tls_records::{RecordTally, TlsCounts, content_type},
};

/// Largest TLS plaintext fragment: 2^14 bytes (RFC 8446 §5.1; RFC 5246 §6.2.1).
pub const MAX_FRAGMENT: u64 = 1 << 14;
/// TLS record header: type, legacy version, length (RFC 8446 §5.1).
pub const RECORD_HEADER: u64 = 5;
/// Handshake message header: type (1) and length (3) (RFC 8446 §4; RFC 5246 §7.4).
pub const HANDSHAKE_HEADER: u64 = 4;
/// AEAD tag of AES-GCM and ChaCha20-Poly1305 (RFC 5116 §5.1, RFC 8439 §2.8).
pub const AEAD_TAG: u64 = 16;
/// TLS 1.3 inner content type byte of TLSInnerPlaintext, no padding (RFC 8446 §5.2).
pub const TLS13_INNER_TYPE: u64 = 1;
/// TLS 1.2 AES-GCM explicit nonce carried in each record (RFC 5288 §3).
pub const GCM_EXPLICIT_NONCE: u64 = 8;
/// TLS 1.2 Finished verify_data length (RFC 5246 §7.4.9).
pub const TLS12_VERIFY_DATA: u64 = 12;
/// An alert: level and description (RFC 8446 §6; close_notify is description 0).
pub const ALERT_BODY: u64 = 2;
/// ChangeCipherSpec body: the single byte 1 (RFC 5246 §7.1; RFC 8446 Appendix D.4).
pub const CCS_BODY: u64 = 1;

/// IP headers without options (RFC 791 §3.1) and IPv6 without extension headers (RFC 8200 §3).
pub const IPV4_HEADER: u64 = 20;
pub const IPV6_HEADER: u64 = 40;
/// TCP header without options (RFC 9293 §3.1).
pub const TCP_HEADER: u64 = 20;
/// Options Linux puts on a segment after the SYN with timestamps on: NOP, NOP, TSopt (10 bytes)
/// (RFC 7323 §3; the NOPs align it to 32 bits, as RFC 7323 Appendix A suggests).
pub const TCP_TS_OPTIONS: u64 = 12;
/// Options of Linux's SYN and SYN-ACK with timestamps: MSS (4, RFC 9293 §3.7.1), SACK-permitted
/// (2, RFC 2018), TSopt (10, RFC 7323), NOP (1) and window scale (3, RFC 7323 §2).
pub const TCP_SYN_OPTIONS_TS: u64 = 20;
/// Without timestamps: MSS (4), NOP NOP SACK-permitted (4), NOP window scale (4).
pub const TCP_SYN_OPTIONS_NO_TS: u64 = 12;
/// Ethernet II header as pcap counts it: destination, source, EtherType (IEEE 802.3); `lo` on
/// Linux presents the same 14 bytes. The physical medium adds preamble and start delimiter (8),
/// FCS (4) and inter-frame gap (12) that no capture sees.
pub const ETHERNET_HEADER: u64 = 14;

/// A Gemini success header, `20 text/plain\r\n`.
pub const DEFAULT_RESPONSE_HEADER: u64 = 15;
/// The MSS on Ethernet with TCP timestamps: 1500 − 20 − 20 − 12.
pub const DEFAULT_MSS: u32 = 1448;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// The negotiated AEAD (and, in TLS 1.3, hash: SHA-384 for AES-256-GCM, SHA-256 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    /// Hash output length: the TLS 1.3 Finished size (RFC 8446 §4.4.4).
    fn hash_len(self) -> u64 {
        if self == Cipher::Aes256Gcm { 48 } else { 32 }
    }

    /// Per-record bytes besides the plaintext, record header included.
    fn record_overhead(self, tls: TlsVersion) -> u64 {
        match tls {
            // TLSCiphertext: header, then TLSInnerPlaintext (content, type byte) sealed with a tag.
            TlsVersion::Tls13 => RECORD_HEADER + TLS13_INNER_TYPE + AEAD_TAG,
            // GenericAEADCipher: header, explicit nonce (GCM only; ChaCha20-Poly1305 derives its
            // nonce from the sequence number, RFC 7905 §2), ciphertext, tag.
            TlsVersion::Tls12 => {
                let nonce = if self == Cipher::Chacha20Poly1305 { 0 } else { GCM_EXPLICIT_NONCE };
                RECORD_HEADER + nonce + AEAD_TAG
            }
        }
    }

    /// The cipher of a suite as rustls names it (`TLS13_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256`, ...); AES-128-GCM for a name it does not
    /// recognise.
    pub fn from_suite_name(name: &str) -> Cipher {
        if name.contains("AES_256_GCM") {
            Cipher::Aes256Gcm
        } else if name.contains("CHACHA20") {
            Cipher::Chacha20Poly1305
        } else {
            Cipher::Aes128Gcm
        }
    }

    pub fn name(self, tls: TlsVersion) -> &'static str {
        match (tls, self) {
            (TlsVersion::Tls13, Cipher::Aes128Gcm) => "TLS_AES_128_GCM_SHA256",
            (TlsVersion::Tls13, Cipher::Aes256Gcm) => "TLS_AES_256_GCM_SHA384",
            (TlsVersion::Tls13, Cipher::Chacha20Poly1305) => "TLS_CHACHA20_POLY1305_SHA256",
            (TlsVersion::Tls12, Cipher::Aes128Gcm) => "TLS_ECDHE_*_WITH_AES_128_GCM_SHA256",
            (TlsVersion::Tls12, Cipher::Aes256Gcm) => "TLS_ECDHE_*_WITH_AES_256_GCM_SHA384",
            (TlsVersion::Tls12, Cipher::Chacha20Poly1305) => "TLS_ECDHE_*_WITH_CHACHA20_POLY1305_SHA256",
        }
    }
}

/// The key-exchange group (RFC 8446 §4.2.7; RFC 8422 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyExchange {
    X25519,
    Secp256r1,
    Secp384r1,
    /// The hybrid post-quantum group (draft-ietf-tls-ecdhe-mlkem), TLS 1.3 only.
    X25519Mlkem768,
}

impl KeyExchange {
    /// Key share bytes sent by the client and by the server (RFC 7748 §6 for X25519; an
    /// uncompressed point 0x04‖x‖y for the NIST curves, RFC 8446 §4.2.8.2; ML-KEM-768
    /// encapsulation key 1184 / ciphertext 1088 bytes plus the X25519 share).
    fn share_bytes(self) -> (u64, u64) {
        match self {
            KeyExchange::X25519 => (32, 32),
            KeyExchange::Secp256r1 => (65, 65),
            KeyExchange::Secp384r1 => (97, 97),
            KeyExchange::X25519Mlkem768 => (1184 + 32, 1088 + 32),
        }
    }
}

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientOffers {
    /// Only the version that is negotiated.
    Only,
    /// TLS 1.2 and TLS 1.3 (the default of most clients).
    Both,
}

/// How the server hands its records to the socket: which records share a system call, and how
/// the connection ends. docs/wire-bytes.md describes each step and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStyle {
    /// geminst's built-in server (geminst/src/serve/conn.rs): each handshake flight in one send;
    /// after a TLS 1.3 handshake the session ticket waits and leaves with the response; the
    /// response goes in sends of what rustls's 64 KiB buffer holds, the last one with
    /// close_notify and MSG_MORE, so the FIN that shutdown sends rides on its last segment.
    Geminst,
    /// rustls through tokio-rustls on a stream without vectored writes (the stand-in server of
    /// tests/capture/gemini.rs): each record its own send; the tickets right after the handshake;
    /// the response; close_notify; then the FIN.
    Rustls,
}

/// How the client hands its records to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStyle {
    /// geminst load (geminst/src/load/client.rs): tokio-rustls on a vectored stream sends all the
    /// records of a flight in one writev; the request is handed to rustls before the handshake,
    /// so in TLS 1.3 it leaves with the client's Finished, and in TLS 1.2 alone once the server's
    /// Finished has arrived.
    Load,
    /// rustls through tokio-rustls on a stream without vectored writes (the stand-in client of
    /// tests/capture/gemini.rs): each record its own send; the request written after the
    /// handshake.
    Rustls,
}

/// TLS 1.3 session tickets geminst's server sends (`send_tls13_tickets` in serve/tls.rs).
pub const GEMINST_TICKETS: u32 = 1;
/// TLS 1.3 session tickets rustls sends by default (`ServerConfig::send_tls13_tickets`).
pub const RUSTLS_TICKETS: u32 = 2;
/// Bytes of a stateful ticket: rustls's server-side session cache names a session by a 32-byte
/// random id (`ExpectFinished::emit_ticket` in rustls 0.23 server/tls13.rs).
pub const STATEFUL_TICKET_BYTES: u32 = 32;
/// rustls's limit on queued TLS bytes (DEFAULT_BUFFER_LIMIT, rustls 0.23 common_state.rs): a
/// write of plaintext is accepted up to the limit less what is already queued, before any record
/// overhead.
pub const RUSTLS_BUFFER_LIMIT: u64 = 64 * 1024;
/// Body bytes geminst's server hands to rustls per call (`BLOCK` and `CHUNK`, serve/conn.rs and
/// serve/bench_routes.rs); the header goes with the first piece.
pub const GEMINST_BODY_PIECE: u64 = 64 * 1024;
/// The most segments one prediction may model (bounds its time and memory).
pub const MAX_SEGMENTS: u64 = 1 << 22;

/// One client end of the link and what it does: see [`predict`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalcParams {
    /// How the server writes.
    pub server: ServerStyle,
    /// How the client writes.
    pub client: ClientStyle,
    /// The request as the client writes it (URL and CRLF).
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_body_bytes: u64,
    /// Response header bytes (`20 text/plain\r\n` is 15).
    pub response_header_bytes: u64,
    pub tls: TlsVersion,
    /// Payload bytes per full-sized TCP segment, as getsockopt(TCP_MAXSEG) reports on a connected
    /// socket: the MSS option less the TCP options on data segments (1448 on Ethernet with
    /// timestamps; 65483 on Linux's `lo`).
    pub mss: u32,
    pub ipv6: bool,
    /// Link-layer header bytes per frame (14 for Ethernet and Linux's `lo`; 0 for IP only).
    pub link_header_bytes: u64,
    /// TCP timestamps on (Linux's default, net.ipv4.tcp_timestamps = 1).
    pub tcp_timestamps: bool,
    pub cipher: Cipher,
    pub key_exchange: KeyExchange,
    pub client_offers: ClientOffers,
    /// The host name the client sends in SNI (none for an IP address).
    pub sni_host: Option<String>,
    /// TLS 1.3 NewSessionTicket messages the server sends after the handshake (geminst's server
    /// sends 1; rustls and OpenSSL send 2 by default).
    pub tickets: u32,
    /// Bytes of each ticket (rustls with a server-side session cache: a 32-byte id).
    pub ticket_bytes: u32,
    /// The server's certificate chain.
    pub cert: CertChain,
    /// TCP_NODELAY on the client's socket (geminst load sets it).
    pub client_nodelay: bool,
    /// TCP_NODELAY on the server's socket (geminst's server sets it).
    pub server_nodelay: bool,
    /// Whether the client sends its own close_notify before closing (geminst load does not;
    /// a client that calls shutdown on its TLS stream does).
    pub client_close_notify: bool,
}

impl Default for CalcParams {
    /// geminst load against geminst's built-in server: [`CalcParams::geminst`].
    fn default() -> Self {
        Self::geminst()
    }
}

impl CalcParams {
    /// geminst load against geminst's built-in server: its TLS_AES_128_GCM_SHA256 preference,
    /// one stateful ticket, TCP_NODELAY on both ends, the client closing without close_notify.
    pub fn geminst() -> Self {
        Self {
            server: ServerStyle::Geminst,
            client: ClientStyle::Load,
            cipher: Cipher::Aes128Gcm,
            tickets: GEMINST_TICKETS,
            server_nodelay: true,
            ..Self::rustls()
        }
    }

    /// The stand-in rustls server and client of the first measurements (tests/capture/gemini.rs):
    /// rustls's default ciphers (AES-256-GCM first) and two tickets, no TCP_NODELAY on the
    /// server; the client with TCP_NODELAY and without close_notify, as geminst load.
    pub fn rustls() -> Self {
        Self {
            server: ServerStyle::Rustls,
            client: ClientStyle::Rustls,
            request_bytes: 1,
            response_body_bytes: 0,
            response_header_bytes: DEFAULT_RESPONSE_HEADER,
            tls: TlsVersion::Tls13,
            mss: DEFAULT_MSS,
            ipv6: false,
            link_header_bytes: ETHERNET_HEADER,
            tcp_timestamps: true,
            cipher: Cipher::Aes256Gcm,
            key_exchange: KeyExchange::X25519,
            client_offers: ClientOffers::Both,
            sni_host: Some("localhost".into()),
            tickets: RUSTLS_TICKETS,
            ticket_bytes: STATEFUL_TICKET_BYTES,
            cert: CertChain::typical(),
            client_nodelay: true,
            server_nodelay: false,
            client_close_notify: false,
        }
    }

    /// geminst load against geminst's server, on a connection that negotiated `tls` with the
    /// suite rustls names `suite` (as the server logs them). The server prefers TLS 1.3, so a
    /// connection that negotiated TLS 1.2 came from a client that offered only TLS 1.2 (as
    /// `geminst load --tls 1.2` does); for TLS 1.3 the client is taken to offer both versions, as
    /// load does by default.
    pub fn geminst_negotiated(tls: TlsVersion, suite: &str) -> Self {
        Self {
            tls,
            cipher: Cipher::from_suite_name(suite),
            client_offers: match tls {
                TlsVersion::Tls12 => ClientOffers::Only,
                TlsVersion::Tls13 => ClientOffers::Both,
            },
            ..Self::geminst()
        }
    }

    /// The defaults of a server style.
    pub fn for_server(style: ServerStyle) -> Self {
        match style {
            ServerStyle::Geminst => Self::geminst(),
            ServerStyle::Rustls => Self::rustls(),
        }
    }

    /// Takes the MSS and IP version from a captured connection: the smaller MSS option of the two
    /// SYNs less the timestamp options, and IPv6 if the addresses are.
    pub fn with_wire(mut self, conn: &ConnWire) -> Self {
        self.ipv6 = conn.server.is_ipv6();
        let opts = [conn.to_server.mss_option, conn.to_client.mss_option];
        if let Some(mss) = opts.iter().flatten().min() {
            let ts = if self.tcp_timestamps { TCP_TS_OPTIONS } else { 0 };
            self.mss = u32::from(*mss).saturating_sub(ts as u32).max(1);
        }
        self
    }

    /// Checks the parameters; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.request_bytes == 0 {
            return Err("--request-bytes must be at least 1 (a Gemini request is a URL and CRLF)".into());
        }
        if self.request_bytes > 1 << 30 || self.response_body_bytes > 1 << 40 {
            return Err("sizes are limited to 1 GiB for the request and 1 TiB for the response".into());
        }
        if self.response_header_bytes > 1 << 30 {
            return Err("--response-header-bytes is limited to 1 GiB".into());
        }
        if !(64..=65495).contains(&self.mss) {
            return Err(format!("--mss {} is outside 64..=65495", self.mss));
        }
        let segments = (self.request_bytes + self.response_header_bytes + self.response_body_bytes)
            / u64::from(self.mss);
        if segments > MAX_SEGMENTS {
            return Err(format!(
                "--request-bytes and --response-bytes at --mss {} make about {segments} segments; the \
                 calculator models at most {MAX_SEGMENTS}",
                self.mss
            ));
        }
        if self.link_header_bytes > 64 {
            return Err(format!("--link-header-bytes {} is more than 64", self.link_header_bytes));
        }
        if self.tickets > 16 || self.ticket_bytes > 65_535 {
            return Err("--tickets is at most 16 and --ticket-bytes at most 65535".into());
        }
        if self.tls == TlsVersion::Tls12 && self.key_exchange == KeyExchange::X25519Mlkem768 {
            return Err("X25519MLKEM768 exists only in TLS 1.3".into());
        }
        if let Some(h) = &self.sni_host
            && (h.is_empty() || h.len() > 255)
        {
            return Err("the SNI host name must be 1 to 255 bytes".into());
        }
        if self.cert.der_bytes.is_empty() || self.cert.der_bytes.iter().any(|&b| b >= 1 << 24) {
            return Err("the certificate chain must hold 1 or more certificates under 16 MiB".into());
        }
        Ok(())
    }
}

/// Which end sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Server,
}

/// One named part of the exchange: some segments one side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    pub name: String,
    pub from: Side,
    /// How its bytes add up.
    pub detail: String,
    /// Where the sizes and the behaviour come from.
    pub source: String,
    /// TLS records (content type on the wire, bytes with header).
    pub records: Vec<(u8, u64)>,
    pub tcp_payload_bytes: u64,
    pub packets: u64,
    pub pure_acks: u64,
    pub ip_header_bytes: u64,
    pub tcp_header_bytes: u64,
    pub frame_bytes: u64,
}

/// Predicted totals of one direction, field for field comparable with the capture's `DirWire`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirPrediction {
    pub packets: u64,
    pub frame_bytes: u64,
    pub ip_header_bytes: u64,
    pub tcp_header_bytes: u64,
    pub tcp_payload_bytes: u64,
    pub pure_acks: u64,
    pub tls: TlsCounts,
}

/// The prediction: every part in order, and the totals per direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prediction {
    pub params: CalcParams,
    pub parts: Vec<Part>,
    pub to_server: DirPrediction,
    pub to_client: DirPrediction,
    /// Times the exchange waits for a delayed-ACK timer (Nagle's algorithm holding a small write
    /// behind a small segment whose ACK the other side delays).
    pub delayed_ack_stalls: u32,
    /// The least time those stalls add, ms (40 ms each on Linux).
    pub delayed_ack_stall_ms: u64,
}

impl Prediction {
    pub fn total_frame_bytes(&self) -> u64 {
        self.to_server.frame_bytes + self.to_client.frame_bytes
    }
}

/// Header bytes per segment.
struct Headers {
    ip: u64,
    tcp_syn: u64,
    tcp: u64,
    link: u64,
}

impl Headers {
    fn new(p: &CalcParams) -> Self {
        let (syn_opts, opts) =
            if p.tcp_timestamps { (TCP_SYN_OPTIONS_TS, TCP_TS_OPTIONS) } else { (TCP_SYN_OPTIONS_NO_TS, 0) };
        Self {
            ip: if p.ipv6 { IPV6_HEADER } else { IPV4_HEADER },
            tcp_syn: TCP_HEADER + syn_opts,
            tcp: TCP_HEADER + opts,
            link: p.link_header_bytes,
        }
    }

    /// A part of `packets` segments carrying `payload` bytes in all.
    #[allow(clippy::too_many_arguments)]
    fn part(
        &self,
        from: Side,
        name: String,
        detail: String,
        source: &str,
        records: Vec<(u8, u64)>,
        payload: u64,
        packets: u64,
        pure_acks: u64,
        syn: bool,
    ) -> Part {
        let ip = self.ip * packets;
        let tcp = if syn { self.tcp_syn } else { self.tcp } * packets;
        Part {
            name,
            from,
            detail,
            source: source.to_string(),
            records,
            tcp_payload_bytes: payload,
            packets,
            pure_acks,
            ip_header_bytes: ip,
            tcp_header_bytes: tcp,
            frame_bytes: ip + tcp + payload + self.link * packets,
        }
    }
}

/// One message of the exchange (or a group the implementation always seals together) and what
/// it carries.
struct Msg {
    side: Side,
    label: String,
    detail: String,
    source: &'static str,
    records: Vec<(u8, u64)>,
}

/// One send: the records an application hands to the socket in one system call.
struct Send {
    side: Side,
    /// The messages whose records it carries, in order.
    msgs: Vec<usize>,
    records: Vec<(u8, u64)>,
    /// Sent with MSG_MORE.
    more: bool,
}

/// The exchange as the two applications perform it, in order.
#[derive(Default)]
struct Script {
    msgs: Vec<Msg>,
    sends: Vec<Send>,
    steps: Vec<Step>,
}

impl Script {
    /// Registers a message; [`Script::send`] puts it on the wire.
    fn msg(
        &mut self,
        side: Side,
        label: &str,
        detail: String,
        source: &'static str,
        records: Vec<(u8, u64)>,
    ) -> usize {
        self.msgs.push(Msg { side, label: label.to_string(), detail, source, records });
        self.msgs.len() - 1
    }

    /// One send carrying the whole of each message.
    fn send(&mut self, msgs: &[usize]) {
        let side = self.msgs[msgs[0]].side;
        let records = msgs.iter().flat_map(|&m| self.msgs[m].records.iter().copied()).collect();
        self.send_records(side, msgs.to_vec(), records, false);
    }

    /// One send per message.
    fn send_each(&mut self, msgs: &[usize]) {
        for &m in msgs {
            self.send(&[m]);
        }
    }

    /// One send of the given records, which belong to `msgs`.
    fn send_records(&mut self, side: Side, msgs: Vec<usize>, records: Vec<(u8, u64)>, more: bool) {
        self.steps.push(Step::Write(self.sends.len()));
        self.sends.push(Send { side, msgs, records, more });
    }

    fn close(&mut self, side: Side) {
        self.steps.push(Step::Close(side));
    }
}

const SRC_TCP_OPEN: &str = "RFC 9293 §3.5 (three-way handshake); options RFC 9293 §3.7.1, RFC 2018, RFC 7323";
const SRC_ACK: &str =
    "RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2; Linux quick-ACK and delayed-ACK (docs/wire-bytes.md)";
const SRC_CH: &str = "RFC 8446 §4.1.2, §4.2; RFC 6066 §3, §8; RFC 8422 §5.1; RFC 7627";
const SRC_SH13: &str = "RFC 8446 §4.1.3, §4.2.1, §4.2.8";
const SRC_CCS: &str = "RFC 8446 Appendix D.4 (middlebox compatibility mode)";
const SRC_FLIGHT13: &str = "RFC 8446 §4.3.1, §4.4.2, §4.4.3, §4.4.4, §5.2";
const SRC_FIN13: &str = "RFC 8446 §4.4.4, §5.2";
const SRC_APP: &str = "RFC 8446 §5.1, §5.2 (2^14-byte fragments; type byte and AEAD tag)";
const SRC_APP12: &str = "RFC 5246 §6.2.3.3, RFC 5288 §3 (explicit nonce and tag)";
const SRC_CLOSE: &str = "RFC 8446 §6.1 close_notify";
const SRC_FIN: &str = "RFC 9293 §3.6 (FIN)";
const SRC_NST: &str = "RFC 8446 §4.6.1";
const SRC_FLIGHT12: &str = "RFC 5246 §7.4.1.3, §7.4.2, §7.4.5; RFC 8422 §5.4; RFC 5746; RFC 7627";
const SRC_CKE: &str = "RFC 8422 §5.7";
const SRC_FIN12: &str = "RFC 5246 §7.1, §7.4.9; RFC 5288 §3";
const SRC_GEMINST_RESPONSE: &str = "RFC 8446 §5.1, §5.2; RFC 5246 §6.2.3.3, RFC 5288 §3; sends: serve/conn.rs `respond`, \
     rustls 0.23 DEFAULT_BUFFER_LIMIT";
const SRC_GEMINST_CLOSE: &str =
    "RFC 8446 §6.1 close_notify; serve/conn.rs `flush_last` (MSG_MORE) and `close` (shutdown)";

/// The ClientHello body (RFC 8446 §4.1.2) as rustls 0.23 sends it on a first visit, and a
/// description of its parts.
fn client_hello(p: &CalcParams) -> (u64, String) {
    let offers13 = p.tls == TlsVersion::Tls13 || p.client_offers == ClientOffers::Both;
    let offers12 = p.tls == TlsVersion::Tls12 || p.client_offers == ClientOffers::Both;
    // legacy_session_id: 32 random bytes when offering TLS 1.3 (middlebox compatibility,
    // RFC 8446 Appendix D.4), empty otherwise.
    let session_id = if offers13 { 32 } else { 0 };
    // Cipher suites: rustls's 9 (3 TLS 1.3, 6 TLS 1.2 ECDHE) plus the renegotiation SCSV
    // (RFC 5746 §3.3) when TLS 1.2 is offered.
    let suites = 9 + u64::from(offers12);
    let mut ext = Vec::new();
    if let Some(h) = &p.sni_host {
        // server_name: list length 2, type 1, name length 2, name (RFC 6066 §3).
        ext.push(("server_name", 5 + h.len() as u64));
    }
    ext.push(("supported_groups", 2 + 2 * 3)); // x25519, secp256r1, secp384r1 (RFC 8446 §4.2.7)
    ext.push(("ec_point_formats", 2)); // uncompressed only (RFC 8422 §5.1.2)
    ext.push(("extended_master_secret", 0)); // RFC 7627 §5.1
    ext.push(("signature_algorithms", 2 + 2 * 9)); // 9 schemes (RFC 8446 §4.2.3)
    ext.push(("status_request", 5)); // OCSP, empty lists (RFC 6066 §8)
    let versions = u64::from(offers13) + u64::from(offers12);
    ext.push(("supported_versions", 1 + 2 * versions)); // RFC 8446 §4.2.1
    if offers13 {
        let (share, _) = p.key_exchange.share_bytes();
        ext.push(("key_share", 2 + 2 + 2 + share)); // one KeyShareEntry (RFC 8446 §4.2.8)
        ext.push(("psk_key_exchange_modes", 2)); // psk_dhe_ke (RFC 8446 §4.2.9)
    }
    let ext_bytes: u64 = ext.iter().map(|(_, b)| 4 + b).sum();
    let fixed = 2 + 32 + 1 + session_id + 2 + 2 * suites + 1 + 1 + 2;
    let body = fixed + ext_bytes;
    let list: Vec<String> = ext.iter().map(|(n, b)| format!("{n} {}", 4 + b)).collect();
    let detail = format!(
        "record 5 + handshake 4 + ClientHello {body} (version 2, random 32, session id 1+{session_id}, \
         {suites} suites 2+{}, compression 2, extensions 2+{ext_bytes}: {})",
        2 * suites,
        list.join(", ")
    );
    (body, detail)
}

/// The messages' plaintext cut into records of at most 2^14 bytes: the record sizes on the wire.
fn split_records(plaintext: u64, overhead: u64) -> Vec<u64> {
    let full = plaintext / MAX_FRAGMENT;
    let rest = plaintext % MAX_FRAGMENT;
    let mut v = vec![MAX_FRAGMENT + overhead; full as usize];
    if rest > 0 {
        v.push(rest + overhead);
    }
    v
}

fn typed(ty: u8, sizes: Vec<u64>) -> Vec<(u8, u64)> {
    sizes.into_iter().map(|s| (ty, s)).collect()
}

/// The certificate_list entries' bytes: each a 3-byte length and the DER (plus a 2-byte
/// extensions length in TLS 1.3, RFC 8446 §4.4.2; RFC 5246 §7.4.2).
fn cert_entries(p: &CalcParams, tls13: bool) -> u64 {
    let per = if tls13 { 3 + 2 } else { 3 };
    p.cert.der_bytes.iter().map(|&d| per + u64::from(d)).sum()
}

/// Predicts the wire bytes of one Gemini request over a new TCP connection and a full TLS
/// handshake. The parameters are checked first; the error names the one that is wrong.
pub fn predict(p: &CalcParams) -> Result<Prediction, String> {
    p.validate()?;
    let h = Headers::new(p);
    let mut parts = Vec::new();
    // TCP three-way handshake (RFC 9293 §3.5).
    let syn_detail = format!(
        "IP {} + TCP {} (options: MSS, SACK-permitted, {}window scale)",
        h.ip,
        h.tcp_syn,
        if p.tcp_timestamps { "timestamps, " } else { "" }
    );
    parts.push(h.part(
        Side::Client,
        "TCP SYN".into(),
        syn_detail.clone(),
        SRC_TCP_OPEN,
        vec![],
        0,
        1,
        0,
        true,
    ));
    parts.push(h.part(Side::Server, "TCP SYN-ACK".into(), syn_detail, SRC_TCP_OPEN, vec![], 0, 1, 0, true));
    parts.push(h.part(
        Side::Client,
        "ACK".into(),
        "completes the handshake".into(),
        SRC_TCP_OPEN,
        vec![],
        0,
        1,
        1,
        false,
    ));

    let mut script = Script::default();
    let (ch_body, ch_detail) = client_hello(p);
    let ch = RECORD_HEADER + HANDSHAKE_HEADER + ch_body;
    let ch =
        script.msg(Side::Client, "TLS ClientHello", ch_detail, SRC_CH, vec![(content_type::HANDSHAKE, ch)]);
    script.send(&[ch]);
    match p.tls {
        TlsVersion::Tls13 => tls13(p, &mut script),
        TlsVersion::Tls12 => tls12(p, &mut script),
    }
    let writes: Vec<Write> = script
        .sends
        .iter()
        .map(|w| Write { side: w.side, bytes: w.records.iter().map(|r| r.1).sum(), more: w.more })
        .collect();
    let link =
        Link { mss: u64::from(p.mss), nodelay: [p.client_nodelay, p.server_nodelay], tcp_header: h.tcp };
    let outcome = tcp_model::run(&writes, &script.steps, link);
    parts.extend(parts_from(&outcome.segments, &script, &h));

    let mut to_server = DirPrediction::default();
    let mut to_client = DirPrediction::default();
    for part in &parts {
        let d = if part.from == Side::Client { &mut to_server } else { &mut to_client };
        d.packets += part.packets;
        d.frame_bytes += part.frame_bytes;
        d.ip_header_bytes += part.ip_header_bytes;
        d.tcp_header_bytes += part.tcp_header_bytes;
        d.tcp_payload_bytes += part.tcp_payload_bytes;
        d.pure_acks += part.pure_acks;
        for &(ty, bytes) in &part.records {
            let t: &mut RecordTally = match ty {
                content_type::HANDSHAKE => &mut d.tls.handshake,
                content_type::CHANGE_CIPHER_SPEC => &mut d.tls.change_cipher_spec,
                content_type::ALERT => &mut d.tls.alert,
                _ => &mut d.tls.application_data,
            };
            t.records += 1;
            t.bytes += bytes;
        }
    }
    Ok(Prediction {
        params: p.clone(),
        parts,
        to_server,
        to_client,
        delayed_ack_stalls: outcome.stalls,
        delayed_ack_stall_ms: u64::from(outcome.stalls) * DELAYED_ACK_MS,
    })
}

/// Groups the model's segments into named parts: the segments of one write (with the other
/// side's pure ACKs between them gathered into one part after), or consecutive pure ACKs.
fn parts_from(segments: &[Segment], script: &Script, h: &Headers) -> Vec<Part> {
    // A segment continues the part of the one before if it carries more of the same send, or
    // more of the same message (a response cut into several sends).
    let last_msg = |s: &Segment| s.writes.last().and_then(|&w| script.sends[w].msgs.last().copied());
    let first_msg = |s: &Segment| s.writes.first().and_then(|&w| script.sends[w].msgs.first().copied());
    let continues = |a: &Segment, b: &Segment| {
        a.side == b.side
            && !a.pure_ack
            && !b.pure_ack
            && !a.fin
            && b.payload > 0
            && (a.writes.last() == b.writes.first() || last_msg(a).is_some_and(|m| Some(m) == first_msg(b)))
    };
    let is_plain_ack_of = |s: &Segment, side: Side| s.side != side && s.pure_ack && !s.timer;
    let mut parts = Vec::new();
    let mut placed = vec![false; script.sends.len()];
    let mut i = 0;
    while i < segments.len() {
        let first = &segments[i];
        let mut group = vec![first];
        let mut between = 0u64;
        let mut j = i + 1;
        if first.pure_ack {
            while j < segments.len()
                && segments[j].side == first.side
                && segments[j].pure_ack
                && segments[j].timer == first.timer
            {
                group.push(&segments[j]);
                j += 1;
            }
        } else {
            loop {
                let mut k = j;
                while k < segments.len() && is_plain_ack_of(&segments[k], first.side) {
                    k += 1;
                }
                if k < segments.len() && continues(group[group.len() - 1], &segments[k]) {
                    between += (k - j) as u64;
                    group.push(&segments[k]);
                    j = k + 1;
                } else {
                    break;
                }
            }
        }
        let packets = group.len() as u64;
        let payload: u64 = group.iter().map(|s| s.payload).sum();
        let fin = group.last().is_some_and(|s| s.fin);
        let part = if first.pure_ack {
            let (name, detail) = if first.timer {
                (
                    "ACK (delayed-ACK timer)",
                    format!("{packets} pure ACK(s) after a stall of at least {DELAYED_ACK_MS} ms"),
                )
            } else {
                ("ACK", format!("{packets} pure ACK(s)"))
            };
            h.part(first.side, name.into(), detail, SRC_ACK, vec![], 0, packets, packets, false)
        } else if payload == 0 {
            h.part(
                first.side,
                "FIN".into(),
                "a bare FIN segment".into(),
                SRC_FIN,
                vec![],
                0,
                packets,
                0,
                false,
            )
        } else {
            // Sends appear in order, so a repeated one is the last one seen.
            let mut sends: Vec<usize> = Vec::new();
            for s in &group {
                for &w in &s.writes {
                    if sends.last() != Some(&w) {
                        sends.push(w);
                    }
                }
            }
            let mut msgs: Vec<usize> = Vec::new();
            for &w in &sends {
                for &m in &script.sends[w].msgs {
                    if !msgs.contains(&m) {
                        msgs.push(m);
                    }
                }
            }
            let mut name: Vec<&str> = msgs.iter().map(|&m| script.msgs[m].label.as_str()).collect();
            if fin {
                name.push("FIN");
            }
            let mut detail: Vec<String> = msgs.iter().map(|&m| script.msgs[m].detail.clone()).collect();
            if sends.len() > 1 {
                detail.push(format!("{} sends", sends.len()));
            }
            if packets > 1 {
                detail.push(format!("{packets} segments of at most the MSS"));
            }
            let mut records = Vec::new();
            for &w in &sends {
                if !placed[w] {
                    placed[w] = true;
                    records.extend(script.sends[w].records.iter().copied());
                }
            }
            let mut sources: Vec<&str> = Vec::new();
            for &m in &msgs {
                if !sources.contains(&script.msgs[m].source) {
                    sources.push(script.msgs[m].source);
                }
            }
            let source = sources.join("; ");
            h.part(
                first.side,
                name.join(" + "),
                detail.join("; "),
                &source,
                records,
                payload,
                packets,
                0,
                false,
            )
        };
        parts.push(part);
        if between > 0 {
            let detail = format!("{between} pure ACK(s) sent while the segments above arrived");
            parts.push(h.part(
                other(first.side),
                "ACK".into(),
                detail,
                SRC_ACK,
                vec![],
                0,
                between,
                between,
                false,
            ));
        }
        i = j;
    }
    parts
}

fn other(s: Side) -> Side {
    match s {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// TLS 1.3 after the ClientHello.
fn tls13(p: &CalcParams, s: &mut Script) {
    let over = p.cipher.record_overhead(TlsVersion::Tls13);
    let (_, server_share) = p.key_exchange.share_bytes();
    // ServerHello: version 2, random 32, session id echo 1+32, suite 2, compression 1, extensions
    // 2 + supported_versions (4+2) + key_share (4 + group 2 + length 2 + share).
    let sh_body = 2 + 32 + 1 + 32 + 2 + 1 + 2 + 6 + 4 + 4 + server_share;
    let sh = RECORD_HEADER + HANDSHAKE_HEADER + sh_body;
    let sh = s.msg(
        Side::Server,
        "TLS ServerHello",
        format!("record 5 + handshake 4 + ServerHello {sh_body} (key share {server_share})"),
        SRC_SH13,
        vec![(content_type::HANDSHAKE, sh)],
    );
    let ccs = RECORD_HEADER + CCS_BODY;
    let server_ccs = s.msg(
        Side::Server,
        "TLS ChangeCipherSpec",
        "record 5 + 1, unencrypted".into(),
        SRC_CCS,
        vec![(content_type::CHANGE_CIPHER_SPEC, ccs)],
    );
    // EncryptedExtensions (an empty list, plus the empty server_name acknowledgement when the
    // client sent SNI, RFC 6066 §3), Certificate, CertificateVerify, Finished: one flight, which
    // rustls seals into as few records as the 2^14 limit allows.
    let ee = HANDSHAKE_HEADER + 2 + if p.sni_host.is_some() { 4 } else { 0 };
    let cert = HANDSHAKE_HEADER + 1 + 3 + cert_entries(p, true);
    let cv = HANDSHAKE_HEADER + 2 + 2 + u64::from(p.cert.signature_bytes);
    let fin = HANDSHAKE_HEADER + p.cipher.hash_len();
    let flight = ee + cert + cv + fin;
    let recs = split_records(flight, over);
    let flight = s.msg(
        Side::Server,
        "TLS EncryptedExtensions+Certificate+CertificateVerify+Finished",
        format!(
            "plaintext {flight} (EncryptedExtensions {ee}, Certificate {cert} for {} B of DER, \
             CertificateVerify {cv} ({}: signature {} B), Finished {fin}) in {} record(s), each + {over}",
            p.cert.total_der_bytes(),
            p.cert.key,
            p.cert.signature_bytes,
            recs.len()
        ),
        SRC_FLIGHT13,
        typed(content_type::APPLICATION_DATA, recs),
    );
    match p.server {
        ServerStyle::Rustls => s.send_each(&[sh, server_ccs, flight]),
        ServerStyle::Geminst => s.send(&[sh, server_ccs, flight]),
    }
    let client_ccs = s.msg(
        Side::Client,
        "TLS ChangeCipherSpec",
        "record 5 + 1, unencrypted".into(),
        SRC_CCS,
        vec![(content_type::CHANGE_CIPHER_SPEC, ccs)],
    );
    let client_fin = s.msg(
        Side::Client,
        "TLS Finished",
        format!("Finished {fin} + {over}"),
        SRC_FIN13,
        vec![(content_type::APPLICATION_DATA, fin + over)],
    );
    let req = split_records(p.request_bytes, over);
    let req = s.msg(
        Side::Client,
        "request",
        format!("{} B in {} record(s), each + {over}", p.request_bytes, req.len()),
        SRC_APP,
        typed(content_type::APPLICATION_DATA, req),
    );
    match p.client {
        ClientStyle::Rustls => s.send_each(&[client_ccs, client_fin, req]),
        ClientStyle::Load => s.send(&[client_ccs, client_fin, req]),
    }
    let mut held = None;
    if p.tickets > 0 {
        let nst = HANDSHAKE_HEADER + 4 + 4 + 1 + 32 + 2 + u64::from(p.ticket_bytes) + 2;
        let recs = split_records(nst * u64::from(p.tickets), over);
        let tickets = s.msg(
            Side::Server,
            "TLS NewSessionTicket",
            format!(
                "{} × NewSessionTicket {nst} (lifetime 4, age_add 4, nonce 1+32, ticket 2+{}, extensions 2) \
                 in {} record(s) + {over}",
                p.tickets,
                p.ticket_bytes,
                recs.len()
            ),
            SRC_NST,
            typed(content_type::APPLICATION_DATA, recs),
        );
        match p.server {
            ServerStyle::Rustls => s.send(&[tickets]),
            // geminst's server leaves the tickets queued in rustls; they go with the response.
            ServerStyle::Geminst => held = Some(tickets),
        }
    }
    response_and_close(p, s, TlsVersion::Tls13, held);
}

/// The record sizes of the response in each send geminst's server makes, given `queued` TLS bytes
/// already in rustls's buffer (the TLS 1.3 ticket). The server hands rustls the header with the
/// first piece of the body, then the body in pieces of [`GEMINST_BODY_PIECE`]; rustls takes
/// plaintext up to [`RUSTLS_BUFFER_LIMIT`] less what is queued, sealing it in records of at most
/// 2^14; when it takes less than offered, the server writes out everything queued (one send) and
/// offers the rest. The last send is what remains, with close_notify after it (added by the
/// caller).
fn geminst_response_sends(header: u64, body: u64, over: u64, queued: u64) -> Vec<Vec<u64>> {
    let mut sends = Vec::new();
    let mut buf = Vec::new();
    let mut buffered = queued;
    let mut body_left = body;
    let mut first = true;
    loop {
        let piece = body_left.min(GEMINST_BODY_PIECE);
        body_left -= piece;
        let mut left = piece + if std::mem::take(&mut first) { header } else { 0 };
        while left > 0 {
            let n = left.min(RUSTLS_BUFFER_LIMIT.saturating_sub(buffered));
            for r in split_records(n, over) {
                buffered += r;
                buf.push(r);
            }
            left -= n;
            if left > 0 {
                sends.push(std::mem::take(&mut buf));
                buffered = 0;
            }
        }
        if body_left == 0 {
            break;
        }
    }
    sends.push(buf);
    sends
}

/// The response, the server's close_notify and FIN, and the client's close. `held`: the TLS 1.3
/// tickets geminst's server sends with the response.
fn response_and_close(p: &CalcParams, s: &mut Script, tls: TlsVersion, held: Option<usize>) {
    let over = p.cipher.record_overhead(tls);
    let (alert_type, source) = match tls {
        TlsVersion::Tls13 => (content_type::APPLICATION_DATA, SRC_APP),
        TlsVersion::Tls12 => (content_type::ALERT, SRC_APP12),
    };
    let response = p.response_header_bytes + p.response_body_bytes;
    let close = (alert_type, ALERT_BODY + over);
    let close_detail = format!("alert 2 + {over}");
    let head = format!("header {} + body {} = {response} B", p.response_header_bytes, p.response_body_bytes);
    match p.server {
        ServerStyle::Rustls => {
            let recs = split_records(response, over);
            let detail = format!("{head} in {} record(s), each + {over}", recs.len());
            let resp =
                s.msg(Side::Server, "response", detail, source, typed(content_type::APPLICATION_DATA, recs));
            let close = s.msg(Side::Server, "close_notify", close_detail.clone(), SRC_CLOSE, vec![close]);
            s.send(&[resp]);
            s.send(&[close]);
        }
        ServerStyle::Geminst => {
            let ticket_records = held.map(|t| s.msgs[t].records.clone()).unwrap_or_default();
            let queued = ticket_records.iter().map(|r| r.1).sum();
            let sends = geminst_response_sends(p.response_header_bytes, p.response_body_bytes, over, queued);
            let all: Vec<u64> = sends.iter().flatten().copied().collect();
            let detail = format!(
                "{head} in {} record(s), each + {over}, in {} send(s) of what rustls's {} KiB buffer holds{}",
                all.len(),
                sends.len(),
                RUSTLS_BUFFER_LIMIT / 1024,
                if held.is_some() { " (the ticket queued first)" } else { "" }
            );
            let resp = s.msg(
                Side::Server,
                "response",
                detail,
                SRC_GEMINST_RESPONSE,
                typed(content_type::APPLICATION_DATA, all),
            );
            let close_msg = s.msg(
                Side::Server,
                "close_notify",
                format!("{close_detail}, in the last send, with MSG_MORE"),
                SRC_GEMINST_CLOSE,
                vec![close],
            );
            let n = sends.len();
            for (i, recs) in sends.into_iter().enumerate() {
                let mut msgs = Vec::new();
                let mut records = Vec::new();
                if i == 0
                    && let Some(t) = held
                {
                    msgs.push(t);
                    records.extend(ticket_records.iter().copied());
                }
                if !recs.is_empty() {
                    msgs.push(resp);
                    records.extend(typed(content_type::APPLICATION_DATA, recs));
                }
                let last = i + 1 == n;
                if last {
                    msgs.push(close_msg);
                    records.push(close);
                }
                s.send_records(Side::Server, msgs, records, last);
            }
        }
    }
    s.close(Side::Server);
    if p.client_close_notify {
        let close = s.msg(Side::Client, "close_notify", close_detail, SRC_CLOSE, vec![close]);
        s.send(&[close]);
    }
    s.close(Side::Client);
}

/// TLS 1.2 (ECDHE with an AEAD) after the ClientHello.
fn tls12(p: &CalcParams, s: &mut Script) {
    let over = p.cipher.record_overhead(TlsVersion::Tls12);
    let (_, share) = p.key_exchange.share_bytes();
    // ServerHello: version 2, random 32, session id 1+32, suite 2, compression 1, extensions 2 +
    // server_name ack (4, when SNI was sent) + renegotiation_info (5, RFC 5746 §3.6) +
    // extended_master_secret (4, RFC 7627 §5.1).
    let sh = HANDSHAKE_HEADER + 72 + if p.sni_host.is_some() { 4 } else { 0 } + 5 + 4;
    let cert = HANDSHAKE_HEADER + 3 + cert_entries(p, false);
    // ServerKeyExchange (RFC 8422 §5.4): curve type 1, named curve 2, point 1+len, signature
    // scheme 2, signature 2+len.
    let ske = HANDSHAKE_HEADER + 1 + 2 + 1 + share + 2 + 2 + u64::from(p.cert.signature_bytes);
    let shd = HANDSHAKE_HEADER;
    let flight = sh + cert + ske + shd;
    let recs = split_records(flight, RECORD_HEADER);
    let flight = s.msg(
        Side::Server,
        "TLS ServerHello+Certificate+ServerKeyExchange+ServerHelloDone",
        format!(
            "ServerHello {sh}, Certificate {cert} for {} B of DER, ServerKeyExchange {ske} ({}: signature {} B), \
             ServerHelloDone {shd}: {} plaintext record(s) + 5",
            p.cert.total_der_bytes(),
            p.cert.key,
            p.cert.signature_bytes,
            recs.len()
        ),
        SRC_FLIGHT12,
        typed(content_type::HANDSHAKE, recs),
    );
    s.send(&[flight]);
    let cke = RECORD_HEADER + HANDSHAKE_HEADER + 1 + share;
    let cke = s.msg(
        Side::Client,
        "TLS ClientKeyExchange",
        format!("record 5 + handshake 4 + point 1+{share}"),
        SRC_CKE,
        vec![(content_type::HANDSHAKE, cke)],
    );
    let ccs = RECORD_HEADER + CCS_BODY;
    // Finished is encrypted: verify_data 12 in a handshake message, sealed.
    let fin = HANDSHAKE_HEADER + TLS12_VERIFY_DATA + over;
    let finish = |s: &mut Script, side: Side| {
        let c = s.msg(
            side,
            "TLS ChangeCipherSpec",
            "record 5 + 1".into(),
            SRC_FIN12,
            vec![(content_type::CHANGE_CIPHER_SPEC, ccs)],
        );
        let f = s.msg(
            side,
            "TLS Finished",
            format!("Finished 16 + {over}"),
            SRC_FIN12,
            vec![(content_type::HANDSHAKE, fin)],
        );
        [c, f]
    };
    let [client_ccs, client_fin] = finish(s, Side::Client);
    match p.client {
        ClientStyle::Rustls => s.send_each(&[cke, client_ccs, client_fin]),
        ClientStyle::Load => s.send(&[cke, client_ccs, client_fin]),
    }
    let [server_ccs, server_fin] = finish(s, Side::Server);
    match p.server {
        ServerStyle::Rustls => s.send_each(&[server_ccs, server_fin]),
        ServerStyle::Geminst => s.send(&[server_ccs, server_fin]),
    }
    let req = split_records(p.request_bytes, over);
    let req = s.msg(
        Side::Client,
        "request",
        format!("{} B in {} record(s), each + {over}", p.request_bytes, req.len()),
        SRC_APP12,
        typed(content_type::APPLICATION_DATA, req),
    );
    s.send(&[req]);
    response_and_close(p, s, TlsVersion::Tls12, None);
}

/// Relative difference of a measurement from a prediction: (measured − predicted) / predicted.
pub fn relative_error(measured: u64, predicted: u64) -> f64 {
    (measured as f64 - predicted as f64) / predicted as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test client of the first measurements: rustls without TCP_NODELAY, sending its own
    /// close_notify.
    fn params(tls: TlsVersion) -> CalcParams {
        CalcParams {
            client_nodelay: false,
            client_close_notify: true,
            request_bytes: 30,
            response_body_bytes: 100,
            tls,
            mss: 65483,
            client_offers: ClientOffers::Only,
            cert: CertChain { der_bytes: vec![354], key: "ECDSA P-256".into(), signature_bytes: 72 },
            ..CalcParams::rustls()
        }
    }

    /// The first connection measured on loopback (rustls client and server, TLS 1.3, a 354-byte
    /// rcgen certificate whose CertificateVerify signature happened to be 72 bytes): tcpdump
    /// counted 11 frames and 1118 bytes client to server, 10 frames and 1677 bytes back.
    #[test]
    fn tls13_matches_a_measured_loopback_connection() {
        let pr = predict(&params(TlsVersion::Tls13)).unwrap();
        assert_eq!((pr.to_server.packets, pr.to_server.frame_bytes), (11, 1118));
        assert_eq!((pr.to_client.packets, pr.to_client.frame_bytes), (10, 1677));
        assert_eq!(pr.to_server.tls.handshake, RecordTally { records: 1, bytes: 228 });
        assert_eq!(pr.to_client.tls.handshake, RecordTally { records: 1, bytes: 127 });
        assert_eq!(pr.to_client.tls.application_data, RecordTally { records: 4, bytes: 876 });
        assert_eq!(pr.to_server.tcp_payload_bytes, 384);
        assert_eq!((pr.to_server.pure_acks, pr.to_client.pure_acks), (5, 4));
    }

    /// The same for TLS 1.2 (TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384; that run's ServerKeyExchange
    /// signature was 71 bytes): 12 frames and 1133 bytes, 10 frames and 1471 bytes.
    #[test]
    fn tls12_matches_a_measured_loopback_connection() {
        let mut p = params(TlsVersion::Tls12);
        p.cert.signature_bytes = 71;
        let pr = predict(&p).unwrap();
        assert_eq!((pr.to_server.packets, pr.to_server.frame_bytes), (12, 1133));
        assert_eq!((pr.to_client.packets, pr.to_client.frame_bytes), (10, 1471));
        assert_eq!(pr.to_server.tls.handshake, RecordTally { records: 3, bytes: 237 });
        assert_eq!(pr.to_client.tls.handshake, RecordTally { records: 2, bytes: 622 });
        assert_eq!(pr.to_client.tls.alert, RecordTally { records: 1, bytes: 31 });
    }

    #[test]
    fn records_split_at_two_to_the_fourteen() {
        assert_eq!(split_records(16384, 22), vec![16406]);
        assert_eq!(split_records(16385, 22), vec![16406, 23]);
        assert_eq!(split_records(0, 22), Vec::<u64>::new());
        let mut p = params(TlsVersion::Tls13);
        p.response_body_bytes = 1 << 20;
        let pr = predict(&p).unwrap();
        // 1 MiB + 15 header bytes: 64 full records and one of 15 bytes; with the encrypted
        // flight, the tickets and the close_notify, 68 application_data records.
        let app = pr.to_client.tls.application_data;
        assert_eq!(app.records, 1 + 1 + 65 + 1);
        let flight = 588 - 412 + 354 - 71 + 72;
        assert_eq!(app.bytes, flight + 184 + (1 << 20) + 15 + 65 * 22 + 24);
        let resp = pr.parts.iter().find(|x| x.name == "response").unwrap();
        assert_eq!(resp.packets, resp.tcp_payload_bytes.div_ceil(65483));
    }

    #[test]
    fn headers_follow_ip_version_timestamps_and_mss() {
        let mut p = params(TlsVersion::Tls13);
        p.mss = 1448;
        p.response_body_bytes = 100_000;
        let v4 = predict(&p).unwrap();
        p.ipv6 = true;
        let v6 = predict(&p).unwrap();
        assert_eq!(v6.to_client.ip_header_bytes, 2 * v4.to_client.ip_header_bytes);
        assert_eq!(v6.to_client.frame_bytes - v4.to_client.frame_bytes, 20 * v4.to_client.packets);
        p.tcp_timestamps = false;
        let nots = predict(&p).unwrap();
        // Every segment loses 12 option bytes but the SYN-ACK, which loses 8.
        assert_eq!(
            v6.to_client.tcp_header_bytes - nots.to_client.tcp_header_bytes,
            12 * (v6.to_client.packets - 1) + 8
        );
        // 100 kB over MSS 1448 needs many segments.
        let resp = v4.parts.iter().find(|x| x.name.starts_with("response")).unwrap();
        assert_eq!(resp.packets, resp.tcp_payload_bytes.div_ceil(1448));
    }

    #[test]
    fn bad_parameters_are_named() {
        let mut p = params(TlsVersion::Tls13);
        p.request_bytes = 0;
        assert!(predict(&p).unwrap_err().contains("--request-bytes"));
        let mut p = params(TlsVersion::Tls13);
        p.mss = 10;
        assert!(predict(&p).unwrap_err().contains("--mss"));
        let mut p = params(TlsVersion::Tls12);
        p.key_exchange = KeyExchange::X25519Mlkem768;
        assert!(predict(&p).is_err());
    }

    #[test]
    fn client_hello_sizes_match_rustls() {
        // Measured: TLS 1.3 only 223 B after the record header; TLS 1.2 only 145 B.
        let (b13, _) = client_hello(&params(TlsVersion::Tls13));
        assert_eq!(HANDSHAKE_HEADER + b13, 223);
        let (b12, _) = client_hello(&params(TlsVersion::Tls12));
        assert_eq!(HANDSHAKE_HEADER + b12, 145);
    }

    /// geminst load against geminst serve on loopback with the server's 349-byte certificate,
    /// as `root_calc_predicts_geminst_serve` measured them (frames and packets per direction).
    #[test]
    fn geminst_style_matches_measured_loopback_connections() {
        let cert = CertChain { der_bytes: vec![349], key: "ECDSA P-256".into(), signature_bytes: 71 };
        let cases = [
            (TlsVersion::Tls13, 41, 1, (6, 763), (5, 1145)),
            (TlsVersion::Tls13, 1024, 16_369, (7, 1812), (5, 17_513)),
            (TlsVersion::Tls12, 41, 1, (7, 783), (6, 1103)),
            (TlsVersion::Tls12, 512, 30_000, (8, 1320), (6, 31_131)),
        ];
        for (tls, req, body, up, down) in cases {
            let suite = if tls == TlsVersion::Tls13 {
                "TLS13_AES_128_GCM_SHA256"
            } else {
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            };
            let p = CalcParams {
                request_bytes: req,
                response_body_bytes: body,
                mss: 65483,
                cert: cert.clone(),
                ..CalcParams::geminst_negotiated(tls, suite)
            };
            let pr = predict(&p).unwrap();
            assert_eq!((pr.to_server.packets, pr.to_server.frame_bytes), up, "{tls:?} {req} {body}");
            assert_eq!((pr.to_client.packets, pr.to_client.frame_bytes), down, "{tls:?} {req} {body}");
            assert_eq!(pr.delayed_ack_stalls, 0);
            // The response, close_notify (and in TLS 1.3 the ticket) and the FIN in one segment.
            let last = pr.parts.iter().rfind(|x| x.from == Side::Server && x.tcp_payload_bytes > 0).unwrap();
            assert_eq!(last.packets, 1, "{last:#?}");
            assert!(last.name.ends_with("response + close_notify + FIN"), "{}", last.name);
            assert_eq!(last.name.starts_with("TLS NewSessionTicket"), tls == TlsVersion::Tls13);
        }
    }

    /// The response cut as geminst's server and rustls's 64 KiB buffer cut it: 100000 body bytes
    /// after a 103-byte ticket go in two sends, the first ending where the buffer filled.
    #[test]
    fn geminst_response_sends_follow_the_rustls_buffer() {
        let sends = geminst_response_sends(15, 100_000, 22, 103);
        // 65536 − 103 = 65433 plaintext bytes accepted first: 3 full records and 16281.
        assert_eq!(sends[0], vec![16_406, 16_406, 16_406, 16_303]);
        // The other 118 bytes of the first piece, then the second piece of 34464.
        assert_eq!(sends[1], vec![140, 16_406, 16_406, 1_718]);
        assert_eq!(sends.len(), 2);
        let plaintext: u64 = sends.iter().flatten().map(|r| r - 22).sum();
        assert_eq!(plaintext, 100_015);
        // Small responses: one send; no body: the header alone.
        assert_eq!(geminst_response_sends(15, 1024, 22, 103), vec![vec![1061]]);
        assert_eq!(geminst_response_sends(30, 0, 29, 0), vec![vec![59]]);
        // 1 MiB in TLS 1.3: 80 response records (measured: 83 application_data records with the
        // encrypted flight, the ticket and close_notify), in 17 sends.
        let sends = geminst_response_sends(15, 1 << 20, 22, 103);
        assert_eq!(sends.iter().flatten().count(), 80);
        assert_eq!(sends.len(), 17);
        let p = CalcParams { response_body_bytes: 1 << 20, mss: 65483, ..CalcParams::geminst() };
        let pr = predict(&p).unwrap();
        assert_eq!(pr.to_client.tls.application_data.records, 83);
        // In the rustls style the same response is ⌈1048591 / 2^14⌉ = 65 records (with the flight,
        // the ticket and close_notify around them).
        let pr = predict(&CalcParams { server: ServerStyle::Rustls, ..p }).unwrap();
        assert_eq!(pr.to_client.tls.application_data.records, 1 + 1 + 65 + 1);
    }

    #[test]
    fn too_many_segments_is_bad_input() {
        let p = CalcParams { response_body_bytes: 1 << 40, mss: 1448, ..CalcParams::geminst() };
        let e = predict(&p).unwrap_err();
        assert!(e.contains("segments") && e.contains("--mss 1448"), "{e}");
        let p = CalcParams { response_body_bytes: 1 << 30, mss: 1448, ..CalcParams::geminst() };
        assert!(predict(&p).is_ok());
    }
}
