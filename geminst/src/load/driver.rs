//! Runs a plan: the open-loop dispatcher, the closed-loop workers, the in-flight cap, stopping
//! early, and collecting the records.

use std::{
    collections::HashMap,
    net::{SocketAddr, ToSocketAddrs},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsConnector;

use super::{
    client::{Client, Target},
    mix::{Picker, phase_seed},
    plan::{End, Load, Plan},
    progress::Progress,
    record::{ErrorKind, Record, RequestError},
    report::{LoadReport, Summary},
    schedule::RateSchedule,
    timer::PreciseTimer,
    tls::{self, ClientTls},
};
use crate::{clock, exit::BadInput, signals};

/// File descriptors kept free of requests, for the runtime, the output and the rest.
const FD_RESERVE: u64 = 64;
/// How often the run checks for a stop request and redraws the progress bar.
const TICK: Duration = Duration::from_millis(50);

/// How to run a plan, apart from the plan itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// Draw a progress bar on stderr (it hides itself when stderr is not a terminal).
    pub progress: bool,
    /// Threads of the client's runtime. One keeps the client's cost lowest and in one place;
    /// more are for rates a single core cannot start on schedule.
    pub threads: usize,
    /// Set to true from elsewhere to stop the run early; what was measured is kept.
    pub stop: Option<Arc<AtomicBool>>,
    /// Also stop on SIGINT/SIGTERM (the caller installs [`crate::signals`] first).
    pub signals: bool,
    /// After a stop, how long in-flight requests may still finish before they are cancelled.
    pub stop_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { progress: false, threads: 1, stop: None, signals: false, stop_grace: Duration::from_secs(2) }
    }
}

/// Runs `plan` to its end (or until stopped) and returns every request's record and the
/// summary. Builds its own tokio runtime: call it from a plain thread, not from async code.
pub fn run(plan: &Plan, options: &Options) -> Result<LoadReport> {
    let prepared = prepare(plan)?;
    if options.threads <= 1 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(drive(prepared, options.clone()))
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()?;
        // The dispatcher runs on a worker, so the requests it spawns start on that worker's
        // queue rather than crossing threads.
        rt.block_on(async { tokio::spawn(drive(prepared, options.clone())).await? })
    }
}

/// Everything checked and resolved before the first request.
struct Prepared {
    plan: Plan,
    targets: Vec<Vec<Arc<Target>>>,
    tls: ClientTls,
    max_in_flight: usize,
}

fn prepare(plan: &Plan) -> Result<Prepared> {
    let requests = plan.requests().map_err(BadInput)?;
    let connect = match &plan.connect {
        Some(a) => Some(resolve(a).map_err(|e| BadInput(format!("--connect {a}: {e}")))?),
        None => None,
    };
    let mut resolved: HashMap<(String, u16), SocketAddr> = HashMap::new();
    let mut targets = Vec::new();
    for phase in &requests {
        let mut list = Vec::new();
        for r in phase {
            let key = (r.url.host().to_string(), r.url.port());
            let addr = match connect {
                Some(a) => a,
                None => match resolved.get(&key) {
                    Some(a) => *a,
                    None => {
                        let a = resolve(&format!("{}:{}", bracket(&key.0), key.1))
                            .map_err(|e| BadInput(format!("{}: {e}", r.url)))?;
                        resolved.insert(key, a);
                        a
                    }
                },
            };
            let server_name = tls::server_name(r.url.host(), plan.tls.sni.as_deref()).map_err(BadInput)?;
            let mut line = r.sent.clone().into_bytes();
            line.extend_from_slice(b"\r\n");
            list.push(Arc::new(Target {
                url: r.sent.as_str().into(),
                line: line.into_boxed_slice(),
                addr,
                server_name,
            }));
        }
        targets.push(list);
    }
    let tls = ClientTls::new(&plan.tls)?;
    let fd_limit = raise_fd_limit();
    let max_in_flight = plan.max_in_flight.min(fd_limit.saturating_sub(FD_RESERVE).max(1) as usize);
    Ok(Prepared { plan: plan.clone(), targets, tls, max_in_flight })
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

/// Resolves `host:port` once, before the run, so name lookups are not part of any request.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let mut addrs = addr.to_socket_addrs().map_err(|e| format!("cannot resolve {addr}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{addr} resolves to no address"))
}

