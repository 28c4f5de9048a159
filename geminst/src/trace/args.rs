//! The command-line arguments of `geminst trace`, and the measuring flags it shares with
//! `geminst run`.

use std::path::PathBuf;

use clap::Args;

use crate::energy::PowerArgs;

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Process to trace (repeat for several processes)
    #[arg(long = "pid", required = true, value_name = "PID")]
    pub pids: Vec<u32>,
    /// Server port whose connections are recorded from their first state change (repeat for
    /// several; default: the ports the targets listen on)
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Stop after this many seconds (default: when the targets exit, or on Ctrl-C)
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Folder for the data set (default: runs/<UTC time>-trace)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The built-in server's request log: joined with the connections into requests.parquet
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// The server's certificate chain (PEM), to size the TLS handshake in the predicted bytes
    /// (default: a typical self-signed ECDSA P-256 certificate)
    #[arg(long, value_name = "FILE")]
    pub server_cert: Option<PathBuf>,
    #[command(flatten)]
    pub power: PowerArgs,
}

/// How to measure, shared by `geminst trace` and `geminst run`.
#[derive(Debug, Clone, Args)]
pub struct MeasureArgs {
    /// Length of a time-series interval in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub interval: u64,
    /// Turn on the kernel's BPF statistics and report each program's cost per event
    #[arg(long)]
    pub bpf_stats: bool,
    /// Interface to capture the server ports' packets on, for wire bytes (libpcap)
    #[arg(long, value_name = "IFACE", default_value = "lo")]
    pub iface: String,
    /// Do not capture packets (no wire columns)
    #[arg(long, conflicts_with_all = ["iface", "write_pcap"])]
    pub no_capture: bool,
    /// Also write the captured packets to this pcap file (for Wireshark)
    #[arg(long, value_name = "FILE")]
    pub write_pcap: Option<PathBuf>,
}

impl MeasureArgs {
    /// The packet capture asked for.
    pub fn capture(&self) -> Option<crate::session::CaptureRequest> {
        (!self.no_capture).then(|| crate::session::CaptureRequest {
            iface: self.iface.clone(),
            write_pcap: self.write_pcap.clone(),
        })
    }

    /// The time-series interval.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.interval)
    }
}
