//! The machine's busy CPU time, from /proc/stat.

/// Busy CPU time of all CPUs since boot, in ns: user, nice, system, irq and softirq time (steal,
/// idle and iowait are not the machine's work). /proc/stat counts in clock ticks (USER_HZ).
pub fn machine_busy_ns() -> Option<u64> {
    busy_from(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn busy_from(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let ticks = f.first()? + f.get(1)? + f.get(2)? + f.get(5).unwrap_or(&0) + f.get(6).unwrap_or(&0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_the_busy_fields() {
        let stat = "cpu  100 5 20 900 7 3 2 50 0 0\ncpu0 50 2 10 450 3 1 1 25 0 0\n";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(super::busy_from(stat), Some(130 * 1_000_000_000 / hz));
        assert!(super::machine_busy_ns().unwrap() > 0);
    }
}
