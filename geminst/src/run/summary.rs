//! What `geminst run` prints at the end: the load, the per-request means, and how the sources
//! reconciled.

use std::path::Path;

use crate::{
    dataset::{RunInfo, requests::JoinSummary},
    load::LoadReport,
};

pub fn print(dir: &Path, report: &LoadReport, join: Option<&JoinSummary>, info: &RunInfo, source: &str) {
    let s = &report.summary;
    println!(
        "load: {} requests in {:.1} s, {} ok, {} failed; {:.1} completed/s",
        s.requests.scheduled, s.duration_s, s.requests.ok, s.requests.failed, s.completed_rate
    );
    let p = join.map(|j| j.per_request.clone()).unwrap_or_default();
    println!(
        "per request (mean of {}): CPU {:.1} µs (eBPF{}), energy {:.3} mJ ({source})",
        p.requests,
        p.cpu_us,
        p.log_cpu_us.map_or(String::new(), |c| format!("; the server's own measure {c:.1} µs")),
        p.energy_mj
    );
    println!(
        "bytes per request: application {:.0} in, {:.0} out (Gemini); socket layer {:.0} in, {:.0} out (TLS records)",
        p.app_request_bytes, p.app_response_bytes, p.socket_received_bytes, p.socket_sent_bytes
    );
    if let Some(r) = join.map(|j| &j.counts) {
        println!(
            "reconciliation: {} load requests, {} server log lines, {} traced connections ({} rows with a connection, {} log only, {} traced only)",
            s.requests.scheduled, r.log_records, r.ebpf_connections, r.joined, r.log_only, r.ebpf_only
        );
    }
    for note in &info.notes {
        println!("note: {note}");
    }
    let lost: u64 = info.lost.values().sum();
    if lost > 0 {
        println!("lost or dropped: {lost} (see run.json)");
    }
    println!("wrote {}", dir.display());
}
