//! A sleep to the nanosecond on CLOCK_MONOTONIC, inside the tokio runtime.
//!
//! tokio's own timers round deadlines up to whole milliseconds, which alone would make every
//! request start up to 1 ms late. A timerfd armed with an absolute CLOCK_MONOTONIC deadline is an
//! hrtimer (no timer slack) and wakes the runtime's epoll when it fires, so the open-loop
//! schedule is kept to the scheduler's wake-up latency, on the same clock the records use.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use crate::clock;

pub struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
}

impl PreciseTimer {
    /// Must be called inside a tokio runtime with IO enabled.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd returned is owned by the OwnedFd below.
        let raw =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd is moved into the AsyncFd and stays open, the same fd, until the
        // AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Returns at or after `deadline_ns` (CLOCK_MONOTONIC); at once if it has passed.
    pub async fn sleep_until(&self, deadline_ns: u64) -> io::Result<()> {
        if clock::monotonic_ns() >= deadline_ns {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: fd is our timerfd; spec is a valid itimerspec; the old value is not wanted.
        let rc = unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reading 8 bytes into a u64 from our timerfd.
            let n = unsafe { libc::read(fd, (&raw mut expirations).cast(), 8) };
            if n == 8 {
                // The timer is one-shot: nothing more to read until it is armed again.
                guard.clear_ready();
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            // Readiness left over from an earlier deadline: clear it and wait again.
            guard.clear_ready();
            if clock::monotonic_ns() >= deadline_ns {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_to_the_deadline_not_before() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let t = PreciseTimer::new().unwrap();
            let mut lates = Vec::new();
            for _ in 0..20 {
                let deadline = clock::monotonic_ns() + 2_000_000;
                t.sleep_until(deadline).await.unwrap();
                let now = clock::monotonic_ns();
                assert!(now >= deadline, "woke {} ns early", deadline - now);
                lates.push(now - deadline);
            }
            // A past deadline returns at once.
            t.sleep_until(0).await.unwrap();
            // Not a speed assertion: only that the timer is not rounding to whole milliseconds
            // every time, which tokio's timer would.
            assert!(lates.iter().any(|&l| l < 900_000), "always late by ~1 ms: {lates:?}");
        });
    }
}
