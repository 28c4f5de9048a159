//! Socket hooks: per-connection bytes, lifetimes and retransmissions, and the CPU time of traced
//! threads charged to the connection they work for (rule in geminst_common::sock).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use geminst_common::{
    counters,
    sched::{THREAD_SEEN_AT_START, ThreadStats},
    sock::{
        CONN_CLOSED, CONN_PASSIVE, CONN_TIDS, CONN_TUPLE_KNOWN, ConnEvent, ConnStats, EVENT_CLOSED,
        EVENTS_BYTES, IPPROTO_TCP, MAX_CONNS, MAX_PORTS, SockConfig, TCP_CLOSE, TCP_CLOSE_WAIT,
        TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_SYN_RECV, TCP_SYN_SENT,
    },
};

use crate::{
    sched::thread,
    shared::{count, current_ids, field_bytes, field_u16, field_u32, field_u64, now_ns},
};

/// Field offsets and the port filter, set by userspace before loading.
#[unsafe(no_mangle)]
static SOCK_CONFIG: SockConfig = SockConfig {
    len_sk: 0,
    len_protocol: 0,
    len_ret: 0,
    state_skaddr: 0,
    state_newstate: 0,
    state_sport: 0,
    state_dport: 0,
    state_family: 0,
    state_protocol: 0,
    state_saddr: 0,
    state_daddr: 0,
    state_saddr_v6: 0,
    state_daddr_v6: 0,
    retransmit_skaddr: 0,
    nports: 0,
    ports: [0; MAX_PORTS],
};

#[inline(always)]
fn config() -> SockConfig {
    // SAFETY: a read of a constant global; volatile so the compiler does not fold the zeros above.
    unsafe { core::ptr::read_volatile(&SOCK_CONFIG) }
}

/// Connections, keyed by their id: live ones, and closed ones until userspace harvests them
/// (geminst_common::sock::CLOSED_GRACE_NS after their close), so the CPU their threads still
/// spend on them lands. An entry never moves: threads charge it by its id.
#[map]
pub static CONNS: HashMap<u64, ConnStats> = HashMap::with_max_entries(MAX_CONNS, 0);

/// The live connections' ids by their socket's kernel address. A socket leaves at TCP_CLOSE: the
/// kernel may give its address to a new socket at once, even while the threads of the closed
/// connection are still finishing it.
#[map]
static CONN_IDS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_CONNS, 0);

/// Lifecycle events for userspace (geminst_common::sock::EVENT_*). Drops are counted
/// (`conn_event_dropped`); a dropped close only delays the harvest to the end of the trace.
#[map]
static CONN_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

fn emit(kind: u32, conn: &ConnStats) {
    let event = ConnEvent { kind, _pad: 0, conn: *conn };
    if CONN_EVENTS.output::<ConnEvent>(&event, 0).is_err() {
        count(counters::CONN_EVENT_DROPPED);
    }
}

/// The entry of connection `conn_id`, live or closed (until userspace harvests it).
#[inline(always)]
fn conn_by_id(conn_id: u64) -> Option<&'static mut ConnStats> {
    // SAFETY: a live map value.
    CONNS.get_ptr_mut(conn_id).map(|c| unsafe { &mut *c })
}

/// The entry of the live connection on a socket.
#[inline(always)]
fn live_conn(sk: u64) -> Option<&'static mut ConnStats> {
    // SAFETY: a live map value, read once.
    let id = unsafe { *CONN_IDS.get_ptr(sk)? };
    conn_by_id(id)
}

/// Records a new connection (`c.conn_id` from `new_conn_id`, `c.sk` its socket) in both maps.
#[inline(always)]
fn insert_conn(c: &ConnStats) -> Option<&'static mut ConnStats> {
    let (id, sk) = (c.conn_id, c.sk);
    if CONNS.insert(id, c, 0).is_err() {
        count(counters::CONN_MAP_FULL);
        return None;
    }
    if CONN_IDS.insert(sk, id, 0).is_err() {
        let _ = CONNS.remove(id);
        count(counters::CONN_MAP_FULL);
        return None;
    }
    conn_by_id(id)
}

/// The 4-tuple and establishment time of recent TCP sockets of any process, so a connection first
/// met through a traced thread's I/O still gets its addresses. Oldest entries make room.
#[map]
static TUPLES: LruHashMap<u64, ConnStats> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Room for the `ConnStats` a state change builds: beside the rest, it would not fit on the
/// stack.
#[map]
static SCRATCH: PerCpuArray<ConnStats> = PerCpuArray::with_max_entries(1, 0);

