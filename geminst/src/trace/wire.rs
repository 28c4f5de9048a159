//! Putting the packet capture beside the tracer: matching captured connections with traced ones,
//! and predicting each request's wire bytes from the specifications (capture/calc.rs).

use std::{collections::HashMap, net::SocketAddr};

use crate::{
    capture::{
        ConnWire,
        calc::{self, CalcParams, Cipher, Prediction, TlsVersion},
        certs::CertChain,
    },
    dataset::{Table, connections::ConnRow, serverlog::LogRecord, serverlog::canonical},
};

/// For each traced connection, the captured one with the same (server, client) addresses whose
/// first packet is closest in time to the connection's creation (Linux reuses client ports, so a
/// 4-tuple can name several connections over a run). Each captured connection is used once.
pub fn match_conns(conns: &[ConnRow], wires: &[ConnWire]) -> Vec<Option<usize>> {
    let mut by_key: HashMap<(SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
    for (i, w) in wires.iter().enumerate() {
        by_key.entry((canonical(w.server), canonical(w.client))).or_default().push(i);
    }
    let mut used = vec![false; wires.len()];
    conns
        .iter()
        .map(|c| {
            let key = (c.local_addr()?.parse().ok()?, c.remote_addr()?.parse().ok()?);
            let i = by_key
                .get(&key)?
                .iter()
                .copied()
                .filter(|&i| !used[i])
                .min_by_key(|&i| wires[i].first_ns.abs_diff(c.created_ns))?;
            used[i] = true;
            Some(i)
        })
        .collect()
}

/// The captured connections no traced connection took.
pub fn unmatched(matches: &[Option<usize>], wires: usize) -> Vec<usize> {
    let mut used = vec![false; wires];
    for i in matches.iter().flatten() {
        used[*i] = true;
    }
    (0..wires).filter(|&i| !used[i]).collect()
}

/// The calculator's cipher for a rustls suite name as the server logs it.
fn cipher(name: &str) -> Cipher {
    if name.contains("AES_256_GCM") {
        Cipher::Aes256Gcm
    } else if name.contains("CHACHA20") {
        Cipher::Chacha20Poly1305
    } else {
        Cipher::Aes128Gcm
    }
}

/// The prediction for one request, from what the server logged and, when captured, the
/// connection's MSS and IP version; None when the request is not one the calculator models
/// (no TLS, nothing read).
pub fn predict(log: &LogRecord, wire: Option<&ConnWire>, cert: &CertChain) -> Option<Prediction> {
    let tls = match log.tls_version.as_deref()? {
        "TLSv1.2" => TlsVersion::Tls12,
        "TLSv1.3" => TlsVersion::Tls13,
        _ => return None,
    };
    let mut params = CalcParams {
        request_bytes: log.request_bytes,
        response_body_bytes: log.response_body_bytes,
        response_header_bytes: log.response_header_bytes,
        tls,
        cipher: cipher(log.tls_cipher.as_deref().unwrap_or_default()),
        sni_host: log.sni.clone(),
        cert: cert.clone(),
        ..CalcParams::default()
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
        ConnRow {
            conn_id: id,
            local_ip: Some("127.0.0.1".into()),
            local_port: Some(1965),
            remote_ip: Some("127.0.0.1".into()),
            remote_port: Some(remote_port),
            created_ns,
            ..ConnRow::default()
        }
    }

    #[test]
    fn matches_by_tuple_then_time() {
        let wires = vec![wire(5000, 100), wire(5000, 9_000), wire(5001, 50), wire(6000, 1)];
        let conns = vec![conn(1, 5000, 8_990), conn(2, 5000, 110), conn(3, 5001, 60), conn(4, 7000, 1)];
        let m = match_conns(&conns, &wires);
        assert_eq!(m, vec![Some(1), Some(0), Some(2), None]);
        assert_eq!(unmatched(&m, wires.len()), vec![3]);
    }
}
