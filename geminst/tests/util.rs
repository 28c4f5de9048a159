//! Helpers shared by the integration tests. Capability-specific helpers live in their own module.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// The geminst binary built for these tests.
pub fn geminst() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_geminst"))
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The geminst-workload binary (known workloads: burn, pingpong, read).
pub fn workload() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_geminst-workload"))
}

/// The Python of the virtual environment `cargo xtask setup` creates (pyarrow, duckdb, peers).
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.is_file(), "{} is missing: run `cargo xtask setup`", python.display());
    python
}

/// Runs a Python script in the virtual environment with arguments; returns its stdout, failing
/// the test with its stderr if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(venv_python()).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// For tests that need root: true to run. Outside CI without root it prints why and returns false
/// (the test then returns early); in CI without root it fails, because CI must run them.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!in_ci(), "{test} needs root and CI must run it: run CI as root");
    eprintln!("SKIPPED {test}: needs root (run `sudo -E cargo xtask test` or as root)");
    false
}

/// For tests that load eBPF programs: `root_or_skip`, and the real object built in. A geminst
/// built without the eBPF toolchain holds a placeholder (geminst/build.rs): outside CI the test
/// prints why and returns false; in CI it fails, because CI must test the real programs.
pub fn ebpf_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let Some(missing) = option_env!("GEMINST_EBPF_PLACEHOLDER") else { return true };
    assert!(!in_ci(), "{test} needs the eBPF programs, but geminst was built without them: {missing}");
    eprintln!("SKIPPED {test}: geminst was built without its eBPF programs: {missing}");
    false
}

/// Serialises tests that load eBPF programs, capture packets or measure CPU, so they neither see
/// each other's programs nor share the two cores while measuring.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh, empty directory for one test, under the target directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("test-tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// nothing running.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// Sends a signal (SIGINT, SIGTERM) to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Waits up to `timeout` for the child to exit; panics if it does not.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "child {} did not exit within {timeout:?}", self.pid());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit and returns (status, stdout, stderr), for children spawned with piped output.
    pub fn output(mut self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let mut child = self.0.take().unwrap();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        // Drain both pipes on threads so a chatty child cannot block on a full pipe.
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        self.0 = Some(child);
        let status = self.wait(timeout);
        (status, out.join().unwrap(), err.join().unwrap())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns a command with piped stdout and stderr under a guard.
pub fn spawn(cmd: &mut Command) -> Guard {
    Guard::new(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
}

/// Reads lines from `reader` until one satisfies `pred` (returned) or `timeout` passes (panics).
/// The reader is moved to a thread, so this works on pipes that may stay silent.
pub fn wait_for_line<R: Read + Send + 'static>(
    reader: R,
    timeout: Duration,
    pred: impl Fn(&str) -> bool + Send + 'static,
) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let hit = pred(&line);
            if tx.send((hit, line)).is_err() || hit {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, line)) => return line,
            Ok((false, line)) => seen.push(line),
            Err(_) => panic!("no matching line within {timeout:?}; saw: {seen:#?}"),
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The column names docs/schema.md lists for `file` (the first cell of each row of the table
/// under the heading `## <file>`); `wire_{c2s,s2c}_x` stands for the c2s columns then the s2c
/// ones, each group in the order listed.
pub fn documented_columns(file: &str) -> Vec<String> {
    documented_columns_in("docs/schema.md", &format!("## {file}"))
}

/// The column names of the first table under `heading` in the document `doc` (relative to the
/// repository), in order, backticks removed, `{c2s,s2c}` rows expanded as `documented_columns`.
pub fn documented_columns_in(doc: &str, heading: &str) -> Vec<String> {
    documented_table_in(doc, heading).into_iter().map(|(name, _)| name).collect()
}

/// (column name, type cell) of each row of the first table under `heading` in `doc`, expanded as
/// `documented_columns_in` does.
pub fn documented_table_in(doc: &str, heading: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join(doc)).unwrap();
    let section = text.split(heading).nth(1).unwrap_or_else(|| panic!("{doc} has no `{heading}`"));
    let section = section.split("\n## ").next().unwrap();
    let names: Vec<(String, String)> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator rows
        .map(|l| {
            let mut cells = l.trim_matches('|').split('|').map(str::trim);
            let name = cells.next().unwrap().trim_matches('`').to_string();
            (name, cells.next().unwrap_or_default().to_string())
        })
        .collect();
    // Expand each run of `{c2s,s2c}` rows into all its c2s names, then all its s2c names.
    let mut out = Vec::new();
    let mut i = 0;
    while i < names.len() {
        if !names[i].0.contains("{c2s,s2c}") {
            out.push(names[i].clone());
            i += 1;
            continue;
        }
        let start = i;
        let prefix = |n: &str| n.split("{c2s,s2c}").next().unwrap().to_string();
        while i < names.len()
            && names[i].0.contains("{c2s,s2c}")
            && prefix(&names[i].0) == prefix(&names[start].0)
        {
            i += 1;
        }
        for dir in ["c2s", "s2c"] {
            out.extend(names[start..i].iter().map(|(n, t)| (n.replace("{c2s,s2c}", dir), t.clone())));
        }
    }
    out
}

/// Reads a Parquet file with pyarrow (an independent reader) and returns its schema as
/// (name, arrow type) pairs and its rows as JSON objects.
pub fn read_parquet(path: &Path) -> (Vec<(String, String)>, Vec<serde_json::Value>) {
    let script = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(json.dumps({"schema": [[f.name, str(f.type)] for f in t.schema], "rows": t.to_pylist()}))
"#;
    let out = python(script, &[path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let schema = v["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
        .collect();
    (schema, v["rows"].as_array().unwrap().clone())
}

/// A child's output lines, read on a thread, handed over with timeouts.
pub struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    pub fn new<R: Read + Send + 'static>(reader: R) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// The next line satisfying `pred`, within `timeout` (panics otherwise, with what was seen).
    pub fn expect(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match self.0.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if pred(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {what} within {timeout:?}; saw: {seen:#?}"),
            }
        }
    }

    /// Everything until the stream closes (or `timeout`).
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Ok(line) = self.0.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            out.push(line);
        }
        out
    }
}

/// The built-in server's request log, every line a record (a malformed line fails the test).
pub fn read_server_log(path: &Path) -> Vec<geminst::dataset::serverlog::Record> {
    let log = geminst::dataset::serverlog::read(path).unwrap();
    assert!(log.skipped.is_empty(), "{}: lines that are not records: {:?}", path.display(), log.skipped);
    log.records
}
