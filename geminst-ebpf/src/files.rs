//! File hooks: reads and writes of traced threads on descriptors opened by path (see
//! geminst_common::files), per thread and per connection.

use aya_ebpf::{
    Global,
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
    attribution::current_conn,
    shared::{DONE, count, current_ids, field_u64},
    threads::thread,
};

/// Field offsets, set by userspace from tracefs format files before loading (a frozen read-only
/// global: see shared::direct).
#[unsafe(no_mangle)]
static FILES_OFFSETS: Global<FilesOffsets> = Global::new(FilesOffsets { enter_fd: 0, exit_ret: 0 });

/// Descriptors of traced processes opened by path, open now.
#[map]
pub static OPEN_FDS: HashMap<FdKey, u32> = HashMap::with_max_entries(MAX_OPEN_FDS, 0);

/// Attached to sys_exit_open, _openat, _openat2 and _creat: a new descriptor opened by path.
#[tracepoint]
pub fn file_opened(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if thread(tid).is_none() {
        return DONE;
    }
    let Ok(ret) = field_u64(&ctx, FILES_OFFSETS.load().exit_ret) else { return DONE };
    let fd = ret as i64;
    if fd >= 0 && OPEN_FDS.insert(FdKey { tgid, fd: fd as u32 }, 1, 0).is_err() {
        count(counters::FD_MAP_FULL);
    }
    DONE
}

/// Attached to sys_enter_close.
#[tracepoint]
pub fn file_close(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if thread(tid).is_none() {
        return DONE;
    }
    let Ok(fd) = field_u64(&ctx, FILES_OFFSETS.load().enter_fd) else { return DONE };
    let _ = OPEN_FDS.remove(FdKey { tgid, fd: fd as u32 });
    DONE
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
    let Some(t) = thread(tid) else { return DONE };
    let kind = t.syscall_kind;
    if kind == SYSCALL_NONE {
        return DONE;
    }
    t.syscall_kind = SYSCALL_NONE;
    let Ok(ret) = field_u64(&ctx, FILES_OFFSETS.load().exit_ret) else { return DONE };
    let bytes = ret as i64;
    // SAFETY: only tested for presence.
    if bytes <= 0 || unsafe { OPEN_FDS.get(FdKey { tgid, fd: t.syscall_fd as u32 }) }.is_none() {
        return DONE;
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
    DONE
}

fn syscall_enter(ctx: &TracePointContext, kind: u32) -> u32 {
    let (_, tid) = current_ids();
    let Some(t) = thread(tid) else { return DONE };
    let Ok(fd) = field_u64(ctx, FILES_OFFSETS.load().enter_fd) else { return DONE };
    t.syscall_fd = fd;
    t.syscall_kind = kind;
    DONE
}
