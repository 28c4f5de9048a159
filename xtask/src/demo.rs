//! `cargo xtask demo`: set up if needed, build, and run the main job: trace a multi-threaded
//! CPU-burning workload that the demo starts, print the per-thread table and write the data set.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{cmd, setup, workspace};

/// Milliseconds of CPU each workload thread burns: different, so the table shows attribution.
const BURN_MS: &[&str] = &["250", "500", "750", "1000"];

pub fn run() -> Result<()> {
    setup::run()?;
    let root = workspace();
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "geminst",
        "--bin",
        "geminst",
        "--example",
        "burn",
    ]))?;
    let release = root.join("target/release");
    let out = root.join("runs").join(format!("demo-{}", std::process::id()));

    let mut workload = Command::new(release.join("geminst-workload"))
        .arg("burn")
        .args(BURN_MS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the burn workload")?;
    let mut to_workload = workload.stdin.take().expect("piped");
    let mut from_workload = BufReader::new(workload.stdout.take().expect("piped")).lines();
    let expect = |lines: &mut std::io::Lines<_>, prefix: &str| -> Result<String> {
        match lines.next() {
            Some(Ok(line)) if line.starts_with(prefix) => Ok(line),
            other => bail!("the workload said {other:?}, expected `{prefix}`"),
        }
    };
    expect(&mut from_workload, "ready")?;

    println!(
        "demo: tracing the burn workload (pid {}): threads burning {} ms of CPU",
        workload.id(),
        BURN_MS.join(", ")
    );
    let mut tracer = cmd::as_root(release.join("geminst").to_str().expect("UTF-8 path"))
        .args(["trace", "--pid", &workload.id().to_string(), "--out"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting geminst trace")?;
    let mut tracer_err = BufReader::new(tracer.stderr.take().expect("piped")).lines();
    // The tracer says so on stderr once every program is attached.
    loop {
        match tracer_err.next() {
            Some(Ok(line)) if line.contains("tracing") => break,
            Some(Ok(line)) => eprintln!("{line}"),
            _ => bail!("geminst trace stopped before it started tracing"),
        }
    }
    std::thread::spawn(move || tracer_err.for_each(|l| eprintln!("{}", l.unwrap_or_default())));
    writeln!(to_workload, "go")?;
    expect(&mut from_workload, "burned")?;
    writeln!(to_workload, "exit")?;
    workload.wait()?;
    let status = tracer.wait()?;
    if !status.success() {
        bail!("geminst trace failed ({status})");
    }
    println!(
        "demo: read it back with `.venv/bin/python -c \"import pyarrow.parquet as pq; print(pq.read_table('{}/threads.parquet').to_pandas())\"`",
        out.display()
    );
    Ok(())
}
