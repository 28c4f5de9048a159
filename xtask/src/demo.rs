//! `cargo xtask demo`: set up if needed, build, and run the main job: `geminst run` on defaults
//! (the built-in server traced under the default load profile), then show what the data set holds.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{cmd, setup, workspace};

/// Reads the run's files back with pyarrow and duckdb, as a notebook would.
const READ_BACK: &str = r#"
import sys, duckdb, pyarrow.parquet as pq
run = sys.argv[1]
for name in ["requests", "connections", "threads", "timeseries"]:
    t = pq.read_table(f"{run}/{name}.parquet")
    print(f"{name}.parquet: {t.num_rows} rows, {t.num_columns} columns")
print(duckdb.sql(f"""
    select regexp_extract(url, '/_bench/(\w+/\d+)', 1) as route, count(*) as requests,
           round(avg(cpu_ns) / 1e3, 1) as cpu_us, round(avg(log_cpu_ns) / 1e3, 1) as server_own_cpu_us,
           round(avg(energy_j) * 1e3, 3) as energy_mj,
           round(avg(response_body_bytes)) as body_bytes, round(avg(sock_send_bytes)) as tls_bytes_out,
           round(avg(wire_s2c_frame_bytes)) as wire_bytes_out, round(avg(predicted_s2c_frame_bytes)) as predicted_out
    from '{run}/requests.parquet' group by route order by route
""").df().to_string())
"#;

pub fn run() -> Result<()> {
    setup::run()?;
    let root = workspace();
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "geminst",
        "--bins",
    ]))?;
    let geminst = root.join("target/release/geminst");
    let out = root.join("runs").join(format!("demo-{}", std::process::id()));
    println!("demo: geminst run: the built-in server, traced under testdata/profiles/default.toml");
    cmd::run(cmd::as_root(geminst.to_str().expect("UTF-8 path")).arg("run").arg("--out").arg(&out))?;
    let status = Command::new(setup::venv_python()).arg("-c").arg(READ_BACK).arg(&out).status()?;
    if !status.success() {
        bail!("reading the run back with pyarrow and duckdb failed ({status})");
    }
    println!("demo: the data set is in {} (columns: docs/schema.md)", out.display());
    Ok(())
}
