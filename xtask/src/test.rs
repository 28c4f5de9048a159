//! `cargo xtask test`: set up if needed, then formatting, lints (the eBPF crate's too), every
//! test, and a short run of each fuzz target. Tests that need root run when this runs as root
//! (as in CI).

use std::{fs, process::Command};

use anyhow::Result;

use crate::{cmd, ebpf, setup, workspace};

/// Seconds each fuzz target runs: enough to prove it builds, runs and survives fresh inputs; the
/// long runs are done by hand (`cargo +nightly fuzz run <target>` in geminst/).
const FUZZ_SMOKE_SECONDS: u32 = 20;

pub fn run(extra: &[String]) -> Result<()> {
    setup::run()?;
    let root = workspace();
    cmd::run(Command::new("cargo").current_dir(&root).args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(
        Command::new("cargo")
            .current_dir(root.join("geminst-ebpf"))
            .args(["+nightly", "fmt", "--", "--check"]),
    )?;
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate is outside the workspace: linted for its own target, with the nightly and the
    // flags its build uses (ebpf::build), into a directory of its own so the check does not
    // invalidate the object the build script keeps in target/bpf.
    cmd::run(
        Command::new("cargo")
            .current_dir(root.join("geminst-ebpf"))
            .args(["+nightly", "clippy", "--release", "-Z", "build-std=core", "--target", ebpf::BPF_TARGET])
            .arg("--target-dir")
            .arg(root.join("target/bpf-clippy"))
            .args(["--", "-D", "warnings"]),
    )?;
    cmd::run(Command::new("cargo").current_dir(&root).args(["test", "--workspace"]).args(extra))?;
    if extra.is_empty() {
        fuzz_smoke()?;
    }
    println!("xtask test: all passed");
    Ok(())
}

fn fuzz_smoke() -> Result<()> {
    let fuzz = workspace().join("geminst/fuzz");
    let Ok(entries) = fs::read_dir(fuzz.join("fuzz_targets")) else {
        return Ok(());
    };
    let mut targets: Vec<String> =
        entries.filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_string)).collect();
    targets.sort();
    for target in targets {
        cmd::run(
            Command::new("cargo")
                .current_dir(fuzz.parent().expect("geminst/"))
                .args(["+nightly", "fuzz", "run", &target, "--"])
                .arg(format!("-max_total_time={FUZZ_SMOKE_SECONDS}")),
        )?;
    }
    Ok(())
}
