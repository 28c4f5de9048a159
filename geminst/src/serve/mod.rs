//! `geminst serve` and `geminst import`: the built-in Gemini server (spec v0.16.1, with the newer
//! geminiprotocol.net text where they differ). It serves a capsule from a directory or SQLite over
//! TLS 1.2/1.3 and logs one JSON line per connection (`log`), the format the tracer joins on.
//!
//! The public face: `Server` (start in-process on an address with `Options`, stop gracefully),
//! `log::Record` (the request-log line, defined in `dataset::serverlog`), `request` (the request parser, also fuzzed) and the
//! commands `main` dispatches to.

pub mod bench_routes;
pub mod certs;
mod config;
mod conn;
mod content;
mod handler;
pub mod log;
mod measure;
mod mime;
pub mod request;
mod response;
mod server;
pub mod status;
mod tls;

use std::process::ExitCode;

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};

pub use config::{ImportArgs, ServeArgs, sample_capsule};
pub use content::import::{Imported, import};
pub use server::{Options, Server, Source, Summary};

pub fn command(args: ServeArgs) -> Result<ExitCode> {
    let server = Server::start(args.options()?)?;
    let handle = server.runtime_handle();
    // Handlers first, then the startup line: a signal sent by whoever waits for the line is never
    // lost to the default action.
    let (mut term, mut int) = {
        let _entered = handle.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
    };
    eprintln!("geminst serve: {}", server.describe());
    let name = handle.block_on(async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    });
    // SAFETY: restoring the default action is async-signal-safe and affects only later signals:
    // a second SIGINT or SIGTERM ends the process at once.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    eprintln!("geminst serve: {name}: no longer accepting; finishing accepted connections");
    let log_path = server.log_path().to_owned();
    let summary = server.stop()?;
    eprintln!(
        "geminst serve: stopped after {} connections; {} log lines in {}",
        summary.connections,
        summary.log_lines,
        log_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn import_command(args: ImportArgs) -> Result<ExitCode> {
    let done = import(&args.root, &args.db)?;
    println!(
        "geminst import: {} files ({} bytes) and {} directories from {} into {}",
        done.files,
        done.bytes,
        done.dirs,
        args.root.display(),
        args.db.display()
    );
    Ok(ExitCode::SUCCESS)
}
