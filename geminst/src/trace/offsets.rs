//! The field offsets the eBPF programs read, from this kernel's tracefs format files (and one from
//! its BTF), recorded for run.json.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use geminst_common::{
    block::BlockOffsets,
    files::FilesOffsets,
    sched::SchedOffsets,
    sock::{MAX_PORTS, SockConfig},
};

use super::{btf::Btf, tracefs::Format};

/// Syscalls whose `fd` the file programs read on entry.
pub const READ_SYSCALLS: [&str; 4] = ["read", "pread64", "readv", "preadv"];
pub const WRITE_SYSCALLS: [&str; 4] = ["write", "pwrite64", "writev", "pwritev"];
/// Syscalls that open a descriptor by path (`ret` on exit). Not every architecture has all.
pub const OPEN_SYSCALLS: [&str; 4] = ["open", "openat", "openat2", "creat"];

/// Offsets handed to the programs.
#[derive(Debug, Clone)]
pub struct Offsets {
    pub sched: SchedOffsets,
    pub sock: SockConfig,
    pub block: BlockOffsets,
    pub files: FilesOffsets,
    /// The open syscalls this kernel has tracepoints for.
    pub open_syscalls: Vec<&'static str>,
    /// Why the kernel's BTF could not give `task_struct.se.sum_exec_runtime`, if it could not.
    pub btf_problem: Option<String>,
    /// Every offset used, by `tracepoint.field`, for run.json.
    pub used: BTreeMap<String, u32>,
}

/// Reads fields and remembers each one used.
struct Recorder {
    used: BTreeMap<String, u32>,
}

impl Recorder {
    fn field(&mut self, format: &Format, name: &str, sizes: &[u32]) -> Result<u32> {
        let f = format.field_sized(name, sizes)?;
        self.used.insert(format!("{}.{name}", format.name), f.offset);
        Ok(f.offset)
    }

    /// The same field of several tracepoints, which must sit at the same offset in all of them
    /// (one program serves them all).
    fn common(&mut self, group: &str, names: &[&str], field: &str, sizes: &[u32]) -> Result<u32> {
        let mut offset = None;
        for name in names {
            let f = self.field(&Format::read(group, name)?, field, sizes)?;
            match offset {
                None => offset = Some(f),
                Some(o) if o == f => {}
                Some(o) => bail!("{group}:{name} has `{field}` at {f}, unlike {group}:{} (at {o})", names[0]),
            }
        }
        Ok(offset.expect("at least one tracepoint"))
    }
}

