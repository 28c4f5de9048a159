//! The server's own measure of each connection's CPU time: every poll of the connection's task is
//! bracketed by CLOCK_THREAD_CPUTIME_ID reads, and the differences summed, with the threads that
//! polled it. The tracer's accuracy tests take this as ground truth. It costs two clock reads
//! (system calls: this clock has no vDSO path) per poll; the benchmark reports how much.

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::sync::OwnedSemaphorePermit;

use super::log::{LogSink, Record};
use crate::clock;

thread_local! {
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// gettid(2) of the calling thread, asked once per thread.
pub fn current_tid() -> u32 {
    TID.with(|t| match t.get() {
        0 => {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            t.set(tid);
            tid
        }
        tid => tid,
    })
}

pin_project_lite::pin_project! {
    /// A connection's future, measured; when it completes, its record gets the CPU figures and
    /// goes to the log, and the connection's slot is given back.
    pub(crate) struct Measured<F> {
        #[pin]
        inner: F,
        cpu_ns: u64,
        polls: u32,
        tids: Vec<u32>,
        sink: LogSink,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> Measured<F> {
    pub fn new(inner: F, sink: LogSink, permit: OwnedSemaphorePermit) -> Self {
        Self { inner, cpu_ns: 0, polls: 0, tids: Vec::new(), sink, permit: Some(permit) }
    }
}

impl<F: Future<Output = Record>> Future for Measured<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let before = clock::thread_cpu_ns();
        let out = this.inner.poll(cx);
        let after = clock::thread_cpu_ns();
        *this.cpu_ns += after.saturating_sub(before);
        *this.polls += 1;
        let tid = current_tid();
        if !this.tids.contains(&tid) {
            this.tids.push(tid);
        }
        match out {
            Poll::Pending => Poll::Pending,
            Poll::Ready(mut rec) => {
                rec.cpu_ns = *this.cpu_ns;
                rec.polls = *this.polls;
                rec.tids = std::mem::take(this.tids);
                this.sink.push(rec);
                // The slot is free only once the record is queued, so a server that has all its
                // slots back has every record in the log queue.
                this.permit.take();
                Poll::Ready(())
            }
        }
    }
}
