//! Assembling the data set from a measurement: the wire match (capture beside tracer), the log join
//! (requests beside connections), the predicted wire bytes, the time series, and the energy
//! attribution, each its own named step. Nothing here measures or writes; `write.rs` writes.

use super::{
    Measurement,
    attribution::{self, Attribution},
    requests::{self, Joined, PerRequest, Reconciliation},
    serverlog::ServerLog,
    timeseries::{self, TimeRow},
    wire,
};
use crate::capture::{ConnWire, calc::Prediction, certs::CertChain};

/// The requests of a data set: the server's log joined with the traced connections.
#[derive(Debug, Clone)]
pub struct Requests<'a> {
    /// In order of accept.
    pub rows: Vec<Joined<'a>>,
    /// Each row's captured connection (through its traced one), if any.
    pub wire: Vec<Option<usize>>,
    /// Each row's predicted wire bytes, where the calculator models the request.
    pub predicted: Vec<Option<Prediction>>,
    pub counts: Reconciliation,
    /// Means over the joined requests, for the summary and run.json.
    pub per_request: PerRequest,
}

/// Everything the files of a data set hold, before it is written.
#[derive(Debug, Clone)]
pub struct DataSet<'a> {
    pub measurement: &'a Measurement,
    /// For each traced connection, the captured one that matched it.
    pub conn_wire: Vec<Option<usize>>,
    /// The captured connections no traced connection took.
    pub wire_only: Vec<usize>,
    pub requests: Option<Requests<'a>>,
    pub timeseries: Vec<TimeRow>,
    pub energy: Attribution,
}

impl DataSet<'_> {
    /// The captured connections (empty without a capture).
    pub fn wires(&self) -> &[ConnWire] {
        self.measurement.capture.as_ref().map_or(&[], |c| c.connections.as_slice())
    }
}

/// Assembles the data set of `m`, with the requests of the server's `log` when there is one.
/// `cert` sizes the handshake in the predictions.
pub fn assemble<'a>(m: &'a Measurement, log: Option<&'a ServerLog>, cert: &CertChain) -> DataSet<'a> {
    let conns = &m.ebpf.connections;
    let wires = m.capture.as_ref().map_or(&[][..], |c| c.connections.as_slice());
    let conn_wire = wire::match_conns(conns, wires);
    let wire_only = wire::unmatched(&conn_wire, wires.len());
    let mut timeseries = timeseries::rows(m.ebpf.start_ns, &m.samples, &m.power.intervals);
    let energy = attribution::attribute(&m.ebpf, &m.power, &timeseries);
    let requests = log.map(|log| {
        requests::fill_requests_done(&mut timeseries, &log.records);
        let (rows, counts) = requests::join(&log.records, conns);
        let wire: Vec<Option<usize>> = rows.iter().map(|j| j.conn.and_then(|i| conn_wire[i])).collect();
        let predicted =
            rows.iter().zip(&wire).map(|(j, w)| wire::predict(j.log, w.map(|i| &wires[i]), cert)).collect();
        let per_request = PerRequest::of(&rows, conns, &energy.connections);
        Requests { rows, wire, predicted, counts, per_request }
    });
    DataSet { measurement: m, conn_wire, wire_only, requests, timeseries, energy }
}
