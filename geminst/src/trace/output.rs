//! Writing what a trace measured: threads.parquet, connections.parquet, timeseries.parquet, and
//! the trace's part of run.json.

use std::{collections::BTreeMap, path::Path};

use anyhow::Result;
use serde::Serialize;

use super::{ProgramStats, StopReason, TraceOutput, wire};
use crate::{
    capture::{self, ConnWire, certs::CertChain},
    dataset::{
        self, RunInfo, Table,
        connections::{self, ConnRow},
        requests::{self, JoinSummary, PerRequest},
        serverlog,
    },
};

/// connections.parquet: every connection the tracer saw, with its captured wire columns, then the
/// connections only the capture saw.
fn write_connections(
    dir: &Path,
    conns: &[ConnRow],
    wires: Option<&[ConnWire]>,
) -> Result<Vec<Option<usize>>> {
    let wires = wires.unwrap_or_default();
    let matches = wire::match_conns(conns, wires);
    let extra = wire::unmatched(&matches, wires.len());
    let mut ebpf: Vec<Option<&ConnRow>> = conns.iter().map(Some).collect();
    ebpf.extend(extra.iter().map(|_| None));
    let mut wire_rows: Vec<Option<&ConnWire>> = matches.iter().map(|m| m.map(|i| &wires[i])).collect();
    wire_rows.extend(extra.iter().map(|&i| Some(&wires[i])));
    let mut t = Table::new();
    connections::columns(&mut t, &ebpf);
    capture::add_wire_columns(&mut t, &wire_rows);
    t.write(&dir.join(connections::FILE))?;
    Ok(matches)
}

/// Writes the Parquet files and fills `info` (the caller writes run.json, after adding its own
/// sections). With the server's log, also requests.parquet, the time series' request counts and
/// the join's counts and per-request means (run.json `join` and `per_request`);
/// a log that cannot be read is reported in `info` and returned as the error, after everything
/// else was written.
#[allow(clippy::too_many_arguments)]
pub fn write(
    dir: &Path,
    info: &mut RunInfo,
    output: &mut TraceOutput,
    reason: StopReason,
    duration_s: Option<f64>,
    server_log: Option<&Path>,
    cert: &CertChain,
) -> Result<Option<JoinSummary>> {
    describe(info, output, reason, duration_s)?;
    let wires = output.wire.as_ref().map(|w| w.connections.as_slice());
    let matches = write_connections(dir, &output.connections, wires)?;
    let log = server_log.map(|p| (p, serverlog::read(p)));
    let mut failure = None;
    let mut recon = None;
    match log {
        Some((path, Ok(log))) => {
            for (line, why) in log.skipped.iter().take(5) {
                eprintln!(
                    "geminst: warning: {} line {line} is not a log record ({why}); skipped",
                    path.display()
                );
            }
            info.lost.insert("log.malformed_lines".into(), log.skipped.len() as u64);
            requests::fill_requests_done(&mut output.timeseries, &log.records);
            let (rows, r) = requests::join(&log.records, &output.connections);
            // Each request's captured connection: the one its traced connection matched.
            let wire_rows: Vec<Option<&ConnWire>> = rows
                .iter()
                .map(|j| j.conn.and_then(|i| matches[i]).map(|m| &wires.unwrap_or_default()[m]))
                .collect();
            let predicted: Vec<_> =
                rows.iter().zip(&wire_rows).map(|(j, w)| wire::predict(j.log, *w, cert)).collect();
            let mut t = Table::new();
            requests::columns(&mut t, &rows, &output.connections);
            if output.wire.is_some() {
                capture::add_wire_columns(&mut t, &wire_rows);
            }
            wire::add_predicted_columns(&mut t, &predicted);
            t.write(&dir.join(requests::FILE))?;
            let per_request = PerRequest::of(&rows, &output.connections);
            info.section("join", &r)?;
            info.section("per_request", &per_request)?;
            recon = Some(JoinSummary { counts: r, per_request });
        }
        Some((path, Err(e))) => {
            info.notes.push(format!(
                "the server log {} could not be read ({e:#}); no requests.parquet",
                path.display()
            ));
            failure = Some(crate::exit::BadInput(format!("{e:#}")));
        }
        None => {}
    }
    dataset::threads::write(dir, &output.threads)?;
    dataset::timeseries::write(dir, &output.timeseries)?;
    match failure {
        Some(e) => {
            info.write(dir)?;
            Err(e.into())
        }
        None => Ok(recon),
    }
}

