//! What the tracer reads of a target process from /proc, and a pidfd to learn when it exits.

use std::{
    fs,
    os::fd::{FromRawFd, OwnedFd},
    path::PathBuf,
};

use anyhow::Result;

use crate::exit::bad_input;

/// A process being traced.
#[derive(Debug)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    /// Readable once the process has exited (pidfd_open(2)).
    pidfd: OwnedFd,
}

impl Target {
    /// Opens the process; a pid with no process is bad input (exit code 2).
    pub fn open(pid: u32) -> Result<Self> {
        if pid == 0 {
            return bad_input("pid 0 is not a process");
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return bad_input(format!("no process with pid {pid}"));
            }
            anyhow::bail!("opening pid {pid}: {err}");
        }
        // A pid that names a thread but not a process (a tid) is refused by pidfd_open with
        // EINVAL on older kernels; make the message clear either way.
        if !proc_dir(pid).join("task").is_dir() {
            return bad_input(format!("no process with pid {pid}"));
        }
        let status = fs::read_to_string(proc_dir(pid).join("status")).unwrap_or_default();
        let tgid = field(&status, "Tgid:").and_then(|v| v.parse::<u32>().ok());
        if tgid.is_some_and(|t| t != pid) {
            return bad_input(format!(
                "{pid} is a thread of process {}; pass the process id",
                tgid.unwrap_or_default()
            ));
        }
        Ok(Self {
            pid,
            comm: comm(pid, pid).unwrap_or_default(),
            // SAFETY: fd is a fresh descriptor returned by pidfd_open and owned by nobody else.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Waits up to `timeout_ms` for the process to exit; true if it has.
    pub fn wait_exit(&self, timeout_ms: i32) -> bool {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Thread ids of the process now.
    pub fn tasks(&self) -> Vec<u32> {
        tasks(self.pid)
    }
}

fn proc_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// Thread ids listed in /proc/PID/task.
pub fn tasks(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = fs::read_dir(proc_dir(pid).join("task"))
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// A thread's current name, if it still exists.
pub fn comm(pid: u32, tid: u32) -> Option<String> {
    fs::read_to_string(proc_dir(pid).join(format!("task/{tid}/comm")))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// The kernel's runtime of a thread in ns (first field of /proc/PID/task/TID/schedstat:
/// `se.sum_exec_runtime`, as of the scheduler's last update), if it still exists.
pub fn runtime_ns(pid: u32, tid: u32) -> Option<u64> {
    let s = fs::read_to_string(proc_dir(pid).join(format!("task/{tid}/schedstat"))).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Descriptors of a process that name a path (regular files, directories, devices), as opposed
/// to sockets, pipes and anonymous inodes: the ones the file programs count.
pub fn path_fds(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(proc_dir(pid).join("fd")) else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: u32 = e.file_name().to_str()?.parse().ok()?;
        let target = fs::read_link(e.path()).ok()?;
        target.is_absolute().then_some(fd)
    })
    .collect()
}

/// Inodes of a process's sockets, from its /proc/PID/fd links (`socket:[INODE]`).
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(proc_dir(pid).join("fd")) else { return Vec::new() };
    dir.filter_map(|e| {
        let target = fs::read_link(e.ok()?.path()).ok()?;
        target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// TCP state LISTEN as /proc/net/tcp spells it (include/net/tcp_states.h: TCP_LISTEN = 10).
const TCP_LISTEN_HEX: &str = "0A";

/// Ports the process listens on with TCP (IPv4 or IPv6), sorted.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes = socket_inodes(pid);
    let mut ports = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        let text = fs::read_to_string(proc_dir(pid).join(table)).unwrap_or_default();
        ports.extend(listening_in(&text, &inodes));
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Ports of LISTEN sockets in a /proc/net/tcp{,6} table whose inode is one of `inodes`.
fn listening_in(table: &str, inodes: &[u64]) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != TCP_LISTEN_HEX || !inodes.contains(&inode.parse().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// Resident set size of a process in bytes, if it still exists.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(proc_dir(pid).join("statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some(pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_opens_and_lists_its_threads() {
        let me = std::process::id();
        let t = Target::open(me).unwrap();
        assert_eq!(t.pid, me);
        assert!(t.tasks().contains(&me));
        assert!(!t.wait_exit(0), "a running process has not exited");
        assert!(rss_bytes(me).unwrap() > 0);
    }

    #[test]
    fn finds_listening_ports_of_own_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_ports(std::process::id()).contains(&port));
        drop(listener);
        assert!(!listening_ports(std::process::id()).contains(&port));
    }

    #[test]
    fn parses_listen_lines_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:07AD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0
   1: 0100007F:07AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0 100 0 0 10 0
   2: 0100007F:07AD 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0 100 0 0 10 0
";
        assert_eq!(listening_in(table, &[4242, 4243]), vec![1965]);
    }

    #[test]
    fn missing_pid_is_bad_input() {
        // pid_max is at most 2^22 on Linux, so this pid cannot exist.
        let err = Target::open(4_194_305).unwrap_err();
        assert_eq!(crate::exit::code_for(&err), crate::exit::BAD_INPUT);
        assert!(err.to_string().contains("no process with pid 4194305"), "{err}");
    }
}
