//! Project automation: `cargo xtask setup | build-ebpf | demo | test`.

mod cmd;
mod demo;
mod ebpf;
mod setup;
mod test;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "geminst's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (Debian packages, the nightly with rust-src, rustfmt and clippy, bpf-linker, cargo-fuzz, Python venv); a quick no-op when all is there
    Setup,
    /// Build the eBPF object (geminst's build script also does this on every build)
    BuildEbpf,
    /// Set up if needed, build, and run the main job
    Demo,
    /// Set up if needed, then check formatting, lints and run every test
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter after `--`)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The workspace root (xtask/ sits in it).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ has a parent").to_path_buf()
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::BuildEbpf => {
            let root = workspace();
            let object = ebpf::build(&root, &root.join("target/bpf"))?;
            println!("built {}", object.display());
            Ok(())
        }
        Command::Demo => demo::run(),
        Command::Test { args } => test::run(&args),
    }
}