/// The last connection id handed out.
#[map]
static LAST_CONN_ID: Array<u64> = Array::with_max_entries(1, 0);

fn new_conn_id() -> u64 {
    match LAST_CONN_ID.get_ptr_mut(0) {
        // SeqCst: LLVM 22 drops the fetch of a relaxed add whose result is used (see sched.rs).
        // SAFETY: a valid, aligned u64 in a map; every CPU allocates through this instruction.
        Some(p) => (unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, 1) }) + 1,
        None => 0,
    }
}

/// Adds `amount` of a thread's CPU time to connection `conn_id` (live, or closed and not yet
/// harvested).
#[inline(always)]
fn add_cpu(t: &mut ThreadStats, conn_id: u64, amount: u64) {
    if conn_id == 0 || amount == 0 {
        return;
    }
    if let Some(c) = conn_by_id(conn_id) {
        c.cpu_ns += amount;
        t.conn_cpu_ns += amount;
    }
}

/// Adds `amount`, CPU time of an interval that ends `now`, to connection `conn_id`, less the part
/// after the connection closed (TCP_CLOSE): a thread's time after that (logging, exiting, or
/// accepting the next connection) is not the closed connection's. The charge itself may come
/// later than the close (charges are made at switch outs), so it is cut, not refused.
#[inline(always)]
fn add_cpu_until(t: &mut ThreadStats, conn_id: u64, amount: u64, now: u64) {
    if conn_id == 0 || amount == 0 {
        return;
    }
    if let Some(c) = conn_by_id(conn_id) {
        let after_close = if c.closed_ns != 0 { now.saturating_sub(c.closed_ns) } else { 0 };
        let amount = amount.saturating_sub(after_close);
        c.cpu_ns += amount;
        t.conn_cpu_ns += amount;
    }
}

/// Charges the end of the thread's slice, at its switch out: `slice` is the slice's on-CPU time
/// and `wall` its wall-clock length (0 if its switch in was not seen). The time since
/// `charge_from_ns` goes to the thread's connection, scaled by slice/wall so stolen time is not
/// charged; all of the slice if nothing marked a point in it (its switch in was not seen, and no
/// socket operation turned the thread to another connection). Never more than the slice leaves
/// after what was charged from it before (`slice_charged_ns`). When the slice's switch in was not
/// seen and the thread turned to another connection in it, the rest, the slice's start, goes to
/// the connection before (`head_conn_id`).
///
/// A thread with no connection yet charges nothing here (see `socket_io` for its first one).
#[inline(always)]
pub fn charge_slice(t: &mut ThreadStats, now: u64, slice: u64, wall: u64) {
    let room = slice.saturating_sub(t.slice_charged_ns);
    let tail = if t.charge_from_ns == 0 {
        room
    } else {
        let part = now.saturating_sub(t.charge_from_ns);
        let part = if wall > slice {
            // part * slice / wall in 16-bit fixed point: no overflow for slices up to hours.
            let ratio = (slice << 16) / wall;
            (part * ratio) >> 16
        } else {
            part
        };
        part.min(room)
    };
    let (conn_id, head_conn_id) = (t.conn_id, t.head_conn_id);
    add_cpu_until(t, conn_id, tail, now);
    add_cpu(t, head_conn_id, room - tail);
    t.charge_from_ns = 0;
    t.slice_charged_ns = 0;
    t.head_conn_id = 0;
}

/// Charges the thread's time since `charge_from_ns` to its connection, mid-slice, when a socket
/// operation turns it to another one. If the slice's switch in was not seen (`charge_from_ns` is
/// 0), how long the slice has run is known only at its end: the connection becomes the slice's
/// `head_conn_id`, charged then.
#[inline(always)]
fn charge_until(t: &mut ThreadStats, now: u64) {
    if t.charge_from_ns != 0 {
        let part = now.saturating_sub(t.charge_from_ns);
        let conn_id = t.conn_id;
        add_cpu_until(t, conn_id, part, now);
        t.slice_charged_ns += part;
    } else {
        t.head_conn_id = t.conn_id;
    }
    t.charge_from_ns = now;
}

