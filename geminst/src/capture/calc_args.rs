//! `geminst calc`: the command line of the calculator and its report.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{ArgAction, Args, ValueEnum};

use super::{
    calc::{
        self, CalcParams, Cipher, ClientOffers, ClientStyle, KeyExchange, Prediction, ServerStyle, Side,
        TlsVersion,
    },
    certs::CertChain,
};
use crate::exit::bad_input;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CipherArg {
    Aes128gcm,
    Aes256gcm,
    Chacha20,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KxArg {
    X25519,
    P256,
    P384,
    X25519mlkem768,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OffersArg {
    /// The client offers only the version given by --tls
    Only,
    /// The client offers TLS 1.2 and 1.3
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerArg {
    /// geminst's built-in server (geminst serve)
    Geminst,
    /// rustls through tokio-rustls, one record per send, Nagle on (the stand-in of the capture tests)
    Rustls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientArg {
    /// geminst load
    Load,
    /// rustls through tokio-rustls, one record per send, the request after the handshake
    Rustls,
}

#[derive(Debug, Clone, Args)]
pub struct CalcArgs {
    /// How the server writes: its records per send, tickets, and how it closes; also sets the
    /// defaults of --cipher, --tickets and --server-nodelay
    #[arg(long, value_enum, default_value = "geminst")]
    pub server: ServerArg,
    /// How the client writes its records
    #[arg(long, value_enum, default_value = "load")]
    pub client: ClientArg,
    /// Request bytes as the client writes them (the URL and CRLF)
    #[arg(long, value_name = "N")]
    pub request_bytes: u64,
    /// Response body bytes (after the response header)
    #[arg(long, value_name = "M")]
    pub response_bytes: u64,
    /// Response header bytes (`20 text/plain\r\n` is 15)
    #[arg(long, value_name = "H", default_value_t = calc::DEFAULT_RESPONSE_HEADER)]
    pub response_header_bytes: u64,
    /// TLS version negotiated
    #[arg(long, value_enum, default_value = "1.3")]
    pub tls: TlsArg,
    /// Payload bytes per full TCP segment (TCP_MAXSEG of a connected socket; 1448 on Ethernet
    /// with timestamps, 65483 on Linux loopback)
    #[arg(long, default_value_t = calc::DEFAULT_MSS)]
    pub mss: u32,
    /// IPv6 (40-byte headers) instead of IPv4 (20)
    #[arg(long)]
    pub ipv6: bool,
    /// The server's certificate chain, PEM (default: a typical 412-byte self-signed ECDSA P-256
    /// certificate)
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Link-layer header bytes per frame (14: Ethernet, and Linux loopback as pcap sees it)
    #[arg(long, default_value_t = calc::ETHERNET_HEADER)]
    pub link_header_bytes: u64,
    /// TCP timestamps off (net.ipv4.tcp_timestamps = 0)
    #[arg(long)]
    pub no_timestamps: bool,
    /// AEAD cipher negotiated [default: aes128gcm with --server geminst (its preference),
    /// aes256gcm with --server rustls (rustls's default order)]
    #[arg(long, value_enum)]
    pub cipher: Option<CipherArg>,
    /// Key-exchange group
    #[arg(long, value_enum, default_value = "x25519")]
    pub kx: KxArg,
    /// TLS versions the client offers [default: both with --tls 1.3; only with --tls 1.2, since
    /// both servers modelled prefer TLS 1.3 and a client offering both would get it]
    #[arg(long, value_enum)]
    pub client_offers: Option<OffersArg>,
    /// Host name the client sends in SNI; "none" for none (a client connecting to an IP address)
    #[arg(long, default_value = "localhost")]
    pub sni: String,
    /// TLS 1.3 session tickets the server sends [default: 1 with --server geminst, 2 with
    /// --server rustls]
    #[arg(long)]
    pub tickets: Option<u32>,
    /// Bytes of each session ticket
    #[arg(long, default_value_t = 32)]
    pub ticket_bytes: u32,
    /// TCP_NODELAY on the client's socket (geminst load sets it)
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub client_nodelay: bool,
    /// TCP_NODELAY on the server's socket [default: true with --server geminst, false with
    /// --server rustls]
    #[arg(long, value_name = "BOOL", action = ArgAction::Set)]
    pub server_nodelay: Option<bool>,
    /// The client sends its own close_notify before closing (geminst load does not)
    #[arg(long, value_name = "BOOL", default_value_t = false, action = ArgAction::Set)]
    pub client_close_notify: bool,
    /// Print the prediction as JSON
    #[arg(long)]
    pub json: bool,
}

impl CalcArgs {
    /// The calculator's parameters; a certificate file that cannot be read or is not PEM is bad
    /// input.
    pub fn params(&self) -> Result<CalcParams> {
        let cert = CertChain::from_pem_file(self.cert.as_deref(), "--cert")?;
        let server = match self.server {
            ServerArg::Geminst => ServerStyle::Geminst,
            ServerArg::Rustls => ServerStyle::Rustls,
        };
        let defaults = CalcParams::for_server(server);
        Ok(CalcParams {
            server,
            client: match self.client {
                ClientArg::Load => ClientStyle::Load,
                ClientArg::Rustls => ClientStyle::Rustls,
            },
            request_bytes: self.request_bytes,
            response_body_bytes: self.response_bytes,
            response_header_bytes: self.response_header_bytes,
            tls: match self.tls {
                TlsArg::V12 => TlsVersion::Tls12,
                TlsArg::V13 => TlsVersion::Tls13,
            },
            mss: self.mss,
            ipv6: self.ipv6,
            link_header_bytes: self.link_header_bytes,
            tcp_timestamps: !self.no_timestamps,
            cipher: match self.cipher {
                None => defaults.cipher,
                Some(CipherArg::Aes128gcm) => Cipher::Aes128Gcm,
                Some(CipherArg::Aes256gcm) => Cipher::Aes256Gcm,
                Some(CipherArg::Chacha20) => Cipher::Chacha20Poly1305,
            },
            key_exchange: match self.kx {
                KxArg::X25519 => KeyExchange::X25519,
                KxArg::P256 => KeyExchange::Secp256r1,
                KxArg::P384 => KeyExchange::Secp384r1,
                KxArg::X25519mlkem768 => KeyExchange::X25519Mlkem768,
            },
            client_offers: match (self.client_offers, self.tls) {
                (Some(OffersArg::Only), _) | (None, TlsArg::V12) => ClientOffers::Only,
                (Some(OffersArg::Both), _) | (None, TlsArg::V13) => ClientOffers::Both,
            },
            sni_host: (self.sni != "none").then(|| self.sni.clone()),
            tickets: self.tickets.unwrap_or(defaults.tickets),
            ticket_bytes: self.ticket_bytes,
            cert,
            client_nodelay: self.client_nodelay,
            server_nodelay: self.server_nodelay.unwrap_or(defaults.server_nodelay),
            client_close_notify: self.client_close_notify,
        })
    }
}

pub fn calc_command(args: CalcArgs) -> Result<ExitCode> {
    let params = args.params()?;
    let prediction = match calc::predict(&params) {
        Ok(p) => p,
        Err(e) => return bad_input(e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&prediction)?);
    } else {
        print!("{}", report(&prediction));
    }
    Ok(ExitCode::SUCCESS)
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The human-readable report: the setting, every part, the totals.
pub fn report(pr: &Prediction) -> String {
    let p = &pr.params;
    let mut s = String::new();
    let tls = match p.tls {
        TlsVersion::Tls12 => "TLS 1.2",
        TlsVersion::Tls13 => "TLS 1.3",
    };
    let _ = writeln!(
        s,
        "{tls} ({}, {:?}), {}, MSS {}, TCP timestamps {}, {}-byte link header",
        p.cipher.name(p.tls),
        p.key_exchange,
        if p.ipv6 { "IPv6" } else { "IPv4" },
        p.mss,
        if p.tcp_timestamps { "on" } else { "off" },
        p.link_header_bytes
    );
    let _ = writeln!(
        s,
        "request {} B; response header {} B + body {} B; certificate chain {} B ({}, signature ~{} B); \
         {} session ticket(s)",
        p.request_bytes,
        p.response_header_bytes,
        p.response_body_bytes,
        p.cert.total_der_bytes(),
        p.cert.key,
        p.cert.signature_bytes,
        if p.tls == TlsVersion::Tls13 { p.tickets } else { 0 }
    );
    let server = match p.server {
        ServerStyle::Geminst => {
            "geminst serve (flights in one send, ticket with the response, FIN on the last segment)"
        }
        ServerStyle::Rustls => "rustls, one record per send",
    };
    let client = match p.client {
        ClientStyle::Load => "geminst load (flights in one send)",
        ClientStyle::Rustls => "rustls, one record per send",
    };
    let _ = writeln!(
        s,
        "model: server {server}; client {client}; Linux TCP; client TCP_NODELAY {}, server TCP_NODELAY {}, \
         client close_notify {} (see docs/wire-bytes.md)\n",
        on_off(p.client_nodelay),
        on_off(p.server_nodelay),
        on_off(p.client_close_notify)
    );
    let _ = writeln!(
        s,
        "{:>3}  {:<6}  {:<62} {:>10} {:>5} {:>11}",
        "#", "from", "part", "TCP data", "pkts", "frame B"
    );
    for (i, part) in pr.parts.iter().enumerate() {
        let from = match part.from {
            Side::Client => "client",
            Side::Server => "server",
        };
        let _ = writeln!(
            s,
            "{:>3}  {:<6}  {:<62} {:>10} {:>5} {:>11}",
            i + 1,
            from,
            part.name,
            part.tcp_payload_bytes,
            part.packets,
            part.frame_bytes
        );
        let _ = writeln!(s, "{:>13}{}  [{}]", "", part.detail, part.source);
    }
    let _ = writeln!(
        s,
        "\n{:<16} {:>7} {:>12} {:>10} {:>10} {:>12} {:>10} {:>12}",
        "totals", "packets", "frame B", "IP hdr B", "TCP hdr B", "TCP data B", "pure ACKs", "TLS records"
    );
    let rows = [("client→server", &pr.to_server), ("server→client", &pr.to_client)];
    for (name, d) in rows {
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:>12} {:>10} {:>10} {:>12} {:>10} {:>12}",
            name,
            d.packets,
            d.frame_bytes,
            d.ip_header_bytes,
            d.tcp_header_bytes,
            d.tcp_payload_bytes,
            d.pure_acks,
            d.tls.records()
        );
    }
    let both = |f: fn(&calc::DirPrediction) -> u64| f(&pr.to_server) + f(&pr.to_client);
    let _ = writeln!(
        s,
        "{:<16} {:>7} {:>12} {:>10} {:>10} {:>12} {:>10} {:>12}",
        "both",
        both(|d| d.packets),
        both(|d| d.frame_bytes),
        both(|d| d.ip_header_bytes),
        both(|d| d.tcp_header_bytes),
        both(|d| d.tcp_payload_bytes),
        both(|d| d.pure_acks),
        both(|d| d.tls.records())
    );
    if pr.delayed_ack_stalls > 0 {
        let _ = writeln!(
            s,
            "\ndelayed-ACK stalls: {} (Nagle holds a small write behind an ACK the peer delays): at least {} ms",
            pr.delayed_ack_stalls, pr.delayed_ack_stall_ms
        );
    }
    let app = p.request_bytes + p.response_header_bytes + p.response_body_bytes;
    let _ = writeln!(
        s,
        "\napplication bytes {app}; wire bytes {} ({:.3} × the application bytes)",
        pr.total_frame_bytes(),
        pr.total_frame_bytes() as f64 / app as f64
    );
    s
}
