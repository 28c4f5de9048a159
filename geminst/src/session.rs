//! A measuring session: the eBPF tracer, the packet capture and the power meter started together
//! on the same targets, the time series sampled from all three at a fixed interval, and everything
//! stopped together. Each piece returns its own typed result; the session only wires them up, so
//! `geminst trace`, `geminst run` and the experiment runner measure the same way.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;

use crate::{
    capture::{Capture, CaptureConfig},
    clock,
    dataset::{Measurement, runinfo::Host, timeseries::Sample},
    energy::{Meter, PowerArgs},
    trace::{Counts, ThreadRow, TraceConfig, Tracer},
};

/// A packet capture on the server ports.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub iface: String,
    /// Also write the frames to this pcap file.
    pub write_pcap: Option<PathBuf>,
}

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub trace: TraceConfig,
    /// Length of a time-series interval.
    pub interval: Duration,
    pub power: PowerArgs,
    pub capture: Option<CaptureRequest>,
}

pub struct Session {
    tracer: Tracer,
    capture: Option<Capture>,
    capture_problem: Option<String>,
    meter: Meter,
    samples: Vec<Sample>,
    interval_ns: u64,
    last_sample_ns: u64,
}

impl Session {
    /// Starts the tracer, then the capture on the ports it traces, then the meter. When this
    /// returns, every thread of every target is traced and the first interval has begun.
    pub fn start(cfg: &SessionConfig) -> Result<Self> {
        if cfg.interval.is_zero() {
            return crate::exit::bad_input("the time-series interval must be longer than zero");
        }
        // The power model's parameters are input: checked before anything is loaded.
        let mut meter = Meter::new(&cfg.power, Host::read().cpus)?;
        let tracer = Tracer::start(&cfg.trace)?;
        let (capture, capture_problem) = match &cfg.capture {
            None => (None, None),
            Some(_) if tracer.ports().is_empty() => {
                (None, Some("no server port to capture (pass --port)".to_string()))
            }
            Some(req) => {
                let mut c = CaptureConfig::new(req.iface.clone(), tracer.ports());
                c.write_pcap = req.write_pcap.clone();
                (Some(Capture::start(c)?), None)
            }
        };
        let start_ns = tracer.start_ns();
        meter.begin(start_ns);
        Ok(Self {
            tracer,
            capture,
            capture_problem,
            meter,
            samples: Vec::new(),
            interval_ns: cfg.interval.as_nanos().max(1) as u64,
            last_sample_ns: start_ns,
        })
    }

    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// When the next time-series sample is due (CLOCK_MONOTONIC ns).
    pub fn next_sample_ns(&self) -> u64 {
        self.last_sample_ns + self.interval_ns
    }

    /// Harvests closed connections and takes the time-series sample if one is due. Call it at
    /// least once an interval.
    pub fn poll(&mut self) -> Result<()> {
        self.tracer.poll()?;
        let now = clock::monotonic_ns();
        if now >= self.next_sample_ns() {
            let counts = self.tracer.counts(now)?;
            self.sample(now, counts);
        }
        Ok(())
    }

    fn sample(&mut self, now: u64, counts: Counts) {
        let rss_bytes = self.tracer.rss();
        let wire = self.capture.as_ref().map(Capture::totals);
        self.meter.sample(now);
        self.samples.push(Sample { end_ns: now, counts, rss_bytes, wire });
        self.last_sample_ns = now;
    }

    /// Waits up to `timeout` for a target to exit; true once every target has exited.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        self.tracer.wait(timeout)
    }

    /// Connections closed so far and the threads now, for progress lines.
    pub fn progress(&self) -> Result<(usize, Vec<ThreadRow>)> {
        self.tracer.progress()
    }

    /// Stops everything; the last sample closes the series exactly at the end of the trace.
    pub fn stop(mut self) -> Result<Measurement> {
        let end_ns = clock::monotonic_ns();
        let rss_bytes = self.tracer.rss();
        let ebpf = self.tracer.stop(end_ns)?;
        let wire = self.capture.as_ref().map(Capture::totals);
        self.meter.sample(end_ns);
        self.samples.push(Sample { end_ns, counts: ebpf.final_counts, rss_bytes, wire });
        let capture = self.capture.take().map(Capture::stop).transpose()?;
        Ok(Measurement {
            ebpf,
            capture,
            capture_problem: self.capture_problem,
            power: self.meter.finish(),
            samples: self.samples,
        })
    }
}
