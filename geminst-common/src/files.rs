//! File programs: bytes read and written with read(2), write(2) and their vector and positional
//! variants on file descriptors opened by path (open, openat, openat2, creat), per thread and
//! per connection. Sockets, pipes, eventfds and the like are never opened by path, so they are
//! not counted here (the socket programs count socket I/O). Descriptors open when the trace
//! starts are seeded from /proc/PID/fd by userspace.

/// Descriptors opened by path that are open at once, over all traced processes.
pub const MAX_OPEN_FDS: u32 = 65_536;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Field offsets from tracefs (the same for every syscall of a group; checked by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilesOffsets {
    /// `fd` of sys_enter_read, _write, _pread64, _pwrite64, _readv, _writev, _preadv, _pwritev
    /// and _close.
    pub enter_fd: u32,
    /// `ret` of the matching sys_exit_* and of sys_exit_open, _openat, _openat2, _creat.
    pub exit_ret: u32,
}

crate::user_pod!(FdKey, FilesOffsets);