/// Raises the soft limit on open files to the hard limit; returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// State shared by the dispatcher, the workers and the requests.
struct Shared {
    client: Client,
    targets: Vec<Vec<Arc<Target>>>,
    pickers: Vec<Mutex<Picker>>,
    next_seq: AtomicU64,
    records: Mutex<Vec<Record>>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    idle: Notify,
    stop: AtomicBool,
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// The next request number and its URL, drawn together so that the URL of each number is
    /// fixed by the seed.
    fn draw(&self, phase: usize) -> (u64, Arc<Target>) {
        let mut picker = self.pickers[phase].lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.next_seq.fetch_add(1, SeqCst);
        let target = self.targets[phase][picker.pick()].clone();
        (seq, target)
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, SeqCst);
        self.started.fetch_add(1, SeqCst);
    }

    fn finish(&self, rec: Record) {
        self.push(rec);
        if self.in_flight.fetch_sub(1, SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    fn push(&self, rec: Record) {
        self.done.fetch_add(1, SeqCst);
        if !rec.ok() {
            self.failed.fetch_add(1, SeqCst);
        }
        self.records.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
    }

    /// Starts one request in its own task.
    fn spawn(self: &Arc<Self>, seq: u64, phase: usize, scheduled_ns: u64, target: Arc<Target>) {
        self.begin();
        let shared = self.clone();
        tokio::spawn(async move {
            let mut rec = Record::new(seq, phase, target.url.clone(), scheduled_ns, target.addr);
            shared.client.request(&target, &mut rec).await;
            shared.finish(rec);
        });
    }
}

async fn drive(prep: Prepared, options: Options) -> Result<LoadReport> {
    let Prepared { plan, targets, tls, max_in_flight } = prep;
    let (cancel, _) = watch::channel(false);
    let pickers = targets.iter().enumerate().map(|(i, _)| {
        let weights: Vec<f64> = plan.phases[i].mix.iter().map(|m| m.weight).collect();
        Mutex::new(Picker::new(&weights, phase_seed(plan.seed, i)))
    });
    let shared = Arc::new(Shared {
        client: Client { connector: TlsConnector::from(tls.config.clone()), timeout: plan.timeout, cancel },
        pickers: pickers.collect(),
        targets,
        next_seq: AtomicU64::new(0),
        records: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
        max_in_flight,
        idle: Notify::new(),
        stop: AtomicBool::new(false),
        started: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let timer = PreciseTimer::new().context("creating the schedule's timer")?;
    let progress = Progress::new(options.progress, &plan);
    let started_unix_ns = clock::unix_ns();
    let run_start = clock::monotonic_ns();

    let ticker = {
        let shared = shared.clone();
        let progress = progress.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let asked = options.stop.as_ref().is_some_and(|s| s.load(SeqCst))
                    || (options.signals && signals::stop_requested());
                if asked {
                    shared.stop.store(true, SeqCst);
                }
                progress.update(
                    clock::monotonic_ns() - run_start,
                    shared.started.load(SeqCst),
                    shared.done.load(SeqCst),
                    shared.failed.load(SeqCst),
                    shared.in_flight.load(SeqCst),
                );
            }
        })
    };

    let mut origin = run_start;
    let mut phase_starts = Vec::new();
    for (i, phase) in plan.phases.iter().enumerate() {
        if shared.stopping() {
            break;
        }
        phase_starts.push(origin);
        origin = match (phase.load, phase.schedule()) {
            (Load::Rate { .. }, Some(schedule)) => open_loop(&shared, &timer, i, &schedule, origin).await,
            (Load::Concurrency(n), _) => closed_loop(&shared, &timer, i, n, phase.end, origin).await,
            (Load::Rate { .. }, None) => unreachable!("a rate phase always has a schedule"),
        };
    }

    // Requests still in flight end by themselves (each has its timeout); after a stop they get
    // a grace period, then are cancelled and recorded as such.
    let mut grace_end: Option<u64> = None;
    loop {
        let idle = shared.idle.notified();
        if shared.in_flight.load(SeqCst) == 0 {
            break;
        }
        if shared.stopping() {
            let end = *grace_end.get_or_insert(clock::monotonic_ns() + options.stop_grace.as_nanos() as u64);
            if clock::monotonic_ns() >= end {
                shared.client.cancel.send_replace(true);
            }
        }
        let _ = tokio::time::timeout(TICK, idle).await;
    }
    ticker.abort();
    let end_ns = clock::monotonic_ns();
    progress.finish();

    let mut records = std::mem::take(&mut *shared.records.lock().unwrap_or_else(|e| e.into_inner()));
    records.sort_by_key(|r| r.seq);
    let summary = Summary::new(
        &records,
        &plan,
        &phase_starts,
        super::report::RunFacts {
            started_unix_ns,
            start_ns: run_start,
            end_ns,
            stopped_early: shared.stopping(),
            max_in_flight,
            threads: options.threads.max(1),
            server_cert_sha256: tls.first_certificate_sha256(),
        },
    );
    let phase_names = plan.phases.iter().map(|p| p.name.clone()).collect();
    Ok(LoadReport { records, summary, phase_names })
}