/// The trace's section of run.json, its loss counters and notes.
pub fn describe(
    info: &mut RunInfo,
    output: &TraceOutput,
    reason: StopReason,
    duration_s: Option<f64>,
) -> Result<()> {
    info.finish(reason.as_str());
    info.lost.extend(output.lost.clone());
    for (pid, at) in &output.exited {
        info.notes.push(format!(
            "target {pid} exited during the trace ({:.3} s in); counters up to its exit are kept",
            (at.saturating_sub(output.start_ns)) as f64 / 1e9
        ));
    }
    if let Some(problem) = &output.btf_problem {
        info.notes.push(format!(
            "the kernel's BTF gave no offset for task_struct.se.sum_exec_runtime ({problem}): slices \
             whose switch in the kernel did not report are not measured (lost.ebpf.slice_lost)"
        ));
    }
    let unseen: u64 = output.threads.iter().map(|t| t.unseen_switch_ins).sum();
    if unseen > 0 {
        info.notes.push(format!(
            "{unseen} slices began with a switch in that this kernel did not report (it suppresses \
             tracepoints in the context of some tasks); their on-CPU time is the kernel's own \
             runtime accounting (threads.parquet column unseen_switch_ins)"
        ));
    }
    if output.ports.is_empty() {
        info.notes.push(
            "no server port was traced (the targets listened on none and --port was not given): \
             connections were recorded from their first byte, without their handshake or teardown"
                .into(),
        );
    }
    if output.writeback_bytes > 0 {
        info.notes.push(format!(
            "{} bytes of asynchronous writeback were queued machine-wide during the trace; the pages \
             were dirtied earlier by whichever process wrote them and are not attributed",
            output.writeback_bytes
        ));
    }

    match &output.wire {
        Some(w) => {
            info.lost.insert("capture.dropped".into(), w.stats.dropped);
            info.lost.insert("capture.if_dropped".into(), w.stats.if_dropped);
            info.lost.insert("capture.truncated_frames".into(), w.stats.truncated_frames);
            if let Some(e) = &w.stats.error {
                info.notes
                    .push(format!("the packet capture ended early: {e}; its counts until then are kept"));
            }
            info.section("capture", &w.stats)?;
        }
        None => {
            if let Some(p) = &output.capture_problem {
                info.notes.push(format!("no packet capture: {p}"));
            }
        }
    }
    info.section("power", serde_json::json!({ "meter": output.power, "trace": output.energy }))?;
    #[derive(Serialize)]
    struct TraceSection<'a> {
        pids: &'a [u32],
        ports: &'a [u16],
        duration_s: Option<f64>,
        start_mono_ns: u64,
        end_mono_ns: u64,
        exited: Vec<ExitedTarget>,
        writeback_bytes: u64,
        field_offsets: &'a BTreeMap<String, u32>,
        bpf_stats: bool,
        programs: &'a [ProgramStats],
    }
    #[derive(Serialize)]
    struct ExitedTarget {
        pid: u32,
        noticed_mono_ns: u64,
    }
    info.section(
        "trace",
        TraceSection {
            pids: &output.pids,
            ports: &output.ports,
            duration_s,
            start_mono_ns: output.start_ns,
            end_mono_ns: output.end_ns,
            exited: output.exited.iter().map(|&(pid, t)| ExitedTarget { pid, noticed_mono_ns: t }).collect(),
            writeback_bytes: output.writeback_bytes,
            field_offsets: &output.offsets,
            bpf_stats: output.bpf_stats,
            programs: &output.programs,
        },
    )
}
