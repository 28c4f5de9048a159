//! `geminst-workload`: workloads with a known answer, to check geminst's figures against.
//!
//! - `burn MS [MS ...]`: prints `ready`, waits for `go` on stdin (or `exit`, to end at once),
//!   starts one thread per argument, each burning that many milliseconds of its own CPU time
//!   (CLOCK_THREAD_CPUTIME_ID), prints `burned TID...` and keeps the threads alive until `exit`
//!   arrives on stdin, so the kernel's per-thread counters can be read before they disappear.
//! - `pingpong SECS`: two threads hand a token back and forth through pipes for SECS seconds, a
//!   context switch per hand-over; prints `handoffs N`.
//! - `read FILE`: prints `ready`, waits for `go`, reads FILE to the end with 1 MiB reads in one
//!   thread, prints `read BYTES TID`, then waits for `exit`.

use std::{
    fs::File,
    io::{BufRead, Read, Write},
    os::fd::{FromRawFd, OwnedFd},
    sync::{Arc, Barrier, mpsc},
    thread,
    time::{Duration, Instant},
};

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// A thread's state letter from /proc/self/task/TID/stat (R, S, D, ...).
fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the parenthesised name, which may itself hold spaces or parentheses.
    stat.rsplit_once(") ")?.1.chars().next()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Reads stdin lines until `word`; false if stdin ends or says `exit` first.
fn wait_for(word: &str) -> bool {
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok(w) if w == word => return true,
            Ok("exit") | Err(_) => return false,
            Ok(_) => {}
        }
    }
    false
}

fn burn(amounts: &[u64]) {
    say("ready");
    if !wait_for("go") {
        return;
    }
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
                    let end = geminst::clock::thread_cpu_ns() + ms * 1_000_000;
                    let mut x = 0u64;
                    while geminst::clock::thread_cpu_ns() < end {
                        for _ in 0..1000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                    tx.send((i, gettid())).unwrap();
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
    // Say so only once every thread sleeps at the barrier, so a reader of /proc sees settled
    // counters (a thread still on its way into the barrier would switch once more).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !tids.iter().all(|&t| thread_state(t) == Some('S')) {
        thread::sleep(Duration::from_millis(1));
    }
    let list: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
    say(&format!("burned {}", list.join(" ")));
    wait_for("exit");
    release.wait();
    for h in handles {
        h.join().unwrap();
    }
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1]))) }
}

fn pingpong(secs: f64) {
    let (mut a_read, mut a_write) = pipe();
    let (mut b_read, mut b_write) = pipe();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let partner = thread::Builder::new()
        .name("pong".into())
        .spawn(move || {
            let mut byte = [0u8];
            let mut n = 0u64;
            // Echo until the other side closes its end.
            while a_read.read(&mut byte).unwrap_or(0) == 1 {
                b_write.write_all(&byte).unwrap();
                n += 1;
            }
            n
        })
        .unwrap();
    let mut byte = [1u8];
    let mut n = 0u64;
    while Instant::now() < deadline {
        a_write.write_all(&byte).unwrap();
        b_read.read_exact(&mut byte).unwrap();
        n += 1;
    }
    drop(a_write);
    let echoed = partner.join().unwrap();
    assert_eq!(n, echoed);
    say(&format!("handoffs {n}"));
}

fn read(path: &str) {
    say("ready");
    if !wait_for("go") {
        return;
    }
    let mut file = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // Plain reads, like a server's: read-ahead is the kernel's business.
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    say(&format!("read {total} {}", gettid()));
    wait_for("exit");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: geminst-workload burn MS [MS ...] | pingpong SECS | read FILE";
    match args.first().map(String::as_str) {
        Some("burn") if args.len() > 1 => {
            let amounts: Vec<u64> = args[1..]
                .iter()
                .map(|a| a.parse().unwrap_or_else(|_| panic!("not milliseconds: {a}")))
                .collect();
            burn(&amounts)
        }
        Some("pingpong") if args.len() == 2 => pingpong(args[1].parse().expect("seconds")),
        Some("read") if args.len() == 2 => read(&args[1]),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