/// The connection a traced thread's current CPU time belongs to, for the block and file
/// programs.
#[inline(always)]
pub fn current_conn(t: &ThreadStats) -> Option<&'static mut ConnStats> {
    if t.conn_id == 0 {
        return None;
    }
    conn_by_id(t.conn_id)
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    match socket_io(&ctx, true) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    match socket_io(&ctx, false) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// A send or receive on a socket, in the context of the thread doing it.
fn socket_io(ctx: &TracePointContext, send: bool) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    let Some(t) = thread(tid) else { return Ok(()) };
    let cfg = config();
    if field_u16(ctx, cfg.len_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    let sk = field_u64(ctx, cfg.len_sk)?;
    let ret = field_u32(ctx, cfg.len_ret)? as i32;
    let now = now_ns();
    // The thread's own connection, found by its id alone while it is open (a live connection
    // keeps its socket); else by the socket.
    let own =
        if t.conn_sk == sk { conn_by_id(t.conn_id).filter(|c| c.flags & CONN_CLOSED == 0) } else { None };
    let mut conn = match own.or_else(|| live_conn(sk)) {
        Some(c) => Some(c),
        // A connection met first through data (not through the port filter): record it. Not for
        // an error or end of file, which a closed connection still returns.
        None if ret > 0 => open_conn(sk, now),
        None => None,
    };
    let conn_id = match conn.as_ref() {
        Some(c) => c.conn_id,
        // An error or end of file on the socket of the thread's connection, which has closed: the
        // thread is still working for it.
        None if ret <= 0 && t.conn_sk == sk => t.conn_id,
        None => 0,
    };
    if t.conn_sk == 0 && t.flags & THREAD_SEEN_AT_START == 0 {
        // A thread created during the trace meets its first connection: everything it did so far
        // was for it (servers that start a thread per connection). Its past slices are charged
        // now, the current one whole at its end.
        if let Some(c) = conn.as_deref_mut() {
            c.cpu_ns += t.oncpu_ns;
            t.conn_cpu_ns += t.oncpu_ns;
        }
        t.conn_sk = sk;
        t.conn_id = conn_id;
    } else if t.conn_sk != sk || t.conn_id != conn_id {
        // The thread turns to another connection: what it did until now was for the last one.
        charge_until(t, now);
        t.conn_sk = sk;
        t.conn_id = conn_id;
    }
    if ret <= 0 {
        return Ok(());
    }
    let bytes = ret as u64;
    if send {
        t.sock_send_bytes += bytes;
    } else {
        t.sock_recv_bytes += bytes;
    }
    if let Some(c) = conn {
        if send {
            c.send_bytes += bytes;
            c.sends += 1;
        } else {
            c.recv_bytes += bytes;
            c.recvs += 1;
        }
        if c.first_io_ns == 0 {
            c.first_io_ns = now;
        }
        c.last_io_ns = now;
        if c.tgid == 0 {
            c.tgid = tgid;
        }
        note_tid(c, tid);
    }
    Ok(())
}

/// Remembers a thread that worked on the connection (the first `CONN_TIDS` of them).
#[inline(always)]
fn note_tid(c: &mut ConnStats, tid: u32) {
    for i in 0..CONN_TIDS {
        if c.tids[i] == tid {
            return;
        }
        if c.tids[i] == 0 {
            c.tids[i] = tid;
            return;
        }
    }
}

/// Makes an entry for a connection not yet in `CONNS`, with its 4-tuple if `TUPLES` has it.
fn open_conn(sk: u64, now: u64) -> Option<&'static mut ConnStats> {
    let mut c = match TUPLES.get_ptr(sk) {
        // SAFETY: a live map value, copied out.
        Some(t) => unsafe { *t },
        None => ConnStats::default(),
    };
    c.conn_id = new_conn_id();
    c.sk = sk;
    c.created_ns = now;
    insert_conn(&c)
}

