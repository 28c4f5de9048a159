//! The connection table: every connection's counters by its id, and the live ones' ids by their
//! socket. The socket programs make and close the entries; every program charges them.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use geminst_common::{
    counters,
    sock::{ConnStats, MAX_CONNS},
};

use crate::shared::count;

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

/// The last connection id handed out.
#[map]
static LAST_CONN_ID: Array<u64> = Array::with_max_entries(1, 0);

/// A new connection id, from 1 (0 if the counter cannot be reached, which it always can).
pub fn new_conn_id() -> u64 {
    match LAST_CONN_ID.get_ptr_mut(0) {
        // SeqCst: LLVM 22 drops the fetch of a relaxed add whose result is used (see
        // threads::take_slot).
        // SAFETY: a valid, aligned u64 in a map; every CPU allocates through this instruction.
        Some(p) => (unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, 1) }) + 1,
        None => 0,
    }
}

/// The entry of connection `conn_id`, live or closed (until userspace harvests it).
#[inline(always)]
pub fn conn_by_id(conn_id: u64) -> Option<&'static mut ConnStats> {
    // SAFETY: a live map value.
    CONNS.get_ptr_mut(conn_id).map(|c| unsafe { &mut *c })
}

/// The entry of the live connection on a socket.
#[inline(always)]
pub fn live_conn(sk: u64) -> Option<&'static mut ConnStats> {
    // SAFETY: a live map value, read once.
    let id = unsafe { *CONN_IDS.get_ptr(sk)? };
    conn_by_id(id)
}

/// Records a new connection (`c.conn_id` from `new_conn_id`, `c.sk` its socket) in both maps.
#[inline(always)]
pub fn insert_conn(c: &ConnStats) -> Option<&'static mut ConnStats> {
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

/// Takes a closed connection's socket out of the index (its entry stays in `CONNS`).
#[inline(always)]
pub fn unindex(sk: u64) {
    let _ = CONN_IDS.remove(sk);
}