impl Offsets {
    /// Reads every format file the programs depend on; the first tracepoint or field this kernel
    /// lacks is named in the error. `ports` are the server ports whose connections are recorded
    /// from their first state change.
    pub fn read(ports: &[u16]) -> Result<Self> {
        if ports.len() > MAX_PORTS {
            bail!("at most {MAX_PORTS} ports can be traced at once, not {}", ports.len());
        }
        let mut r = Recorder { used: BTreeMap::new() };

        let switch = Format::read("sched", "sched_switch")?;
        let newtask = Format::read("task", "task_newtask")?;
        // Checked for existence only: the exit program reads no field.
        Format::read("sched", "sched_process_exit")?;
        let prev_state = switch.field_sized("prev_state", &[4, 8])?;
        r.used.insert("sched:sched_switch.prev_state".into(), prev_state.offset);
        let mut sched = SchedOffsets {
            switch_prev_state: prev_state.offset,
            switch_prev_state_size: prev_state.size,
            switch_next_pid: r.field(&switch, "next_pid", &[4])?,
            wakeup_pid: r.field(&Format::read("sched", "sched_wakeup")?, "pid", &[4])?,
            wakeup_new_pid: r.field(&Format::read("sched", "sched_wakeup_new")?, "pid", &[4])?,
            newtask_pid: r.field(&newtask, "pid", &[4])?,
            newtask_clone_flags: r.field(&newtask, "clone_flags", &[8])?,
            task_sum_exec_runtime: 0,
        };
        // Optional: without it, a slice whose switch in the kernel did not report is lost (and
        // counted) instead of measured.
        let btf_problem =
            match Btf::vmlinux().and_then(|btf| btf.offset_of("task_struct", &["se", "sum_exec_runtime"])) {
                Ok(offset) => {
                    sched.task_sum_exec_runtime = offset;
                    r.used.insert("btf:task_struct.se.sum_exec_runtime".into(), offset);
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            };

        let lengths = ["sock_send_length", "sock_recv_length"];
        let state = Format::read("sock", "inet_sock_set_state")?;
        let mut sock = SockConfig {
            len_sk: r.common("sock", &lengths, "sk", &[8])?,
            len_protocol: r.common("sock", &lengths, "protocol", &[2])?,
            len_ret: r.common("sock", &lengths, "ret", &[4])?,
            state_skaddr: r.field(&state, "skaddr", &[8])?,
            state_newstate: r.field(&state, "newstate", &[4])?,
            state_sport: r.field(&state, "sport", &[2])?,
            state_dport: r.field(&state, "dport", &[2])?,
            state_family: r.field(&state, "family", &[2])?,
            state_protocol: r.field(&state, "protocol", &[2])?,
            state_saddr: r.field(&state, "saddr", &[4])?,
            state_daddr: r.field(&state, "daddr", &[4])?,
            state_saddr_v6: r.field(&state, "saddr_v6", &[16])?,
            state_daddr_v6: r.field(&state, "daddr_v6", &[16])?,
            retransmit_skaddr: r.field(&Format::read("tcp", "tcp_retransmit_skb")?, "skaddr", &[8])?,
            nports: ports.len() as u32,
            ports: [0; MAX_PORTS],
        };
        sock.ports[..ports.len()].copy_from_slice(ports);

        let queue = Format::read("block", "block_bio_queue")?;
        let issue = Format::read("block", "block_rq_issue")?;
        let complete = Format::read("block", "block_rq_complete")?;
        let block = BlockOffsets {
            queue_dev: r.field(&queue, "dev", &[4])?,
            queue_sector: r.field(&queue, "sector", &[8])?,
            queue_nr_sector: r.field(&queue, "nr_sector", &[4])?,
            queue_rwbs: r.field(&queue, "rwbs", &[8, 10])?,
            queue_comm: r.field(&queue, "comm", &[16])?,
            issue_dev: r.field(&issue, "dev", &[4])?,
            issue_sector: r.field(&issue, "sector", &[8])?,
            complete_dev: r.field(&complete, "dev", &[4])?,
            complete_sector: r.field(&complete, "sector", &[8])?,
            _pad: 0,
        };

        let open_syscalls: Vec<&'static str> = OPEN_SYSCALLS
            .into_iter()
            .filter(|s| Format::read("syscalls", &format!("sys_exit_{s}")).is_ok())
            .collect();
        if !open_syscalls.contains(&"openat") {
            bail!(
                "this kernel has no tracepoint syscalls:sys_exit_openat (built without CONFIG_FTRACE_SYSCALLS?)"
            );
        }
        let enters: Vec<String> = READ_SYSCALLS
            .iter()
            .chain(&WRITE_SYSCALLS)
            .chain(&["close"])
            .map(|s| format!("sys_enter_{s}"))
            .collect();
        let exits: Vec<String> = READ_SYSCALLS
            .iter()
            .chain(&WRITE_SYSCALLS)
            .chain(&open_syscalls)
            .map(|s| format!("sys_exit_{s}"))
            .collect();
        let enters: Vec<&str> = enters.iter().map(String::as_str).collect();
        let exits: Vec<&str> = exits.iter().map(String::as_str).collect();
        let files = FilesOffsets {
            enter_fd: r.common("syscalls", &enters, "fd", &[8])?,
            exit_ret: r.common("syscalls", &exits, "ret", &[8])?,
        };

        Ok(Self { sched, sock, block, files, open_syscalls, btf_problem, used: r.used })
    }
}
