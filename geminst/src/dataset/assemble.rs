//! Assembling the data set from a measurement: the wire match (capture beside tracer), the log join
//! (requests beside connections), the predicted wire bytes, the time series, and the energy
//! attribution, each its own named step. Nothing here measures or writes; `write.rs` writes.

use super::{
    Measurement,
    attribution::{self, Attribution},
    requests::{self, Joined, PerRequest, Reconciliation, RowSource},
    serverlog::ServerLog,
    timeseries::{self, TimeRow},
    wire,
};
use crate::{
    capture::{ConnWire, calc::Prediction, certs::CertChain},
    load,
};

/// The requests of a data set: the server's log joined with the traced connections.
#[derive(Debug, Clone)]
pub struct Requests<'a> {
    /// In order of accept (log rows) or of the load's schedule (load rows).
    pub rows: Vec<Joined<'a>>,
    pub source: RowSource,
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

/// What the requests of a data set are made from, beside the measurement.
#[derive(Debug, Clone, Copy)]
pub struct RequestInputs<'a> {
    /// The server's request log, if it writes one.
    pub log: Option<&'a ServerLog>,
    /// The load generator's records of what it sent (empty when not driven by geminst load).
    pub clients: &'a [load::Record],
    /// The server's certificate, which sizes the handshake in the predictions.
    pub cert: &'a CertChain,
    /// Predict each logged request's wire bytes: the calculator models geminst serve's way of
    /// writing records, so only for it.
    pub predict: bool,
}

/// Assembles the data set of `m`, with requests when `inputs` has a log or load records.
pub fn assemble<'a>(m: &'a Measurement, inputs: RequestInputs<'a>) -> DataSet<'a> {
    let conns = &m.ebpf.connections;
    let wires = m.capture.as_ref().map_or(&[][..], |c| c.connections.as_slice());
    let conn_wire = wire::match_conns(conns, wires);
    let wire_only = wire::unmatched(&conn_wire, wires.len());
    let mut timeseries = timeseries::rows(m.ebpf.start_ns, &m.samples, &m.power.intervals);
    let energy = attribution::attribute(&m.ebpf, &m.power, &timeseries);
    let requests = (inputs.log.is_some() || !inputs.clients.is_empty()).then(|| {
        let log = inputs.log.map(|l| l.records.as_slice());
        let (rows, counts) = requests::join(log, inputs.clients, conns, &m.ebpf.ports);
        requests::fill_requests_done(&mut timeseries, &rows);
        let wire: Vec<Option<usize>> = rows.iter().map(|j| j.conn.and_then(|i| conn_wire[i])).collect();
        let predicted = rows
            .iter()
            .zip(&wire)
            .map(|(j, w)| {
                let log = j.log.filter(|_| inputs.predict)?;
                wire::predict(log, w.map(|i| &wires[i]), inputs.cert)
            })
            .collect();
        let per_request = PerRequest::of(&rows, conns, &energy.connections);
        let source = if log.is_some() { RowSource::Log } else { RowSource::Load };
        Requests { rows, source, wire, predicted, counts, per_request }
    });
    DataSet { measurement: m, conn_wire, wire_only, requests, timeseries, energy }
}
