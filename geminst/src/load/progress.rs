//! The progress bar on stderr while a run goes: elapsed time, requests, the recent rate, errors.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plan::Plan;

/// Window over which the shown rate is measured.
const RATE_WINDOW_NS: u64 = 1_000_000_000;

/// What the bar's length counts.
#[derive(Clone, Copy)]
enum Unit {
    /// Milliseconds of a plan whose length is known.
    Millis,
    /// Requests of a plan whose count is known.
    Requests,
    /// Neither is known in advance (closed-loop phases of both kinds): a spinner.
    None,
}

/// A cheap handle; clones draw the same bar.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    unit: Unit,
    samples: Arc<Mutex<VecDeque<(u64, u64)>>>,
}

impl Progress {
    pub fn new(enabled: bool, plan: &Plan) -> Self {
        let (len, unit) = match (plan.planned_duration(), plan.planned_count()) {
            (Some(d), _) => (Some(d.as_millis() as u64), Unit::Millis),
            (None, Some(n)) => (Some(n), Unit::Requests),
            (None, None) => (None, Unit::None),
        };
        // indicatif hides a stderr target by itself when stderr is not a terminal.
        let target =
            if enabled { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(len, target);
        let template = match unit {
            Unit::None => "{spinner} {elapsed_precise} {msg}",
            _ => "{elapsed_precise} [{bar:30}] {msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self { bar, unit, samples: Arc::new(Mutex::new(VecDeque::new())) }
    }

    pub fn update(&self, elapsed_ns: u64, started: u64, done: u64, failed: u64, in_flight: usize) {
        if self.bar.is_hidden() {
            return;
        }
        let rate = {
            let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            s.push_back((elapsed_ns, started));
            while s.len() > 2 && s.front().is_some_and(|&(t, _)| elapsed_ns - t > RATE_WINDOW_NS) {
                s.pop_front();
            }
            let &(t0, n0) = s.front().expect("just pushed");
            if elapsed_ns > t0 { (started - n0) as f64 * 1e9 / (elapsed_ns - t0) as f64 } else { 0.0 }
        };
        match self.unit {
            Unit::Millis => self.bar.set_position(elapsed_ns / 1_000_000),
            Unit::Requests => self.bar.set_position(done),
            Unit::None => self.bar.tick(),
        }
        self.bar.set_message(format!(
            "{started} started, {done} done, {rate:.0}/s, {failed} failed, {in_flight} in flight"
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
