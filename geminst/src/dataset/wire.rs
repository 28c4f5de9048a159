//! The wire match: the packet capture's connections beside the tracer's, and each request's wire
//! bytes as the specifications predict them (capture/calc).

use super::{Table, serverlog::Record, serverlog::canonical};
use crate::{
    capture::{
        ConnWire,
        calc::{self, CalcParams, Prediction, TlsVersion},
        certs::CertChain,
    },
    trace::ConnRow,
};

/// For each traced connection, the captured one with the same (server, client) addresses whose
/// first packet is closest in time to the connection's creation (Linux reuses client ports, so a
/// 4-tuple can name several connections over a run). Each captured connection is used once.
pub fn match_conns(conns: &[ConnRow], wires: &[ConnWire]) -> Vec<Option<usize>> {
    super::tuples::match_by_key(
        conns,
        wires,
        ConnRow::tuple,
        |w| Some((canonical(w.server), canonical(w.client))),
        |c, w| w.first_ns.abs_diff(c.created_ns),
    )
}

/// The captured connections no traced connection took.
pub fn unmatched(matches: &[Option<usize>], wires: usize) -> Vec<usize> {
    let mut used = vec![false; wires];
    for i in matches.iter().flatten() {
        used[*i] = true;
    }
    (0..wires).filter(|&i| !used[i]).collect()
}

/// The prediction for one request, from what the server logged and, when captured, the
/// connection's MSS and IP version; None when the request is not one the calculator models (no
/// TLS, nothing read, or a resumed session).
///
/// A request log exists only for geminst's own server, so the prediction is that server's style
/// with geminst load's client ([`CalcParams::geminst_negotiated`]: flights in one send, one
/// stateful ticket that leaves with the response, the FIN on the response's last segment).
pub fn predict(log: &Record, wire: Option<&ConnWire>, cert: &CertChain) -> Option<Prediction> {
    let tls = match log.tls_version.as_deref()? {
        "TLSv1.2" => TlsVersion::Tls12,
        "TLSv1.3" => TlsVersion::Tls13,
        _ => return None,
    };
    if log.tls_resumed == Some(true) {
        return None;
    }
    let mut params = CalcParams {
        request_bytes: log.request_bytes,
        response_body_bytes: log.response_body_bytes,
        response_header_bytes: log.response_header_bytes,
        sni_host: log.sni.clone(),
        cert: cert.clone(),
        ..CalcParams::geminst_negotiated(tls, log.tls_cipher.as_deref().unwrap_or_default())
    };
    if let Some(w) = wire {
        params = params.with_wire(w);
    }
    calc::predict(&params).ok()
}

