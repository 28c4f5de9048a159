//! The request log: one JSON line per TCP connection, in the format of `dataset::serverlog::Record`
//! (documented field by field in docs/request-log.md). Records are queued in memory by the connection tasks
//! and written by a thread of their own, in batches, so the request path never waits on the disk
//! and never wakes another thread per request.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    mem,
    path::Path,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
/// How long records may wait in memory before they are written: a reader tailing the log is never
/// further behind than this.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

pub use crate::dataset::serverlog::Record;

#[derive(Default)]
struct Queue {
    records: Vec<Record>,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where connection tasks hand their records; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogSink(Arc<Shared>);

impl LogSink {
    /// Queues a record. Takes an uncontended lock; wakes the writer only when the queue was empty,
    /// which under load happens once per flush interval.
    pub fn push(&self, record: Record) {
        let mut q = self.0.lock();
        let was_empty = q.records.is_empty();
        q.records.push(record);
        drop(q);
        if was_empty {
            self.0.wake.notify_one();
        }
    }
}

/// The writer thread and its queue.
pub(crate) struct LogWriter {
    sink: LogSink,
    thread: thread::JoinHandle<io::Result<u64>>,
}

impl LogWriter {
    /// Creates (truncates) the log file: one file holds one server run, so req_id is unique in it.
    pub fn start(path: &Path) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("creating the request log {}", path.display()))?;
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), wake: Condvar::new() });
        let sink = LogSink(shared.clone());
        let thread = thread::Builder::new()
            .name("geminst-log".into())
            .spawn(move || write_loop(&shared, file))
            .context("starting the request-log thread")?;
        Ok(Self { sink, thread })
    }

    pub fn sink(&self) -> LogSink {
        self.sink.clone()
    }

    /// Writes what is queued, syncs the file and stops the thread; returns the lines written.
    pub fn finish(self) -> Result<u64> {
        self.sink.0.lock().closing = true;
        self.sink.0.wake.notify_one();
        let written = self.thread.join().map_err(|_| anyhow::anyhow!("the request-log thread panicked"))?;
        written.context("writing the request log")
    }
}

fn write_loop(shared: &Shared, file: File) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut batch = Vec::new();
    let mut lines = 0u64;
    let mut failed: Option<io::Error> = None;
    loop {
        let closing = {
            let mut q = shared.lock();
            while q.records.is_empty() && !q.closing {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if !q.closing {
                // Gather what arrives during the interval into one write.
                q = shared
                    .wake
                    .wait_timeout_while(q, FLUSH_INTERVAL, |q| !q.closing)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            mem::swap(&mut q.records, &mut batch);
            q.closing && q.records.is_empty()
        };
        if failed.is_none() {
            let result = batch.iter().try_for_each(|r| {
                serde_json::to_writer(&mut out, r)?;
                out.write_all(b"\n")
            });
            match result.and_then(|()| out.flush()) {
                Ok(()) => lines += batch.len() as u64,
                Err(e) => {
                    // Keep serving; the loss is reported when the server stops.
                    eprintln!(
                        "geminst serve: writing the request log failed: {e}; further records are dropped"
                    );
                    failed = Some(e);
                }
            }
        }
        batch.clear();
        if closing {
            break;
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_present_and_nulls_are_written() {
        let r = Record::accepted(7, "127.0.0.1:5000".parse().unwrap(), "[::1]:1965".parse().unwrap(), 11, 22);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        let keys = [
            "req_id",
            "peer_addr",
            "local_addr",
            "accept_mono_ns",
            "accept_unix_ns",
            "handshake_mono_ns",
            "handshake_unix_ns",
            "request_mono_ns",
            "request_unix_ns",
            "done_mono_ns",
            "done_unix_ns",
            "sni",
            "url",
            "status",
            "meta",
            "request_bytes",
            "response_header_bytes",
            "response_body_bytes",
            "tcp_bytes_read",
            "tcp_bytes_written",
            "tls_version",
            "tls_cipher",
            "tls_resumed",
            "tids",
            "cpu_ns",
            "polls",
            "error",
        ];
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), keys.len());
        for k in keys {
            assert!(obj.contains_key(k), "{k}");
        }
        assert_eq!(v["peer_addr"], "127.0.0.1:5000");
        assert_eq!(v["local_addr"], "[::1]:1965");
        assert!(v["sni"].is_null() && v["status"].is_null());
    }

    #[test]
    fn writer_writes_every_record_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("geminst-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("requests.jsonl");
        let writer = LogWriter::start(&path).unwrap();
        let sink = writer.sink();
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        for id in 1..=1000 {
            let mut r = Record::accepted(id, addr, addr, id, id);
            r.tls_version = Some(std::borrow::Cow::Borrowed("TLSv1.3"));
            sink.push(r);
        }
        assert_eq!(writer.finish().unwrap(), 1000);
        let log = crate::dataset::serverlog::read(&path).unwrap();
        assert!(log.skipped.is_empty(), "{:?}", log.skipped);
        let back = log.records;
        assert_eq!(back.len(), 1000);
        assert!(back.iter().enumerate().all(|(i, r)| r.req_id == i as u64 + 1));
        assert_eq!(back[0].tls_version.as_deref(), Some("TLSv1.3"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