/// Sleeps until `at`, waking every tick to see whether the run was stopped; false if it was.
async fn wait_until(shared: &Shared, timer: &PreciseTimer, at: u64) -> bool {
    loop {
        if shared.stopping() {
            return false;
        }
        let now = clock::monotonic_ns();
        if now >= at {
            return true;
        }
        let step = at.min(now + TICK.as_nanos() as u64);
        if timer.sleep_until(step).await.is_err() {
            // A timerfd that cannot be read is a kernel failure; falling back to tokio's
            // millisecond timer keeps the run going, its lateness shows in start_lag_ns.
            tokio::time::sleep(Duration::from_nanos(step.saturating_sub(clock::monotonic_ns()))).await;
        }
    }
}

/// Starts the requests of a rate phase on schedule; returns the phase's end (the next origin).
async fn open_loop(
    shared: &Arc<Shared>,
    timer: &PreciseTimer,
    phase: usize,
    schedule: &RateSchedule,
    origin: u64,
) -> u64 {
    for i in 0..schedule.count() {
        let Some(offset) = schedule.offset_ns(i) else { break };
        let at = origin + offset;
        if !wait_until(shared, timer, at).await {
            return clock::monotonic_ns();
        }
        let (seq, target) = shared.draw(phase);
        let in_flight = shared.in_flight.load(SeqCst);
        if in_flight >= shared.max_in_flight {
            let mut rec = Record::new(seq, phase, target.url.clone(), at, target.addr);
            rec.error = Some(RequestError {
                kind: ErrorKind::Overload,
                message: format!("not started: {in_flight} requests already in flight (max_in_flight)"),
            });
            shared.push(rec);
            continue;
        }
        shared.spawn(seq, phase, at, target);
    }
    let end = origin + schedule.duration_ns();
    if wait_until(shared, timer, end).await { end } else { clock::monotonic_ns() }
}

/// Runs `n` connections back to back until the phase ends; returns the phase's end. A phase
/// with a duration ends on time, its last requests finishing in the background like an open
/// loop's; a phase with a count ends when its last request is done.
async fn closed_loop(
    shared: &Arc<Shared>,
    timer: &PreciseTimer,
    phase: usize,
    n: u32,
    end: End,
    origin: u64,
) -> u64 {
    let deadline = match end {
        End::Duration(d) => Some(origin + d.as_nanos() as u64),
        End::Count(_) => None,
    };
    let left = Arc::new(AtomicU64::new(match end {
        End::Count(c) => c,
        End::Duration(_) => u64::MAX,
    }));
    let workers = Arc::new((AtomicUsize::new(n as usize), Notify::new()));
    for _ in 0..n {
        let (shared, left, workers) = (shared.clone(), left.clone(), workers.clone());
        tokio::spawn(async move {
            loop {
                let now = clock::monotonic_ns();
                if shared.stopping() || deadline.is_some_and(|d| now >= d) {
                    break;
                }
                if left.fetch_update(SeqCst, SeqCst, |l| l.checked_sub(1)).is_err() {
                    break;
                }
                let (seq, target) = shared.draw(phase);
                shared.begin();
                // No schedule to fall behind: the request is due when its connection is free.
                let mut rec = Record::new(seq, phase, target.url.clone(), now, target.addr);
                rec.start_ns = Some(now);
                shared.client.request(&target, &mut rec).await;
                shared.finish(rec);
            }
            if workers.0.fetch_sub(1, SeqCst) == 1 {
                workers.1.notify_waiters();
            }
        });
    }
    match deadline {
        Some(d) => {
            if wait_until(shared, timer, d).await {
                d
            } else {
                clock::monotonic_ns()
            }
        }
        None => {
            loop {
                let notified = workers.1.notified();
                if workers.0.load(SeqCst) == 0 || shared.stopping() {
                    break;
                }
                let _ = tokio::time::timeout(TICK, notified).await;
            }
            clock::monotonic_ns()
        }
    }
}
