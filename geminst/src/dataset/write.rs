//! Writing a data set: its Parquet files (each complete under its final name or not at all), and
//! the step that reads the server's log, assembles, describes and writes for `geminst trace` and
//! `geminst run`.

use std::path::Path;

use anyhow::Result;

use super::{
    DataSet, Measurement, RunInfo, Table,
    assemble::{RequestInputs, assemble},
    connections, describe,
    requests::{self, JoinSummary},
    serverlog, threads, timeseries,
};
use crate::{
    capture::{self, ConnWire, certs::CertChain},
    load,
    trace::{ConnRow, StopReason},
};

impl DataSet<'_> {
    /// Writes connections.parquet, threads.parquet, timeseries.parquet and, with requests,
    /// requests.parquet into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.connections_table().write(&dir.join(connections::FILE))?;
        if let Some(t) = self.requests_table() {
            t.write(&dir.join(requests::FILE))?;
        }
        let ebpf = &self.measurement.ebpf;
        threads::table(&ebpf.threads, &self.energy.threads).write(&dir.join(threads::FILE))?;
        timeseries::table(&self.timeseries, &self.energy.timeseries).write(&dir.join(timeseries::FILE))
    }

    /// Every connection the tracer saw, with its captured wire columns, then the connections only
    /// the capture saw.
    pub fn connections_table(&self) -> Table {
        let conns = &self.measurement.ebpf.connections;
        let wires = self.wires();
        let mut ebpf: Vec<Option<&ConnRow>> = conns.iter().map(Some).collect();
        ebpf.extend(self.wire_only.iter().map(|_| None));
        let mut energy: Vec<Option<f64>> = self.energy.connections.iter().copied().map(Some).collect();
        energy.extend(self.wire_only.iter().map(|_| None));
        let mut wire_rows: Vec<Option<&ConnWire>> =
            self.conn_wire.iter().map(|m| m.map(|i| &wires[i])).collect();
        wire_rows.extend(self.wire_only.iter().map(|&i| Some(&wires[i])));
        let mut t = Table::new();
        connections::columns(&mut t, &ebpf, &energy);
        capture::add_wire_columns(&mut t, &wire_rows);
        t
    }

    /// The requests joined with their connections, wire counts and predictions.
    pub fn requests_table(&self) -> Option<Table> {
        let r = self.requests.as_ref()?;
        let wires = self.wires();
        let mut t = Table::new();
        requests::columns(
            &mut t,
            &r.rows,
            r.source,
            &self.measurement.ebpf.connections,
            &self.energy.connections,
        );
        if self.measurement.capture.is_some() {
            let wire_rows: Vec<Option<&ConnWire>> = r.wire.iter().map(|w| w.map(|i| &wires[i])).collect();
            capture::add_wire_columns(&mut t, &wire_rows);
        }
        super::wire::add_predicted_columns(&mut t, &r.predicted);
        Some(t)
    }
}

/// What a run's requests come from, beside its measurement.
#[derive(Debug, Clone, Copy)]
pub struct Requests<'a> {
    /// The server's request log, if it writes one.
    pub server_log: Option<&'a Path>,
    /// The load generator's records, if it drove the server.
    pub clients: &'a [load::Record],
    /// The server's certificate (sizes the handshake in the predictions).
    pub cert: &'a CertChain,
    /// Predict the wire bytes of logged requests (geminst serve's; see `RequestInputs`).
    pub predict: bool,
}

/// Reads the server's log (if any), assembles the data set of `m`, writes its files into `dir` and
/// fills `info` (the caller writes run.json, after adding its own sections). With requests (a log
/// or load records), also the join's counts and per-request means (run.json `join` and
/// `per_request`). A log that cannot be read is reported in `info` and returned as the error,
/// after everything else was written (run.json included).
pub fn write_run(
    dir: &Path,
    info: &mut RunInfo,
    m: &Measurement,
    reason: StopReason,
    duration_s: Option<f64>,
    requests: Requests,
) -> Result<Option<JoinSummary>> {
    let server_log = requests.server_log;
    let mut failure = None;
    let log = match server_log.map(|p| (p, serverlog::read(p))) {
        Some((path, Ok(log))) => {
            for (line, why) in log.skipped.iter().take(5) {
                eprintln!(
                    "geminst: warning: {} line {line} is not a log record ({why}); skipped",
                    path.display()
                );
            }
            info.lost.insert("log.malformed_lines".into(), log.skipped.len() as u64);
            Some(log)
        }
        Some((path, Err(e))) => {
            info.notes.push(format!(
                "the server log {} could not be read ({e:#}); no requests.parquet",
                path.display()
            ));
            failure = Some(crate::exit::BadInput(format!("{e:#}")));
            None
        }
        None => None,
    };
    let inputs = RequestInputs {
        log: log.as_ref(),
        clients: requests.clients,
        cert: requests.cert,
        predict: requests.predict,
    };
    let ds = assemble(m, inputs);
    describe::describe(info, &ds, reason, duration_s)?;
    ds.write(dir)?;
    let join = ds
        .requests
        .as_ref()
        .map(|r| JoinSummary { counts: r.counts.clone(), per_request: r.per_request.clone() });
    if let Some(r) = &join {
        info.section("join", &r.counts)?;
        info.section("per_request", &r.per_request)?;
    }
    match failure {
        Some(e) => {
            info.write(dir)?;
            Err(e.into())
        }
        None => Ok(join),
    }
}
