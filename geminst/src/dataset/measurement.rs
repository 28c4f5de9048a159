//! What a measuring session hands the data set, piece by piece: what the eBPF programs measured,
//! what the packet capture counted, the power meter's readings, and the time series' samples.

use super::timeseries::Sample;
use crate::{capture::CaptureOutput, energy::PowerLog, trace::EbpfMeasurement};

#[derive(Debug, Clone)]
pub struct Measurement {
    pub ebpf: EbpfMeasurement,
    /// The packet capture's counts, if there was one.
    pub capture: Option<CaptureOutput>,
    /// Why there was no capture, if one was asked for.
    pub capture_problem: Option<String>,
    /// The power meter's readings, one interval per sample.
    pub power: PowerLog,
    /// The time series' samples, in order; the first interval starts at `ebpf.start_ns`.
    pub samples: Vec<Sample>,
}
