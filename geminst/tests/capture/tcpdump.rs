//! tcpdump as the independent witness: it captures the same traffic into its own file, and a
//! Python script (struct only, no geminst code) counts that file per directed flow.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::util::{self, Guard};

pub const TCPDUMP: &str = "/usr/bin/tcpdump";

/// A running tcpdump writing `file`.
pub struct Tcpdump {
    guard: Guard,
    /// tcpdump's stderr, line by line, read on a thread for as long as tcpdump runs.
    stderr: util::Lines,
    pub file: PathBuf,
}

impl Tcpdump {
    /// Starts `tcpdump -i lo -w FILE -s 0 'tcp port PORT'` and waits until it is listening.
    pub fn start(port: u16, file: &Path) -> Tcpdump {
        Self::start_filter(&format!("tcp port {port}"), file)
    }

    /// Starts tcpdump on `lo` with the capture filter `filter` (e.g. `tcp`, for a server whose port
    /// is chosen later) and waits until it is listening.
    pub fn start_filter(filter: &str, file: &Path) -> Tcpdump {
        let mut guard = util::spawn(Command::new(TCPDUMP).args([
            "-i",
            "lo",
            "-n",
            "-s",
            "0",
            "-w",
            file.to_str().unwrap(),
            "-U",
            "--immediate-mode",
            // A 64 MiB ring (in KiB), so that tcpdump, the witness, drops nothing.
            "-B",
            "65536",
            filter,
        ]));
        let stderr = util::Lines::new(guard.child().stderr.take().unwrap());
        stderr.expect(Duration::from_secs(10), "tcpdump's listening line", |l| l.contains("listening on"));
        // "listening on" is printed once the socket is bound; give the ring a moment anyway.
        std::thread::sleep(Duration::from_millis(300));
        Tcpdump { guard, stderr, file: file.to_path_buf() }
    }

    /// Stops tcpdump with SIGINT (it flushes its file), waits for it, and checks from its report
    /// that the kernel dropped none of its packets (an incomplete witness proves nothing).
    pub fn stop(mut self) -> PathBuf {
        // Let the last packets reach its ring before it stops reading.
        std::thread::sleep(Duration::from_millis(300));
        self.guard.signal(libc::SIGINT);
        let report = self
            .stderr
            .expect(Duration::from_secs(10), "tcpdump's drop report", |l| l.contains("dropped by kernel"));
        let status = self.guard.wait(Duration::from_secs(10));
        assert!(status.success(), "tcpdump failed: {status}");
        assert!(report.trim_start().starts_with("0 packets dropped"), "tcpdump: {report}");
        self.file.clone()
    }
}

/// Counts of one directed flow in tcpdump's file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub packets: u64,
    pub frame_bytes: u64,
    pub ip_header_bytes: u64,
    pub tcp_header_bytes: u64,
    pub tcp_payload_bytes: u64,
    /// Payload bytes below the highest sequence number already seen in the flow (a simpler rule
    /// than geminst's, exact when segments are not reordered, as on loopback).
    pub retransmitted_bytes: u64,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

/// Parses a pcap file (classic format, Ethernet link type, as tcpdump writes on `lo`) with
/// Python's struct module. Keyed by "src:sport>dst:dport".
const PARSE_PCAP: &str = r#"
import json, struct, sys, ipaddress
data = open(sys.argv[1], 'rb').read()
magic_le = struct.unpack('<I', data[:4])[0]
if magic_le in (0xa1b2c3d4, 0xa1b23c4d):
    e = '<'
else:
    e = '>'
linktype = struct.unpack(e + 'I', data[20:24])[0]
assert linktype == 1, linktype
flows = {}
off = 24
while off + 16 <= len(data):
    _sec, _frac, caplen, wirelen = struct.unpack(e + 'IIII', data[off:off + 16])
    off += 16
    pkt = data[off:off + caplen]
    off += caplen
    ethertype = struct.unpack('>H', pkt[12:14])[0]
    ip = pkt[14:]
    if ethertype == 0x0800:
        ihl = (ip[0] & 15) * 4
        total = struct.unpack('>H', ip[2:4])[0]
        proto = ip[9]
        src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
    elif ethertype == 0x86dd:
        ihl = 40
        total = 40 + struct.unpack('>H', ip[4:6])[0]
        proto = ip[6]
        src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
    else:
        continue
    if proto != 6:
        continue
    tcp = ip[ihl:]
    sport, dport = struct.unpack('>HH', tcp[:4])
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    key = '%s:%d>%s:%d' % (src, sport, dst, dport)
    f = flows.setdefault(key, dict(packets=0, frame=0, ip=0, tcp=0, payload=0, retx=0, syn=0, fin=0, rst=0))
    seq = struct.unpack('>I', tcp[4:8])[0]
    payload = total - ihl - doff
    syn = (flags >> 1) & 1
    if 'isn' not in f:
        f['isn'] = seq
        f['high'] = 0
    start = (seq - f['isn']) % (1 << 32) + syn
    if start >= 1 << 31:
        start -= 1 << 32
    end = start + payload
    if payload and not (flags >> 2) & 1:
        f['retx'] += max(0, min(end, f['high']) - start)
        f['high'] = max(f['high'], end)
    f['packets'] += 1
    f['frame'] += wirelen
    f['ip'] += ihl
    f['tcp'] += doff
    f['payload'] += payload
    f['syn'] |= (flags >> 1) & 1
    f['fin'] |= flags & 1
    f['rst'] |= (flags >> 2) & 1
for f in flows.values():
    f.pop('isn', None)
    f.pop('high', None)
print(json.dumps(flows))
"#;

/// Every directed flow in a pcap file, counted by the Python script.
pub fn flows(file: &Path) -> BTreeMap<String, Flow> {
    let out = util::python(PARSE_PCAP, &[file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, f)| {
            let n = |name: &str| f[name].as_u64().unwrap();
            let flow = Flow {
                packets: n("packets"),
                frame_bytes: n("frame"),
                ip_header_bytes: n("ip"),
                tcp_header_bytes: n("tcp"),
                tcp_payload_bytes: n("payload"),
                retransmitted_bytes: n("retx"),
                syn: n("syn") == 1,
                fin: n("fin") == 1,
                rst: n("rst") == 1,
            };
            (k.clone(), flow)
        })
        .collect()
}

/// The key of a directed flow.
pub fn key(src: std::net::SocketAddr, dst: std::net::SocketAddr) -> String {
    format!("{}:{}>{}:{}", src.ip(), src.port(), dst.ip(), dst.port())
}

/// tcpdump's own text rendering of the file (for a failing test's message).
pub fn text(file: &Path) -> String {
    let out = Command::new(TCPDUMP).args(["-r", file.to_str().unwrap(), "-nn", "-tt"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
