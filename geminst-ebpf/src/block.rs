//! Block hooks: bytes each traced thread submits (at bio submission, in the submitter's context)
//! and the latency of the requests its I/O starts. Writes queued by kernel workers are
//! asynchronous writeback and are totalled as such, not attributed.

use aya_ebpf::{
    Global,
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use geminst_common::{
    block::{BlockInflight, BlockKey, BlockOffsets, MAX_INFLIGHT},
    counters,
};

use crate::{
    attribution::current_conn,
    shared::{DONE, count, current_ids, done, field_bytes, field_u8, field_u32, field_u64, now_ns},
    threads::thread,
};

/// Sectors are 512 bytes in the block layer whatever the device's own sector size.
const SECTOR_BYTES: u64 = 512;

/// Field offsets, set by userspace from tracefs format files before loading (a frozen read-only
/// global: see shared::direct).
#[unsafe(no_mangle)]
static BLOCK_OFFSETS: Global<BlockOffsets> = Global::new(BlockOffsets {
    queue_dev: 0,
    queue_sector: 0,
    queue_nr_sector: 0,
    queue_rwbs: 0,
    queue_comm: 0,
    issue_dev: 0,
    issue_sector: 0,
    complete_dev: 0,
    complete_sector: 0,
    _pad: 0,
});

/// Requests whose first bio a traced thread submitted, until they complete. Bios merged into a
/// request leave their own keys behind, so the oldest entries make room (a lost latency sample,
/// never lost bytes: those are counted at submission).
#[map]
static INFLIGHT: LruHashMap<BlockKey, BlockInflight> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Machine-wide write bytes queued by kernel workers while tracing: asynchronous writeback, whose
/// pages were dirtied earlier by whichever process wrote them, so it cannot be attributed here.
#[map]
pub static WRITEBACK_BYTES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn block_bio_queue(ctx: TracePointContext) -> u32 {
    done(try_bio_queue(&ctx))
}

fn try_bio_queue(ctx: &TracePointContext) -> Result<(), i64> {
    let off = BLOCK_OFFSETS.load();
    // rwbs: an optional 'F' (preflush), then R(ead), W(rite), D(iscard), E(rase) or N(one).
    let mut op = field_u8(ctx, off.queue_rwbs)?;
    if op == b'F' {
        op = field_u8(ctx, off.queue_rwbs + 1)?;
    }
    if op != b'R' && op != b'W' {
        return Ok(());
    }
    let (_, tid) = current_ids();
    let Some(t) = thread(tid) else {
        // The kernel's flusher threads are named kworker/...; what they write is writeback.
        if op == b'W'
            && &field_bytes::<8>(ctx, off.queue_comm)? == b"kworker/"
            && let Some(slot) = WRITEBACK_BYTES.get_ptr_mut(0)
        {
            let bytes = u64::from(field_u32(ctx, off.queue_nr_sector)?) * SECTOR_BYTES;
            // SAFETY: a per-CPU slot, touched only by programs on this CPU, one at a time.
            unsafe { *slot += bytes };
        }
        return Ok(());
    };
    let bytes = u64::from(field_u32(ctx, off.queue_nr_sector)?) * SECTOR_BYTES;
    let conn = current_conn(t);
    if op == b'R' {
        t.block_read_bytes += bytes;
        if let Some(c) = conn {
            c.block_read_bytes += bytes;
        }
    } else {
        t.block_write_bytes += bytes;
        if let Some(c) = conn {
            c.block_write_bytes += bytes;
        }
    }
    let key =
        BlockKey { dev: field_u32(ctx, off.queue_dev)?, _pad: 0, sector: field_u64(ctx, off.queue_sector)? };
    // An LRU map makes room by evicting its oldest entry, so an insert fails only when the kernel
    // finds no entry to give (htab_lru_map_update_elem, kernel/bpf/hashtab.c).
    if INFLIGHT.insert(key, BlockInflight { tid, _pad: 0, issued_ns: 0 }, 0).is_err() {
        count(counters::BLOCK_INFLIGHT_FULL);
    }
    Ok(())
}

#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    let off = BLOCK_OFFSETS.load();
    let (Ok(dev), Ok(sector)) = (field_u32(&ctx, off.issue_dev), field_u64(&ctx, off.issue_sector)) else {
        return DONE;
    };
    if let Some(f) = INFLIGHT.get_ptr_mut(BlockKey { dev, _pad: 0, sector }) {
        // SAFETY: a live map value.
        unsafe { (*f).issued_ns = now_ns() };
    }
    DONE
}

#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let off = BLOCK_OFFSETS.load();
    let (Ok(dev), Ok(sector)) = (field_u32(&ctx, off.complete_dev), field_u64(&ctx, off.complete_sector))
    else {
        return DONE;
    };
    let key = BlockKey { dev, _pad: 0, sector };
    let Some(f) = INFLIGHT.get_ptr(key) else { return DONE };
    // SAFETY: a live map value, copied before its removal.
    let f = unsafe { *f };
    let _ = INFLIGHT.remove(key);
    if f.issued_ns != 0
        && let Some(t) = thread(f.tid)
    {
        t.block_ios += 1;
        t.block_io_ns += now_ns().saturating_sub(f.issued_ns);
    }
    DONE
}
