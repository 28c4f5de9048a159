//! The servers `geminst run` can start, and how: the command line of each kind, what it can do
//! (write the request log, serve the bench routes), and how it says it is listening.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};
use clap::ValueEnum;
use serde::Serialize;

/// A server `geminst run` knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// `geminst serve`, the built-in Rust server
    Geminst,
    /// The project's Python server (servers/python, standard library only)
    Python,
    /// The project's Go server (servers/go, standard library only)
    Go,
    /// Jetforce (Python, Twisted; from the project's virtual environment)
    Jetforce,
    /// molly-brown (Go; Debian's package)
    MollyBrown,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Geminst => "geminst",
            Self::Python => "python",
            Self::Go => "go",
            Self::Jetforce => "jetforce",
            Self::MollyBrown => "molly-brown",
        }
    }

    /// Writes the request log of docs/request-log.md.
    pub fn writes_log(self) -> bool {
        matches!(self, Self::Geminst | Self::Python | Self::Go)
    }

    /// Serves /_bench/bytes/N and /_bench/cpu/US.
    pub fn bench_routes(self) -> bool {
        self.writes_log()
    }

    /// The start of the line the server prints on stderr once it listens, followed by its
    /// address; None for servers that print none (their port is polled instead).
    pub fn listening_prefix(self) -> Option<&'static str> {
        match self {
            Self::Geminst => Some("geminst serve: listening on "),
            Self::Python => Some("python-gemini: listening on "),
            Self::Go => Some("go-gemini: listening on "),
            Self::Jetforce | Self::MollyBrown => None,
        }
    }
}

/// What a server is started with: the same capsule, certificate and key for every kind.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The port to listen on; 0 for servers that choose a free one and print it.
    pub port: u16,
    pub root: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where a server that writes the request log writes it.
    pub log: PathBuf,
    /// A folder for the server's own state and configuration (shared between runs).
    pub state_dir: PathBuf,
    /// The run's folder, for files a server writes that belong to the run (molly-brown's logs).
    pub run_dir: PathBuf,
    /// Worker threads, for servers that take the number.
    pub threads: Option<u16>,
    /// Arguments added at the end of the server's command line (variants).
    pub extra_args: Vec<String>,
}

/// The hostname every server is started for, and the load addresses.
pub const HOSTNAME: &str = "localhost";

fn repo_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The Python interpreter for the project's Python server: the system's python3 (the server uses
/// the standard library only).
const PYTHON: &str = "python3";

/// The command that starts `kind` with `launch`.
pub fn command(kind: ServerKind, launch: &Launch) -> Result<Command> {
    let addr = format!("127.0.0.1:{}", launch.port);
    let mut cmd = match kind {
        ServerKind::Geminst => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["serve", "--bench-routes", "--addr", &addr, "--hostname", HOSTNAME, "--log"])
                .arg(&launch.log)
                .arg("--state-dir")
                .arg(&launch.state_dir)
                .arg("--cert")
                .arg(&launch.cert)
                .arg("--key")
                .arg(&launch.key)
                .arg("--root")
                .arg(&launch.root);
            if let Some(n) = launch.threads {
                c.args(["--threads", &n.to_string()]);
            }
            c
        }
        ServerKind::Python => {
            let mut c = Command::new(PYTHON);
            c.arg(repo_dir("servers/python/server.py"))
                .args(["--bench-routes", "--addr", &addr, "--hostname", HOSTNAME, "--log"])
                .arg(&launch.log)
                .arg("--cert")
                .arg(&launch.cert)
                .arg("--key")
                .arg(&launch.key)
                .arg("--root")
                .arg(&launch.root);
            c
        }
        ServerKind::Go => {
            let mut c = Command::new(go_server(&launch.state_dir)?);
            c.args(["-bench-routes", "-addr", &addr, "-hostname", HOSTNAME, "-log"])
                .arg(&launch.log)
                .arg("-cert")
                .arg(&launch.cert)
                .arg("-key")
                .arg(&launch.key)
                .arg("-root")
                .arg(&launch.root);
            c
        }
        ServerKind::Jetforce => {
            let jetforce = repo_dir(".venv/bin/jetforce");
            if !jetforce.is_file() {
                bail!("{} is missing: run `cargo xtask setup`", jetforce.display());
            }
            let mut c = Command::new(jetforce);
            c.args(["--host", "127.0.0.1", "--port", &launch.port.to_string(), "--hostname", HOSTNAME])
                .arg("--dir")
                .arg(&launch.root)
                .arg("--tls-certfile")
                .arg(&launch.cert)
                .arg("--tls-keyfile")
                .arg(&launch.key);
            c
        }
        ServerKind::MollyBrown => {
            let conf = launch.run_dir.join("molly-brown.conf");
            // molly-brown reads a TOML file (its README); the logs go to the run's folder.
            let quote = |p: &Path| format!("{:?}", p.display().to_string());
            std::fs::write(
                &conf,
                format!(
                    "Port = {}\nHostname = \"{HOSTNAME}\"\nCertPath = {}\nKeyPath = {}\nDocBase = {}\n\
                     AccessLog = {}\nErrorLog = {}\n",
                    launch.port,
                    quote(&launch.cert),
                    quote(&launch.key),
                    quote(&launch.root.join("")),
                    quote(&launch.run_dir.join("molly-brown-access.log")),
                    quote(&launch.run_dir.join("molly-brown-error.log")),
                ),
            )?;
            let mut c = Command::new("molly-brown");
            c.arg("-c").arg(conf);
            c
        }
    };
    cmd.args(&launch.extra_args);
    Ok(cmd)
}

/// A `--server-cmd` line with its placeholders filled in: {port}, {root}, {cert}, {key},
/// {hostname}. It runs under `sh -c 'exec ...'`, so the server is the traced process itself.
pub fn custom_command(template: &str, launch: &Launch) -> Command {
    let line = template
        .replace("{port}", &launch.port.to_string())
        .replace("{root}", &launch.root.display().to_string())
        .replace("{cert}", &launch.cert.display().to_string())
        .replace("{key}", &launch.key.display().to_string())
        .replace("{hostname}", HOSTNAME);
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("exec {line}"));
    cmd
}

/// The Go server's binary, built from servers/go into `state_dir` when missing or older than its
/// sources (a standard-library build takes about a second).
fn go_server(state_dir: &Path) -> Result<PathBuf> {
    let src = repo_dir("servers/go");
    let bin = state_dir.join("go-gemini");
    let newest_source = newest_mtime(&src);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none() || newest_source.is_some_and(|s| Some(s) > built) {
        let status = Command::new("go")
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .args(["build", "-o"])
            .arg(&bin)
            .arg("./cmd/gemini-server")
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => bail!("building the Go server in {} failed ({s})", src.display()),
            Err(e) => bail!(
                "running `go build` for the Go server: {e} (run `cargo xtask setup`, which installs golang-go)"
            ),
        }
    }
    Ok(bin)
}

/// The latest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() { newest_mtime(&path) } else { entry.metadata().ok()?.modified().ok() };
        newest = newest.max(t);
    }
    newest
}
