//! `geminst load`: the load generator.
//!
//! Requests start on a fixed schedule (open loop, `--rate`) or back to back on N connections
//! (closed loop, `--concurrency`), with the request size set exactly by padding the URL and the
//! response size chosen by URL. Latency is measured from the scheduled start, so a stalled server
//! cannot hide its queue (no coordinated omission). Every request's times are CLOCK_MONOTONIC ns,
//! the clock of the server's log and the tracer, and its client socket address is recorded so
//! the pipeline can join it with the server's log.
//!
//! The public face: [`Plan`] (from the command line, a profile file or built directly), [`run`]
//! with [`Options`], and the [`LoadReport`] it returns; [`command`] for the CLI.

mod args;
mod client;
mod driver;
mod mix;
mod plan;
mod profile;
mod progress;
mod record;
mod report;
mod schedule;
mod timer;
mod tls;
mod url;

use std::process::ExitCode;

use anyhow::{Context, Result};

pub use args::{ConnectionArgs, LoadArgs};
pub use driver::{Options, run};
pub use plan::{
    ClientCert, DEFAULT_MAX_IN_FLIGHT, DEFAULT_SEED, DEFAULT_TIMEOUT, End, Load, MixEntry, Phase, Plan,
    TlsSettings, TlsVersion, UrlSpec,
};
pub use record::{ErrorKind, Record, RequestError};
pub use report::{Bytes, Counts, LoadReport, Percentiles, PhaseSummary, Summary};
pub use tls::TofuVerifier;
pub use url::{GeminiUrl, MAX_REQUEST_BYTES, MAX_URL_BYTES};

/// The rustls client configuration `geminst load` uses for `settings` (for benchmarks and for
/// tools that want to speak TLS exactly as the load generator does).
pub fn client_config(settings: &TlsSettings) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    Ok(tls::ClientTls::new(settings)?.config)
}

use crate::{exit::BadInput, signals};

/// `geminst load`: runs the plan the arguments describe, prints the summary, writes `--out`.
pub fn command(args: LoadArgs) -> Result<ExitCode> {
    let plan = Plan::from_args(&args)?;
    if let Some(out) = &args.out {
        // Fail before the run rather than lose it at the end.
        let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(BadInput(format!(
                "--out {}: folder {} does not exist",
                out.display(),
                dir.display()
            ))
            .into());
        }
    }
    signals::install();
    let options =
        Options { progress: !args.quiet, threads: args.threads, signals: true, ..Options::default() };
    let report = run(&plan, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.summary)?);
    } else {
        print!("{}", report.summary.text());
    }
    if let Some(out) = &args.out {
        report.write_parquet(out).with_context(|| format!("writing {}", out.display()))?;
        if !args.quiet {
            eprintln!("wrote {} requests to {}", report.records.len(), out.display());
        }
    }
    Ok(report.exit_code())
}
