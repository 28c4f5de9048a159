//! A server process under `geminst run`: started with its stderr kept in the run's folder,
//! ready once it says it listens (or its port answers), asked to stop with SIGTERM, and killed if
//! it is still there when `geminst run` ends. A server that dies while starting fails the run at
//! once with its own last words, not after the start timeout.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a server that prints no listening line has its port tried.
const PORT_POLL: Duration = Duration::from_millis(50);
/// Lines of a server's stderr quoted when it fails to start.
const QUOTED_LINES: usize = 5;

/// How a started server tells it is ready.
#[derive(Debug, Clone)]
pub enum Ready {
    /// It prints a line starting with this prefix and its address.
    Line(&'static str),
    /// It prints nothing: ready when this port accepts a connection.
    Port(u16),
}

/// A running server.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The rest of its listening line, or the command it was started with.
    pub describe: String,
    stderr_file: PathBuf,
}

impl ServerProcess {
    /// Starts `cmd`, keeping its stderr in `stderr_file`, and waits until it is ready.
    pub fn start(mut cmd: Command, ready: Ready, stderr_file: &Path, name: &str) -> Result<Self> {
        let describe = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {name} server ({describe})"))?;
        let stderr = child.stderr.take().expect("piped");
        let mut saved = std::fs::File::create(stderr_file)
            .with_context(|| format!("creating {}", stderr_file.display()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(saved, "{line}");
                let _ = tx.send(line);
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            describe,
            stderr_file: stderr_file.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut said: Vec<String> = Vec::new();
        loop {
            if let Some(status) = server.child.try_wait()? {
                // Let the reader thread drain what the server said before it died.
                while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                    said.push(line);
                }
                bail!("the {name} server exited while starting ({status}){}", last_words(&said));
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {name} server did not start within {START_TIMEOUT:?} (see {}){}",
                    server.stderr_file.display(),
                    last_words(&said)
                );
            }
            match &ready {
                Ready::Line(prefix) => match rx.recv_timeout(PORT_POLL) {
                    Ok(line) => {
                        if let Some(rest) = line.strip_prefix(prefix) {
                            let addr = rest.split_whitespace().next().unwrap_or_default();
                            server.addr = addr
                                .parse()
                                .with_context(|| format!("the {name} server said it listens on {addr:?}"))?;
                            server.describe = rest.to_string();
                            return Ok(server);
                        }
                        said.push(line);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The server closed its stderr: it is exiting; the next turn says how.
                    Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(PORT_POLL),
                },
                Ready::Port(port) => {
                    while let Ok(line) = rx.try_recv() {
                        said.push(line);
                    }
                    let addr = SocketAddr::from(([127, 0, 0, 1], *port));
                    if TcpStream::connect_timeout(&addr, PORT_POLL).is_ok() {
                        server.addr = addr;
                        return Ok(server);
                    }
                    std::thread::sleep(PORT_POLL);
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to finish (SIGTERM: servers finish their requests and flush their logs).
    pub fn terminate(&self) {
        // SAFETY: kill with our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Reaps the server, killing it if it is still there.
    pub fn status(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = self.child.kill();
                self.child.wait().ok()
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines a server printed, quoted for an error message.
fn last_words(lines: &[String]) -> String {
    let tail: Vec<&str> = lines.iter().rev().take(QUOTED_LINES).rev().map(String::as_str).collect();
    if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" / ")) }
}

/// A port on 127.0.0.1 that was free a moment ago, for servers that cannot choose their own.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
