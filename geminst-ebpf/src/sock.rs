//! Socket hooks: per-connection bytes, lifetimes and retransmissions, and the CPU time of traced
//! threads charged to the connection they work for (the rule is in attribution.rs).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    Global,
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use geminst_common::{
    counters,
    sock::{
        CONN_CLOSED, CONN_PASSIVE, CONN_TIDS, CONN_TUPLE_KNOWN, ConnEvent, ConnStats, EVENT_CLOSED,
        EVENTS_BYTES, IPPROTO_TCP, MAX_CONNS, MAX_PORTS, SockConfig, TCP_CLOSE, TCP_CLOSE_WAIT,
        TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_SYN_RECV, TCP_SYN_SENT,
    },
};

use crate::{
    attribution,
    conns::{insert_conn, live_conn, new_conn_id, unindex},
    shared::{DONE, count, current_ids, done, field_bytes, field_u16, field_u32, field_u64, now_ns},
    threads::thread,
};

/// Field offsets and the port filter, set by userspace before loading (a frozen read-only
/// global: see shared::direct).
#[unsafe(no_mangle)]
static SOCK_CONFIG: Global<SockConfig> = Global::new(SockConfig {
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
});

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

/// The 4-tuple and establishment time of recent TCP sockets of any process, so a connection first
/// met through a traced thread's I/O still gets its addresses. Oldest entries make room.
#[map]
static TUPLES: LruHashMap<u64, ConnStats> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Room for the `ConnStats` a state change builds: beside the rest, it would not fit on the
/// stack.
#[map]
static SCRATCH: PerCpuArray<ConnStats> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    done(socket_io(&ctx, true))
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    done(socket_io(&ctx, false))
}

/// A send or receive on a socket, in the context of the thread doing it.
fn socket_io(ctx: &TracePointContext, send: bool) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    let Some(t) = thread(tid) else { return Ok(()) };
    let cfg = SOCK_CONFIG.load();
    if field_u16(ctx, cfg.len_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    let sk = field_u64(ctx, cfg.len_sk)?;
    let ret = field_u32(ctx, cfg.len_ret)? as i32;
    let now = now_ns();
    let mut conn = match attribution::own_open_conn(t, sk).or_else(|| live_conn(sk)) {
        Some(c) => Some(c),
        // A connection met first through data (not through the port filter): record it. Not for
        // an error or end of file, which a closed connection still returns.
        None if ret > 0 => open_conn(sk, now),
        None => None,
    };
    attribution::socket_op(t, sk, conn.as_deref_mut(), ret, now);
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
    done(try_set_state(&ctx))
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
    let cfg = SOCK_CONFIG.load();
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
                let _ = TUPLES.insert(sk, tuple, 0);
            }
        }
        TCP_FIN_WAIT1 | TCP_CLOSE_WAIT => {
            if let Some(c) = live_conn(sk)
                && c.fin_ns == 0
            {
                c.fin_ns = now_ns();
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
                unindex(sk);
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
    let Ok(sk) = field_u64(&ctx, SOCK_CONFIG.load().retransmit_skaddr) else { return DONE };
    if let Some(c) = live_conn(sk) {
        // Softirq context, racing with the owner's sends on another CPU: an atomic add (its
        // result unused, so no fetch is needed). Retransmissions are rare.
        // SAFETY: a valid, aligned u64 in a live map value.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut c.retransmits, 1) };
    }
    DONE
}