/// The columns of the predictions beside the measured wire columns.
pub fn add_predicted_columns(t: &mut Table, rows: &[Option<Prediction>]) {
    type Get = fn(&Prediction) -> u64;
    let columns: [(&str, Get); 7] = [
        ("predicted_c2s_packets", |p| p.to_server.packets),
        ("predicted_c2s_frame_bytes", |p| p.to_server.frame_bytes),
        ("predicted_c2s_tcp_payload_bytes", |p| p.to_server.tcp_payload_bytes),
        ("predicted_s2c_packets", |p| p.to_client.packets),
        ("predicted_s2c_frame_bytes", |p| p.to_client.frame_bytes),
        ("predicted_s2c_tcp_payload_bytes", |p| p.to_client.tcp_payload_bytes),
        ("predicted_delayed_ack_stalls", |p| u64::from(p.delayed_ack_stalls)),
    ];
    for (name, get) in columns {
        t.opt_u64(name, rows.iter().map(|p| p.as_ref().map(get)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::DirWire;

    fn wire(client_port: u16, first_ns: u64) -> ConnWire {
        ConnWire {
            server: "127.0.0.1:1965".parse().unwrap(),
            client: format!("127.0.0.1:{client_port}").parse().unwrap(),
            first_ns,
            last_ns: first_ns + 10,
            handshake_seen: true,
            to_server: DirWire::default(),
            to_client: DirWire::default(),
        }
    }

    fn conn(id: u64, remote_port: u16, created_ns: u64) -> ConnRow {
        ConnRow::accepted_on_loopback(id, remote_port, created_ns)
    }

    #[test]
    fn matches_by_tuple_then_time() {
        let wires = vec![wire(5000, 100), wire(5000, 9_000), wire(5001, 50), wire(6000, 1)];
        let conns = vec![conn(1, 5000, 8_990), conn(2, 5000, 110), conn(3, 5001, 60), conn(4, 7000, 1)];
        let m = match_conns(&conns, &wires);
        assert_eq!(m, vec![Some(1), Some(0), Some(2), None]);
        assert_eq!(unmatched(&m, wires.len()), vec![3]);
    }

    /// Two connections of geminst load to geminst serve on `lo` (a 256-byte request, a 1024-byte
    /// body, the server's 350-byte rcgen ECDSA P-256 certificate), as the server logged them and
    /// as tcpdump counted them: TLS 1.3 client→server 7 frames / 1044 bytes, server→client 5 /
    /// 2169; TLS 1.2 8 / 1064 and 6 / 2127.
    const LOG_TLS13: &str = r#"{"req_id":1,"peer_addr":"127.0.0.1:52158","local_addr":"127.0.0.1:19651","accept_mono_ns":6863516121815,"accept_unix_ns":1795322420545865591,"handshake_mono_ns":6863517912936,"handshake_unix_ns":1795322420547656753,"request_mono_ns":6863517967818,"request_unix_ns":1795322420547711454,"done_mono_ns":6863518200205,"done_unix_ns":1795322420547943841,"sni":"localhost","url":"gemini://localhost:19651/_bench/bytes/1024?pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","status":20,"meta":"text/plain","request_bytes":256,"response_header_bytes":15,"response_body_bytes":1024,"tcp_bytes_read":574,"tcp_bytes_written":1831,"tls_version":"TLSv1.3","tls_cipher":"TLS13_AES_128_GCM_SHA256","tls_resumed":false,"tids":[4017],"cpu_ns":1288402,"polls":1,"error":null}"#;
    const LOG_TLS12: &str = r#"{"req_id":2,"peer_addr":"127.0.0.1:52168","local_addr":"127.0.0.1:19651","accept_mono_ns":6863530824684,"accept_unix_ns":1795322420560568501,"handshake_mono_ns":6863533023549,"handshake_unix_ns":1795322420562767195,"request_mono_ns":6863533215916,"request_unix_ns":1795322420562959532,"done_mono_ns":6863533406961,"done_unix_ns":1795322420563150577,"sni":"localhost","url":"gemini://localhost:19651/_bench/bytes/1024?pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","status":20,"meta":"text/plain","request_bytes":256,"response_header_bytes":15,"response_body_bytes":1024,"tcp_bytes_read":528,"tcp_bytes_written":1723,"tls_version":"TLSv1.2","tls_cipher":"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256","tls_resumed":false,"tids":[4018],"cpu_ns":1147212,"polls":3,"error":null}"#;

    #[test]
    fn predicts_geminst_serve_as_measured() {
        let cert = CertChain { der_bytes: vec![350], key: "ECDSA P-256".into(), signature_bytes: 71 };
        let mut w = wire(52158, 0);
        w.to_server.mss_option = Some(65495);
        w.to_client.mss_option = Some(65495);
        for (line, up, down) in [(LOG_TLS13, (7, 1044), (5, 2169)), (LOG_TLS12, (8, 1064), (6, 2127))] {
            let log: Record = serde_json::from_str(line).unwrap();
            let p = predict(&log, Some(&w), &cert).unwrap();
            assert_eq!(p.params.mss, 65483);
            assert_eq!((p.to_server.packets, p.to_server.frame_bytes), up, "{line}");
            assert_eq!((p.to_client.packets, p.to_client.frame_bytes), down, "{line}");
            // The TLS bytes the server counted at its socket.
            assert_eq!(p.to_server.tcp_payload_bytes, log.tcp_bytes_read);
            assert_eq!(p.to_client.tcp_payload_bytes, log.tcp_bytes_written);
            assert_eq!(p.delayed_ack_stalls, 0);
        }
        // A resumed session is not modelled.
        let mut log: Record = serde_json::from_str(LOG_TLS13).unwrap();
        log.tls_resumed = Some(true);
        assert!(predict(&log, Some(&w), &cert).is_none());
        log.tls_resumed = Some(false);
        log.tls_version = None;
        assert!(predict(&log, Some(&w), &cert).is_none());
    }
}