#[inline(always)]
fn port_wanted(cfg: &SockConfig, port: u16) -> bool {
    let mut i = 0;
    while i < MAX_PORTS {
        if (i as u32) < cfg.nports && cfg.ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_set_state(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// The 4-tuple of a state change's socket.
#[inline(always)]
fn read_tuple(
    ctx: &TracePointContext,
    cfg: &SockConfig,
    local_port: u16,
    passive: bool,
) -> Result<ConnStats, i64> {
    let mut tuple = ConnStats {
        family: field_u16(ctx, cfg.state_family)?,
        local_port,
        remote_port: field_u16(ctx, cfg.state_dport)?,
        flags: CONN_TUPLE_KNOWN | if passive { CONN_PASSIVE } else { 0 },
        ..ConnStats::default()
    };
    if tuple.family == geminst_common::sock::AF_INET6 {
        tuple.local_addr = field_bytes::<16>(ctx, cfg.state_saddr_v6)?;
        tuple.remote_addr = field_bytes::<16>(ctx, cfg.state_daddr_v6)?;
    } else {
        tuple.local_addr[..4].copy_from_slice(&field_u32(ctx, cfg.state_saddr)?.to_ne_bytes());
        tuple.remote_addr[..4].copy_from_slice(&field_u32(ctx, cfg.state_daddr)?.to_ne_bytes());
    }
    Ok(tuple)
}

/// A TCP state change, often in softirq context (so no process filter here). It fires for every
/// TCP socket of the machine (the load generator's too), so the common case, a socket that is
/// not ours, must return early: after one lookup, and the port test when server ports are known.
fn try_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config();
    let new = field_u32(ctx, cfg.state_newstate)?;
    // The states that mark something: opening, established, first FIN, closed.
    if !matches!(
        new,
        TCP_SYN_SENT | TCP_SYN_RECV | TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_CLOSE_WAIT | TCP_CLOSE
    ) {
        return Ok(());
    }
    if field_u16(ctx, cfg.state_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    let sk = field_u64(ctx, cfg.state_skaddr)?;
    match new {
        TCP_SYN_SENT | TCP_SYN_RECV | TCP_ESTABLISHED => {
            let local_port = field_u16(ctx, cfg.state_sport)?;
            let wanted = port_wanted(&cfg, local_port);
            if !wanted && cfg.nports != 0 {
                // Server ports are known and this is not one: not ours. (A connection a traced
                // thread opens elsewhere is met at its first byte, after these states, and is
                // recorded without its tuple.)
                return Ok(());
            }
            if let Some(c) = live_conn(sk) {
                if c.flags & CONN_TUPLE_KNOWN == 0 {
                    let t = read_tuple(ctx, &cfg, local_port, new == TCP_SYN_RECV)?;
                    c.family = t.family;
                    c.local_port = t.local_port;
                    c.remote_port = t.remote_port;
                    c.local_addr = t.local_addr;
                    c.remote_addr = t.remote_addr;
                    c.flags |= t.flags;
                }
                if new == TCP_ESTABLISHED && c.established_ns == 0 {
                    c.established_ns = now_ns();
                }
                return Ok(());
            }
            let now = now_ns();
            let Some(tuple) = SCRATCH.get_ptr_mut(0) else { return Ok(()) };
            // SAFETY: this CPU's scratch entry, used by this program run only.
            let tuple = unsafe { &mut *tuple };
            *tuple = read_tuple(ctx, &cfg, local_port, new == TCP_SYN_RECV)?;
            if new == TCP_ESTABLISHED {
                tuple.established_ns = now;
            }
            if wanted {
                tuple.conn_id = new_conn_id();
                tuple.sk = sk;
                tuple.created_ns = now;
                let _ = insert_conn(tuple);
            } else {
                // No server port known: learn every socket's tuple, in case a traced thread uses it.
                if let Some(old) = TUPLES.get_ptr(sk) {
                    // SAFETY: a live map value, read once.
                    let old = unsafe { *old };
                    if old.flags & CONN_PASSIVE != 0 {
                        tuple.flags |= CONN_PASSIVE;
                    }
                    if tuple.established_ns == 0 {
                        tuple.established_ns = old.established_ns;
                    }
                }
                let _ = TUPLES.insert(sk, &*tuple, 0);
            }
        }
        TCP_FIN_WAIT1 | TCP_CLOSE_WAIT => {
            if let Some(c) = live_conn(sk) {
                if c.fin_ns == 0 {
                    c.fin_ns = now_ns();
                }
            }
        }
        _ => {
            // TCP_CLOSE.
            if cfg.nports == 0 {
                let _ = TUPLES.remove(sk);
            }
            if let Some(c) = live_conn(sk) {
                // The entry stays, so the CPU its threads still spend on it (finishing, logging)
                // lands; userspace harvests it after a grace period. The socket's address leaves
                // the index: a new socket may get it at once.
                let _ = CONN_IDS.remove(sk);
                if c.flags & CONN_CLOSED == 0 {
                    c.closed_ns = now_ns();
                    c.flags |= CONN_CLOSED;
                    emit(EVENT_CLOSED, c);
                }
            }
        }
    }
    Ok(())
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let Ok(sk) = field_u64(&ctx, config().retransmit_skaddr) else { return 1 };
    if let Some(c) = live_conn(sk) {
        // Softirq context, racing with the owner's sends on another CPU: an atomic add (its
        // result unused, so no fetch is needed). Retransmissions are rare.
        // SAFETY: a valid, aligned u64 in a live map value.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*c).retransmits, 1) };
    }
    0
}
