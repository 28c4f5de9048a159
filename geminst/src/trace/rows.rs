//! Turning the kernel's records into the data set's rows.

use std::net::{Ipv4Addr, Ipv6Addr};

use geminst_common::{
    sched::{
        THREAD_EXITED, THREAD_RUNTIME_KNOWN, THREAD_SEEN_AT_START, THREAD_START_PROVISIONAL, ThreadStats,
    },
    sock::{AF_INET, AF_INET6, CONN_CLOSED, CONN_PASSIVE, CONN_TUPLE_KNOWN, ConnStats},
};

use super::measurement::{ConnRow, ThreadRow};
use super::procfs;

/// A thread's row as of `now_ns`, its current slice (if it is on a CPU) counted up to then.
/// The name is the one the kernel had at its creation or exit; `Tracer::stop` puts in the
/// current names of live threads.
pub fn thread_row(s: &ThreadStats, now_ns: u64) -> ThreadRow {
    let tid = s.tid;
    let exited = s.flags & THREAD_EXITED != 0;
    // The kernel's runtime growth since the thread's last switch out: zero for a thread off
    // CPU, the running slice (as of the scheduler's last update) otherwise.
    let growth = (!exited && s.flags & THREAD_RUNTIME_KNOWN != 0)
        .then(|| procfs::runtime_ns(s.tgid, tid))
        .flatten()
        .map(|rt| rt.saturating_sub(s.last_out_runtime_ns));
    let mut unseen = s.unseen_switch_ins;
    let running = if exited {
        0
    } else if s.switched_in_ns != 0 {
        let measured = now_ns.saturating_sub(s.switched_in_ns);
        match growth {
            // Registered while asleep and not run since: no slice at all.
            Some(k) if s.flags & THREAD_START_PROVISIONAL != 0 => measured.min(k),
            _ => measured,
        }
    } else {
        // On a CPU since a switch in that was not reported, or off CPU (growth 0).
        let k = growth.unwrap_or(0);
        unseen += u64::from(k > 0);
        k
    };
    ThreadRow {
        tgid: s.tgid,
        tid,
        comm: c_string(&s.comm),
        oncpu_ns: s.oncpu_ns + running,
        voluntary_switches: s.voluntary_switches,
        involuntary_switches: s.involuntary_switches,
        wait_ns: s.wait_ns,
        first_seen_ns: s.first_seen_ns,
        last_seen_ns: if running > 0 { now_ns } else { s.last_seen_ns },
        seen_at_start: s.flags & THREAD_SEEN_AT_START != 0,
        exit_ns: exited.then_some(s.exit_ns),
        unseen_switch_ins: unseen,
        stolen_ns: s.stolen_ns,
        conn_cpu_ns: s.conn_cpu_ns,
        sock_send_bytes: s.sock_send_bytes,
        sock_recv_bytes: s.sock_recv_bytes,
        file_read_bytes: s.file_read_bytes,
        file_write_bytes: s.file_write_bytes,
        block_read_bytes: s.block_read_bytes,
        block_write_bytes: s.block_write_bytes,
        block_ios: s.block_ios,
        block_io_ns: s.block_io_ns,
    }
}

fn ip(family: u16, addr: &[u8; 16]) -> Option<String> {
    match family {
        AF_INET => Some(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string()),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            // A v4-mapped address is the IPv4 peer of a dual-stack socket: print it as IPv4, as
            // the server's log and the capture do.
            Some(v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string()))
        }
        _ => None,
    }
}

fn nonzero(ns: u64) -> Option<u64> {
    (ns != 0).then_some(ns)
}

pub fn conn_row(c: &ConnStats) -> ConnRow {
    let known = c.flags & CONN_TUPLE_KNOWN != 0;
    let tids: Vec<String> = c.tids.iter().filter(|&&t| t != 0).map(|t| t.to_string()).collect();
    ConnRow {
        conn_id: c.conn_id,
        tgid: (c.tgid != 0).then_some(c.tgid),
        local_ip: if known { ip(c.family, &c.local_addr) } else { None },
        local_port: known.then_some(c.local_port),
        remote_ip: if known { ip(c.family, &c.remote_addr) } else { None },
        remote_port: known.then_some(c.remote_port),
        passive: c.flags & CONN_PASSIVE != 0,
        created_ns: c.created_ns,
        established_ns: nonzero(c.established_ns),
        fin_ns: nonzero(c.fin_ns),
        closed_ns: if c.flags & CONN_CLOSED != 0 { Some(c.closed_ns) } else { None },
        first_io_ns: nonzero(c.first_io_ns),
        last_io_ns: nonzero(c.last_io_ns),
        sock_send_bytes: c.send_bytes,
        sock_recv_bytes: c.recv_bytes,
        sock_sends: c.sends,
        sock_recvs: c.recvs,
        retransmits: c.retransmits,
        cpu_ns: c.cpu_ns,
        file_read_bytes: c.file_read_bytes,
        file_write_bytes: c.file_write_bytes,
        block_read_bytes: c.block_read_bytes,
        block_write_bytes: c.block_write_bytes,
        tids: tids.join(" "),
    }
}

/// A NUL-padded kernel string.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_rows_print_addresses_like_the_log() {
        let mut c = ConnStats {
            conn_id: 7,
            family: AF_INET,
            local_port: 1965,
            remote_port: 40000,
            flags: CONN_TUPLE_KNOWN | CONN_PASSIVE,
            ..ConnStats::default()
        };
        c.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        c.remote_addr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let r = conn_row(&c);
        assert_eq!(r.local_addr().as_deref(), Some("127.0.0.1:1965"));
        assert_eq!(r.remote_addr().as_deref(), Some("127.0.0.2:40000"));
        assert!(r.passive && r.closed_ns.is_none());

        c.family = AF_INET6;
        c.local_addr = Ipv6Addr::LOCALHOST.octets();
        c.remote_addr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        let r = conn_row(&c);
        assert_eq!(r.local_addr().as_deref(), Some("[::1]:1965"));
        assert_eq!(r.remote_addr().as_deref(), Some("10.0.0.1:40000"));

        c.flags = 0;
        assert_eq!(conn_row(&c).local_addr(), None, "no tuple without a state change");
    }
}
