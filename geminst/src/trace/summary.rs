//! What `geminst trace` prints: a live line while it runs, a per-thread table at the end.

use std::{
    cell::Cell,
    path::Path,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

use super::{ProgramStats, StopReason, ThreadRow};
use crate::dataset::{Measurement, requests::Reconciliation};

/// A live status line on stderr (hidden when stderr is not a terminal).
pub struct Progress {
    bar: ProgressBar,
    last: Cell<Instant>,
}

impl Progress {
    pub fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
        Self { bar, last: Cell::new(Instant::now()) }
    }

    /// True about once a second.
    pub fn due(&self) -> bool {
        !self.bar.is_hidden() && self.last.get().elapsed() >= Duration::from_secs(1)
    }

    pub fn show(&self, connections_closed: usize, threads: &[ThreadRow]) {
        self.last.set(Instant::now());
        let cpu: u64 = threads.iter().map(|t| t.oncpu_ns).sum();
        let live = threads.iter().filter(|t| t.exit_ns.is_none()).count();
        self.bar.set_message(format!(
            "{live} threads, {:.3} s on CPU, {connections_closed} connections closed",
            cpu as f64 / 1e9
        ));
        self.bar.tick();
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// On-CPU and wait time as printed: milliseconds with three decimals (microsecond precision).
pub fn ms(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, ns / 1_000 % 1_000)
}

/// Prints the per-thread table and where the files went.
pub fn print(m: &Measurement, reason: StopReason, out: &Path, recon: Option<&Reconciliation>) {
    let output = &m.ebpf;
    let secs = output.end_ns.saturating_sub(output.start_ns) as f64 / 1e9;
    println!("traced {secs:.3} s, stopped by {}", reason.as_str());
    println!(
        "{:>8} {:>8} {:<16} {:>12} {:>9} {:>9} {:>12}  STATE",
        "TGID", "TID", "COMM", "ONCPU_MS", "VOL_SW", "INVOL_SW", "WAIT_MS"
    );
    for t in &output.threads {
        println!(
            "{:>8} {:>8} {:<16} {:>12} {:>9} {:>9} {:>12}  {}",
            t.tgid,
            t.tid,
            t.comm,
            ms(t.oncpu_ns),
            t.voluntary_switches,
            t.involuntary_switches,
            ms(t.wait_ns),
            if t.exit_ns.is_some() { "exited" } else { "alive" }
        );
    }
    let total: u64 = output.threads.iter().map(|t| t.oncpu_ns).sum();
    let wait: u64 = output.threads.iter().map(|t| t.wait_ns).sum();
    println!(
        "{:>8} {:>8} {:<16} {:>12} {:>9} {:>9} {:>12}",
        "",
        "",
        format!("total ({})", output.threads.len()),
        ms(total),
        output.threads.iter().map(|t| t.voluntary_switches).sum::<u64>(),
        output.threads.iter().map(|t| t.involuntary_switches).sum::<u64>(),
        ms(wait)
    );
    let conns = &output.connections;
    if !conns.is_empty() {
        let closed = conns.iter().filter(|c| c.closed_ns.is_some()).count();
        let cpu: u64 = conns.iter().map(|c| c.cpu_ns).sum();
        let sent: u64 = conns.iter().map(|c| c.sock_send_bytes).sum();
        let recv: u64 = conns.iter().map(|c| c.sock_recv_bytes).sum();
        println!(
            "connections: {} ({closed} closed); per connection: {} µs CPU, {} bytes sent, {} received (socket layer)",
            conns.len(),
            cpu / 1000 / conns.len() as u64,
            sent / conns.len() as u64,
            recv / conns.len() as u64
        );
    }
    if let Some(r) = recon {
        println!(
            "reconciliation: {} log records, {} traced connections on the server's ports, {} joined ({} log only, {} traced only)",
            r.log_records, r.ebpf_connections, r.joined, r.log_only, r.ebpf_only
        );
    }
    print_programs(&output.programs);
    let lost: u64 = output.lost.values().sum();
    if lost > 0 {
        println!("lost or dropped: {lost} (see run.json)");
    }
    println!("wrote {}", out.display());
}

/// With `--bpf-stats`, each program's cost per event, raw and net of the statistics' own cost.
pub fn print_programs(programs: &[ProgramStats]) {
    let floor =
        programs.iter().find(|p| p.program == super::probes::STATS_FLOOR).and_then(|p| p.ns_per_event);
    for p in programs {
        if let Some(ns) = p.ns_per_event {
            let net = match floor {
                Some(f) if p.program != super::probes::STATS_FLOOR => {
                    format!(" ({:.1} ns net of the statistics' own {f:.1})", ns - f)
                }
                _ => String::new(),
            };
            println!("program {:<20} {:>10} events {:>8.1} ns/event{net}", p.program, p.run_count, ns);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ms_has_microsecond_precision() {
        assert_eq!(super::ms(1_234_567_890), "1234.567");
        assert_eq!(super::ms(999), "0.000");
        assert_eq!(super::ms(5_000), "0.005");
    }
}
