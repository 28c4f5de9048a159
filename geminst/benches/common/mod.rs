//! What the benchmarks share: the root check, medians, and the CPU time of a process read from
//! the kernel's own accounting in /proc (independent of geminst's measurement).

#![allow(dead_code)] // each benchmark uses its own part of this

/// Exits with a message unless running as root (the benchmark loads eBPF programs or captures).
pub fn require_root(bench: &str, why: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{bench} needs root ({why}): run it as root");
        std::process::exit(1);
    }
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// utime + stime of a process in ns, from /proc/PID/stat: clock ticks (10 ms here), so only good
/// over runs of many seconds.
pub fn stat_cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after_comm starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    ticks * 1_000_000_000 / hz
}

/// The run time of a process's live threads in ns: the sum of the first field of each
/// /proc/PID/task/TID/schedstat (the scheduler's own nanosecond count; threads that have exited
/// are not in it).
pub fn sched_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
