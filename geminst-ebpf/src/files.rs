//! File hooks: reads and writes of traced threads on descriptors opened by path (see
//! geminst_common::files), per thread and per connection.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use geminst_common::{
    counters,
    files::{FdKey, FilesOffsets, MAX_OPEN_FDS},
    sched::{SYSCALL_NONE, SYSCALL_READ, SYSCALL_WRITE},
};

use crate::{
    sched::thread,
    shared::{count, current_ids, field_u64},
    sock::current_conn,
};

#[unsafe(no_mangle)]
static FILES_OFFSETS: FilesOffsets = FilesOffsets { enter_fd: 0, exit_ret: 0 };

#[inline(always)]
fn offsets() -> FilesOffsets {
    // SAFETY: a read of a constant global; volatile so the compiler does not fold the zeros above.
    unsafe { core::ptr::read_volatile(&FILES_OFFSETS) }
}

/// Descriptors of traced processes opened by path, open now.
#[map]
pub static OPEN_FDS: HashMap<FdKey, u32> = HashMap::with_max_entries(MAX_OPEN_FDS, 0);

/// Attached to sys_exit_open, _openat, _openat2 and _creat: a new descriptor opened by path.
#[tracepoint]
pub fn file_opened(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if thread(tid).is_none() {
        return 0;
    }
    let Ok(ret) = field_u64(&ctx, offsets().exit_ret) else { return 1 };
    let fd = ret as i64;
    if fd >= 0 && OPEN_FDS.insert(FdKey { tgid, fd: fd as u32 }, 1, 0).is_err() {
        count(counters::FD_MAP_FULL);
    }
    0
}

/// Attached to sys_enter_close.
#[tracepoint]
pub fn file_close(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if thread(tid).is_none() {
        return 0;
    }
    let Ok(fd) = field_u64(&ctx, offsets().enter_fd) else { return 1 };
    let _ = OPEN_FDS.remove(FdKey { tgid, fd: fd as u32 });
    0
}

/// Attached to sys_enter_read, _pread64, _readv and _preadv.
#[tracepoint]
pub fn file_read_enter(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, SYSCALL_READ)
}

/// Attached to sys_enter_write, _pwrite64, _writev and _pwritev.
#[tracepoint]
pub fn file_write_enter(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, SYSCALL_WRITE)
}

/// Attached to the matching sys_exit_* of both kinds.
#[tracepoint]
pub fn file_rw_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    let Some(t) = thread(tid) else { return 0 };
    let kind = t.syscall_kind;
    if kind == SYSCALL_NONE {
        return 0;
    }
    t.syscall_kind = SYSCALL_NONE;
    let Ok(ret) = field_u64(&ctx, offsets().exit_ret) else { return 1 };
    let bytes = ret as i64;
    // SAFETY: only tested for presence.
    if bytes <= 0 || unsafe { OPEN_FDS.get(FdKey { tgid, fd: t.syscall_fd as u32 }) }.is_none() {
        return 0;
    }
    let bytes = bytes as u64;
    let conn = current_conn(t);
    if kind == SYSCALL_READ {
        t.file_read_bytes += bytes;
        if let Some(c) = conn {
            c.file_read_bytes += bytes;
        }
    } else {
        t.file_write_bytes += bytes;
        if let Some(c) = conn {
            c.file_write_bytes += bytes;
        }
    }
    0
}

fn syscall_enter(ctx: &TracePointContext, kind: u32) -> u32 {
    let (_, tid) = current_ids();
    let Some(t) = thread(tid) else { return 0 };
    let Ok(fd) = field_u64(ctx, offsets().enter_fd) else { return 1 };
    t.syscall_fd = fd;
    t.syscall_kind = kind;
    0
}
