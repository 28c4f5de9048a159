//! Socket programs: per-connection bytes, lifetimes, retransmissions and CPU time.
//!
//! Attribution rule: a thread's CPU time from its last socket operation on a connection until its
//! next socket operation on another one (across context switches) is charged to that connection.
//! Gemini carries one request per connection, so a connection's costs are its request's costs.

/// Capacity of `CONNS`: connections alive, and closed ones until userspace harvests them (and of
/// `CONN_IDS`, the index of the live ones by socket).
pub const MAX_CONNS: u32 = 16_384;
/// Ring buffer for connection lifecycle events, in bytes (a power of two pages).
pub const EVENTS_BYTES: u32 = 1 << 22;
/// How long userspace leaves a closed connection in `CONNS` before harvesting it, so the CPU its
/// threads spend after the TCP close (the server finishing and logging the request) still lands.
pub const CLOSED_GRACE_NS: u64 = 1_000_000_000;

/// `ConnEvent::kind`: the connection reached TCP_CLOSE; its entry stays in `CONNS` until
/// userspace harvests it (the event carries the counters so far), while its socket's address,
/// which the kernel may give to a new socket at once, leaves `CONN_IDS`.
pub const EVENT_CLOSED: u32 = 1;
/// Ports a trace can filter on (server side).
pub const MAX_PORTS: usize = 8;

/// IPPROTO_TCP.
pub const IPPROTO_TCP: u16 = 6;
/// AF_INET and AF_INET6.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_SYN_SENT: u32 = 2;
pub const TCP_SYN_RECV: u32 = 3;
pub const TCP_FIN_WAIT1: u32 = 4;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_CLOSE_WAIT: u32 = 8;

/// `ConnStats::flags`: the 4-tuple was recorded from a state change.
pub const CONN_TUPLE_KNOWN: u32 = 1;
/// `ConnStats::flags`: the connection reached TCP_CLOSE during the trace.
pub const CONN_CLOSED: u32 = 2;
/// `ConnStats::flags`: first seen in SYN_RECV: accepted by a listener (server side).
pub const CONN_PASSIVE: u32 = 4;

/// Threads recorded per connection.
pub const CONN_TIDS: usize = 4;

/// One TCP connection, keyed by its id in `CONNS` (`CONN_IDS` finds a live one by its socket's
/// kernel address). Ports in host order; addresses as on the wire (IPv4 in the first 4 bytes).
/// Times CLOCK_MONOTONIC ns, 0 = not seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Unique within a trace, from 1.
    pub conn_id: u64,
    pub sk: u64,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    pub flags: u32,
    /// The traced process that did socket I/O on it first; 0 if none did.
    pub tgid: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// When the entry was made (first state change or first I/O).
    pub created_ns: u64,
    pub established_ns: u64,
    /// The first FIN: ours (FIN_WAIT1) or the peer's (CLOSE_WAIT).
    pub fin_ns: u64,
    pub closed_ns: u64,
    pub first_io_ns: u64,
    pub last_io_ns: u64,
    pub send_bytes: u64,
    pub recv_bytes: u64,
    pub sends: u64,
    pub recvs: u64,
    pub retransmits: u64,
    pub cpu_ns: u64,
    pub file_read_bytes: u64,
    pub file_write_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub tids: [u32; CONN_TIDS],
}

/// Offsets of the socket tracepoints' fields (from tracefs) and the port filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockConfig {
    /// sock:sock_send_length and sock:sock_recv_length (the same layout, checked by userspace).
    pub len_sk: u32,
    pub len_protocol: u32,
    pub len_ret: u32,
    /// sock:inet_sock_set_state.
    pub state_skaddr: u32,
    pub state_newstate: u32,
    pub state_sport: u32,
    pub state_dport: u32,
    pub state_family: u32,
    pub state_protocol: u32,
    pub state_saddr: u32,
    pub state_daddr: u32,
    pub state_saddr_v6: u32,
    pub state_daddr_v6: u32,
    /// tcp:tcp_retransmit_skb.
    pub retransmit_skaddr: u32,
    /// Number of ports in `ports`; 0 means connections are recorded only once a traced thread
    /// does I/O on them (their 4-tuple then comes from the state changes of every TCP socket).
    pub nports: u32,
    /// Local (server) ports whose connections are recorded from their first state change.
    pub ports: [u16; MAX_PORTS],
}

/// A connection lifecycle event, through the `CONN_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    pub kind: u32,
    pub _pad: u32,
    pub conn: ConnStats,
}

crate::user_pod!(ConnStats, SockConfig, ConnEvent);
