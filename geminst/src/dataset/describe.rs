//! A data set's description in run.json: the trace's section, the capture's and the power
//! source's, every loss counter, and the notes a reader of the data must know.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::{DataSet, RunInfo};
use crate::trace::{ProgramStats, StopReason};

/// The trace's section of run.json, its loss counters and notes.
pub fn describe(info: &mut RunInfo, ds: &DataSet, reason: StopReason, duration_s: Option<f64>) -> Result<()> {
    let m = ds.measurement;
    let output = &m.ebpf;
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

    match &m.capture {
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
            if let Some(p) = &m.capture_problem {
                info.notes.push(format!("no packet capture: {p}"));
            }
        }
    }
    info.section("power", serde_json::json!({ "meter": m.power.source, "trace": ds.energy.totals() }))?;
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
