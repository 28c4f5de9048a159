//! The CPU attribution rule (docs/schema.md, under connections.parquet; summed up in
//! geminst_common::sock): which connection a traced thread is working for, and the charges of
//! its CPU time to it. The socket programs turn a thread to a connection, the scheduler programs
//! charge its slices at their end, and the block and file programs charge their bytes to the
//! connection it works for.

use geminst_common::{
    sched::{THREAD_SEEN_AT_START, ThreadStats},
    sock::{CONN_CLOSED, ConnStats},
};

use crate::conns::conn_by_id;

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

/// The thread's slice starts at `now` (its switch in was seen): its time from now is charged
/// from now.
#[inline(always)]
pub fn start_slice(t: &mut ThreadStats, now: u64) {
    t.charge_from_ns = now;
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
/// A thread with no connection yet charges nothing here (see `socket_op` for its first one).
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

/// The thread's own connection if `sk` is its socket and the connection is still open: found by
/// its id alone (a live connection keeps its socket), one lookup instead of two.
#[inline(always)]
pub fn own_open_conn(t: &ThreadStats, sk: u64) -> Option<&'static mut ConnStats> {
    if t.conn_sk == sk { conn_by_id(t.conn_id).filter(|c| c.flags & CONN_CLOSED == 0) } else { None }
}

/// A socket operation of the thread on socket `sk` that returned `ret`, `conn` the socket's
/// connection if it has an entry: from `now`, the thread works for that connection.
#[inline(always)]
pub fn socket_op(t: &mut ThreadStats, sk: u64, conn: Option<&mut ConnStats>, ret: i32, now: u64) {
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
        if let Some(c) = conn {
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
