//! The geminst binary: argument parsing and dispatch only; the work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use geminst::{capture, exit, load, run, serve, trace};

#[derive(Parser)]
#[command(name = "geminst", version, about = "Relates the energy a server spends to the work it does")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a Gemini capsule from files or SQLite, logging each request
    Serve(serve::ServeArgs),
    /// Copy a capsule directory into a SQLite database for `serve --db`
    Import(serve::ImportArgs),
    /// Drive a Gemini server with set request sizes, response sizes and rates
    Load(load::LoadArgs),
    /// Trace running processes with eBPF: CPU, I/O and socket bytes per thread (needs root)
    Trace(trace::TraceArgs),
    /// Predict a request's wire bytes from the protocol specifications
    Calc(capture::CalcArgs),
    /// Serve, trace, drive and join on defaults, into runs/<time>/ (needs root)
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::command(args),
        Command::Import(args) => serve::import_command(args),
        Command::Load(args) => load::command(args),
        Command::Trace(args) => trace::command(args),
        Command::Calc(args) => capture::calc_command(args),
        Command::Run(args) => run::command(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("geminst: error: {e:#}");
            ExitCode::from(exit::code_for(&e))
        }
    }
}
