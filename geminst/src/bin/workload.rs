//! A CPU-burning workload with a known answer, for the tracer's accuracy tests and the demo.
//!
//! `burn MS [MS ...]` prints `ready`, waits for `go` on stdin, starts one thread per argument,
//! each burning that many milliseconds of its own CPU time (CLOCK_THREAD_CPUTIME_ID), then prints
//! `burned TID...` and keeps the threads alive until `exit` arrives on stdin, so the kernel's
//! per-thread counters can be read before they disappear.

use std::{
    io::{BufRead, Write},
    sync::{Arc, Barrier, mpsc},
    thread,
};

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec; the clock exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let amounts: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| panic!("not a number of milliseconds: {a}")))
        .collect();
    assert!(!amounts.is_empty(), "usage: burn MS [MS ...]");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    while lines.next().and_then(|l| l.ok()).is_some_and(|l| l.trim() != "go") {}

    let release = Arc::new(Barrier::new(amounts.len() + 1));
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, &ms)| {
            let (tx, release) = (tx.clone(), release.clone());
            thread::Builder::new()
                .name(format!("burn-{i}"))
                .spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    let end = thread_cpu_ns() + ms * 1_000_000;
                    let mut x = 0u64;
                    while thread_cpu_ns() < end {
                        for _ in 0..1000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                    tx.send((i, tid)).unwrap();
                    release.wait();
                })
                .unwrap()
        })
        .collect();
    let mut tids = vec![0; amounts.len()];
    for _ in 0..amounts.len() {
        let (i, tid) = rx.recv().unwrap();
        tids[i] = tid;
    }
    let list: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
    writeln!(out, "burned {}", list.join(" ")).unwrap();
    out.flush().unwrap();
    while lines.next().and_then(|l| l.ok()).is_some_and(|l| l.trim() != "exit") {}
    release.wait();
    for h in handles {
        h.join().unwrap();
    }
}
