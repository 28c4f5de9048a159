//! Block programs: bytes each thread submits to block devices, and request latency.

/// Requests in flight tracked for latency at once.
pub const MAX_INFLIGHT: u32 = 8_192;

/// A request in flight, keyed by (device, first sector).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockKey {
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}

/// Who submitted a request's first bio, and when the request was issued to the device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockInflight {
    pub tid: u32,
    pub _pad: u32,
    pub issued_ns: u64,
}

/// Field offsets from tracefs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOffsets {
    /// block:block_bio_queue.
    pub queue_dev: u32,
    pub queue_sector: u32,
    pub queue_nr_sector: u32,
    pub queue_rwbs: u32,
    pub queue_comm: u32,
    /// block:block_rq_issue and block:block_rq_complete.
    pub issue_dev: u32,
    pub issue_sector: u32,
    pub complete_dev: u32,
    pub complete_sector: u32,
    pub _pad: u32,
}

crate::user_pod!(BlockKey, BlockInflight, BlockOffsets);
