#![no_std]
//! Types shared by the kernel programs and userspace: event records, map keys, limits.
//! Every struct is `#[repr(C)]` with explicit padding so both sides agree byte for byte.

/// Hard cap of payload bytes copied per syscall (power of two; the runtime setting is below it).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Default payload prefix captured per syscall: a whole typical HTTP header block.
pub const DEFAULT_CAPTURE_BYTES: u32 = 4096;
/// iovec entries walked per readv/writev/recvmsg/sendmsg.
pub const MAX_IOV: u32 = 64;
/// Ring buffer fill (bytes) at which the kernel wakes userspace; below it userspace polls.
pub const DEFAULT_WAKEUP_BYTES: u32 = 256 * 1024;

pub const EVENT_DATA: u8 = 1;
pub const EVENT_CONN: u8 = 2;

pub const DIR_EGRESS: u8 = 0;
pub const DIR_INGRESS: u8 = 1;

pub const ROLE_UNKNOWN: u8 = 0;
pub const ROLE_CLIENT: u8 = 1;
pub const ROLE_SERVER: u8 = 2;
/// A SAMPLE_ALLOW value that is not a role: userspace parses nothing on this connection, stop
/// capturing it.
pub const SAMPLE_IGNORE: u8 = 0xff;

/// Userspace's verdict on one connection, in SAMPLE_ALLOW under its socket address. It names
/// the connection it is for: it arrives up to a poll interval late, by when that socket may be
/// closed and its memory reused by a new one, which must not take the old one's verdict
/// (a stale SAMPLE_IGNORE stopped the capture of one of pgbench's four connections).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleVerdict {
    pub conn_id: u64,
    /// A role (`ROLE_*`: open to sampling) or `SAMPLE_IGNORE`.
    pub verdict: u8,
    pub _pad: [u8; 7],
}

impl SampleVerdict {
    pub const fn new(conn_id: u64, verdict: u8) -> Self {
        Self {
            conn_id,
            verdict,
            _pad: [0; 7],
        }
    }
}

pub const CONN_OP_CONNECT: u8 = 1;
pub const CONN_OP_ACCEPT: u8 = 2;
pub const CONN_OP_CLOSE: u8 = 3;
/// First seen through data: it existed before the agent started (or its open was missed).
pub const CONN_OP_DISCOVERED: u8 = 4;

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Filter by pid or executable name (decidable before the socket is looked at).
pub const FILTER_BY_PROCESS: u32 = 1;
/// Filter by local/remote port (needs the socket).
pub const FILTER_BY_PORT: u32 = 2;

/// Data event flag: the payload is a prefix of what the syscall transferred.
pub const FLAG_TRUNCATED: u8 = 1;
/// Exchanges of this connection were sampled out since its previous data event: whatever the
/// parser holds half-done belongs to them.
pub const FLAG_AFTER_SKIP: u8 = 2;
/// Kernel-internal (cleared before output): the first request of a connection not yet open to
/// sampling; its exit checks the payload for a protocol whose exchanges stand alone.
pub const FLAG_PEEK_PROTOCOL: u8 = 0x80;

/// Syscall that produced a data event (for the debugging view).
/// x86_64 `struct pt_regs` offsets of the first three syscall arguments (di, si, dx): the
/// exit-only read programs load them at these constant offsets (the verifier needs constants),
/// and userspace attaches those programs only when the kernel's BTF agrees.
pub const PT_REGS_ARGS: [u32; 3] = [112, 104, 96];
/// x86_64 `struct pt_regs` offset of `orig_ax` (the syscall number, kept through the syscall).
pub const PT_REGS_ORIG_AX: u32 = 120;
/// x86_64 `struct pt_regs` offset of `cs`: the code segment the syscall came from.
pub const PT_REGS_CS: u32 = 136;
/// x86_64 user code segment of 64-bit code (`__USER_CS`). 32-bit processes (`__USER32_CS`)
/// number their syscalls differently; the per-syscall tracepoints skip them, and so does the
/// dispatch.
pub const USER_CS_64: u64 = 0x33;

/// Slots of the syscall number -> action table of the `raw_syscalls` dispatch.
pub const SYSCALL_TABLE: u32 = 1024;

/// What the `raw_syscalls` dispatch does with a syscall number (0: nothing). The data syscalls
/// use their [`syscall`] code; the others follow.
pub mod action {
    pub use super::syscall::{
        READ, READV, RECVFROM, RECVMSG, SENDFILE, SENDMSG, SENDTO, WRITE, WRITEV,
    };
    pub const NONE: u8 = 0;
    pub const CONNECT: u8 = 16;
    /// accept and accept4.
    pub const ACCEPT: u8 = 17;
    pub const CLOSE: u8 = 18;
    /// dup2, dup3, close_range, unshare, io_uring_enter: fds may be replaced without a close().
    pub const FD_TABLE_CHANGED: u8 = 19;
}

pub mod syscall {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const RECVFROM: u8 = 3;
    pub const SENDTO: u8 = 4;
    pub const RECVMSG: u8 = 5;
    pub const SENDMSG: u8 = 6;
    pub const READV: u8 = 7;
    pub const WRITEV: u8 = 8;
    /// sendfile: bytes go from a file to the socket without passing through user memory, so
    /// the event carries the byte count only (parsers skip them as body).
    pub const SENDFILE: u8 = 9;
    /// Seen by the socket tracepoints inside a syscall that names no buffer the agent can read
    /// (io_uring, sendmmsg/recvmmsg, splice): the byte count only.
    pub const OTHER: u8 = 10;
}

/// Indices into the per-CPU counter array.
pub mod counter {
    /// Events lost because the ring buffer was full.
    pub const DROPPED_EVENTS: u32 = 0;
    /// Data events whose payload was cut to the capture size.
    pub const TRUNCATED: u32 = 1;
    /// Connections first seen through data (opened before the agent or open missed).
    pub const UNKNOWN_CONNS: u32 = 2;
    pub const DATA_EVENTS: u32 = 3;
    pub const CONN_EVENTS: u32 = 4;
    /// Payload copies from user memory that failed.
    pub const READ_ERRORS: u32 = 5;
    /// Syscalls on sockets skipped by the process filter.
    pub const FILTERED: u32 = 6;
    /// Exchanges (a turn to the request direction) on connections open to sampling.
    pub const EXCHANGES: u32 = 7;
    /// Of those, exchanges not captured because the capture budget was exceeded.
    pub const SAMPLED_OUT: u32 = 8;
    /// Connections opened to sampling by the kernel from their first request's bytes.
    pub const OPENED_IN_KERNEL: u32 = 9;
    /// Data calls lost because another thread sharing their in-flight slot (thread ids 32768
    /// apart) entered a data syscall before they returned.
    pub const CALL_COLLISIONS: u32 = 10;
    /// Userspace verdicts found under a socket address that a newer connection now uses
    /// (discarded, not applied).
    pub const STALE_VERDICTS: u32 = 11;
    /// Exchanges the hash would have kept, skipped because their CPU had already kept its
    /// cap for the current window (also counted in `SAMPLED_OUT`).
    pub const CAPPED: u32 = 12;
    pub const COUNT: u32 = 13;
}

/// Sampling's kernel-side cap: each CPU keeps at most `SAMPLING[SAMPLING_CAP]` exchanges per
/// window of 2^`SAMPLE_WINDOW_SHIFT` ns (about 8.4 ms), whatever the threshold says.
pub const SAMPLE_WINDOW_SHIFT: u32 = 23;
/// Index in the `SAMPLING` map of the skip threshold.
pub const SAMPLING_THRESHOLD: u32 = 0;
/// Index in the `SAMPLING` map of the cap (exchanges kept per CPU per window; 0: none).
pub const SAMPLING_CAP: u32 = 1;

/// One CPU's count of exchanges kept in the current sampling window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleWindow {
    /// The window's number (monotonic ns >> `SAMPLE_WINDOW_SHIFT`).
    pub window: u64,
    pub kept: u64,
}

/// Header of a data event; `captured` payload bytes follow it in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DataHeader {
    pub kind: u8,
    pub direction: u8,
    pub syscall: u8,
    pub flags: u8,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    /// What the syscall returned: the full byte count transferred.
    pub bytes: u64,
    pub captured: u32,
    /// The kernel's number of the connection end's current exchange (turns to the request
    /// direction, sampled out or not): after a skip, userspace numbers the next exchange as
    /// the other end does.
    pub exchange: u32,
}

/// Per-CPU scratch used to assemble a data event (too big for the BPF stack). The payload is
/// twice the cap so variable offsets can be masked for the verifier.
#[repr(C)]
pub struct DataEvent {
    pub hdr: DataHeader,
    pub payload: [u8; MAX_PAYLOAD * 2],
}

/// Connection lifecycle event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnEvent {
    pub kind: u8,
    pub op: u8,
    pub role: u8,
    pub _pad0: u8,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub ts_ns: u64,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad1: u16,
    /// IPv4 in the first 4 bytes, IPv6 in all 16.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Unix-domain sockets: the socket inode (matches /proc/net/unix and /proc/PID/fd).
    pub inode: u64,
    /// The task's comm: names short-lived processes that are gone before /proc is read.
    pub comm: [u8; 16],
    /// Key of the connection in the kernel's CONNS map (the `struct sock` address with the
    /// syscall hooks, the socket cookie with the socket tracepoints), so userspace can tell the
    /// kernel to stop capturing a connection it cannot parse.
    pub sock: u64,
}

/// Kernel-side state of one socket. With the syscall hooks its identity (id, role, selection)
/// is kept by the socket's `struct sock` address, and the per-call part (turns, sampling) lives
/// with each process's fd that uses the socket, so a data syscall finds both with one lookup.
/// With the socket tracepoints the one entry, keyed by the socket's cookie, holds both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    pub conn_id: u64,
    /// The same for both ends of a connection (from its port pair), so that both ends of a
    /// local connection make the same sampling decision for the same exchange.
    pub pair_hash: u32,
    /// Exchanges seen so far (turns to the request direction).
    pub exchanges: u32,
    pub role: u8,
    /// 1 when the process filter selected this connection.
    pub selected: u8,
    pub family: u16,
    /// Direction of the last data syscall (DIR_*), 0xff before the first.
    pub last_dir: u8,
    /// 1 once userspace has recognised a protocol whose exchanges are independent (HTTP/1,
    /// Redis, PostgreSQL, MySQL): only then may whole exchanges be sampled out. Never for
    /// HTTP/2, whose header compression needs every frame.
    pub sample_ok: u8,
    /// 1 while the current exchange is sampled out.
    pub skipping: u8,
    /// 1 when an exchange was skipped since the last captured syscall.
    pub after_skip: u8,
    /// Calls since SAMPLE_ALLOW was last consulted on a connection not yet open to sampling:
    /// consulted at every turn, and at least every 16 calls on one-way streams.
    pub since_allow_check: u8,
    /// 1 once userspace was told of the connection (a connection event). The socket
    /// tracepoints learn a TCP connection's role when it is established, in whatever context
    /// the kernel then runs, and tell userspace at the first data call of its process.
    pub announced: u8,
    pub _pad: [u8; 6],
    /// The socket's key ([`DataHeader`]'s `sock`), kept so a call need not ask for it again.
    pub sock: u64,
}

/// Whether a connection's first request starts like a protocol whose exchanges stand alone
/// and whose request direction is plain from its first bytes: an HTTP/1 request line (not
/// CONNECT, whose tunnel is opaque, nor the HTTP/2 preface `PRI *`) or a Redis command array.
/// The kernel then opens the connection to sampling at once; other protocols are opened by
/// userspace once it has recognised them.
#[inline(always)]
pub fn standalone_exchanges(b: &[u8; 8]) -> bool {
    match [b[0], b[1], b[2], b[3]] {
        [b'G', b'E', b'T', b' '] | [b'P', b'U', b'T', b' '] => true,
        [b'P', b'O', b'S', b'T'] | [b'H', b'E', b'A', b'D'] => b[4] == b' ',
        [b'D', b'E', b'L', b'E'] => b[4] == b'T' && b[5] == b'E' && b[6] == b' ',
        [b'P', b'A', b'T', b'C'] => b[4] == b'H' && b[5] == b' ',
        [b'O', b'P', b'T', b'I'] => b[4] == b'O' && b[5] == b'N' && b[6] == b'S' && b[7] == b' ',
        // "*<1-3 digits>\r\n$": a RESP array of bulk strings.
        [b'*', d, b'\r', b'\n'] => d.is_ascii_digit() && b[4] == b'$',
        [b'*', d, e, b'\r'] => {
            d.is_ascii_digit() && e.is_ascii_digit() && b[4] == b'\n' && b[5] == b'$'
        }
        [b'*', d, e, f] => {
            d.is_ascii_digit()
                && e.is_ascii_digit()
                && f.is_ascii_digit()
                && b[4] == b'\r'
                && b[5] == b'\n'
                && b[6] == b'$'
        }
        _ => false,
    }
}

/// Whether the kernel opens a connection end to sampling from its first request's first 8
/// bytes: a protocol whose exchanges stand alone ([`standalone_exchanges`]), except on a
/// Redis server's end. Userspace ignores a database's server end (its client's spans tell the
/// call), and an end the kernel opened itself would never consult userspace's verdict again,
/// so it would stay captured for nothing.
#[inline(always)]
pub fn opens_sampling(b: &[u8; 8], server_end: bool) -> bool {
    standalone_exchanges(b) && !(server_end && b[0] == b'*')
}

/// No data syscall seen yet on a connection.
pub const DIR_NONE: u8 = 0xff;

/// Arguments of a data syscall in flight, from entry to exit, keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ActiveCall {
    pub sock: u64,
    /// User buffer, or the iovec array for vectored calls.
    pub buf: u64,
    pub conn_id: u64,
    pub ts_enter_ns: u64,
    /// 0 for a flat buffer, else the iovec count.
    pub iovcnt: u32,
    pub fd: i32,
    pub syscall: u8,
    pub direction: u8,
    /// FLAG_* bits decided at entry (FLAG_AFTER_SKIP).
    pub flags: u8,
    pub _pad: u8,
    /// [`DataHeader::exchange`] at entry.
    pub exchange: u32,
}

/// Arguments of connect/accept in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingConn {
    pub fd: i32,
    pub op: u8,
    pub _pad: [u8; 3],
}

/// Offsets of kernel struct fields, read from BTF by userspace at load time (no CO-RE in Rust
/// eBPF), so the programs walk task -> files -> fdtable -> file -> socket -> sock on any kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_family: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `struct sock` sk_type (0 where BTF lacks it: the socket tracepoints are not used).
    pub sk_type: u32,
    /// `struct unix_sock` addr and peer (0 where BTF lacks them): with the socket
    /// tracepoints, a Unix stream socket bound to an address is the server end (an accepted
    /// socket takes its listener's address) and one whose peer is bound is the client.
    pub unix_addr: u32,
    pub unix_peer: u32,
    /// Tracepoint record fields (from tracefs `format` files): `task:task_newtask` pid and
    /// clone_flags, `sock:inet_sock_set_state` skaddr and newstate.
    pub tp_newtask_pid: u32,
    pub tp_newtask_clone_flags: u32,
    pub tp_sock_state_skaddr: u32,
    pub tp_sock_state_newstate: u32,
    /// 1 once userspace filled the struct; programs do nothing until then.
    pub valid: u32,
}

/// Runtime settings, set as a program global at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Payload prefix captured per syscall (<= MAX_PAYLOAD).
    pub capture_bytes: u32,
    /// Bit set of FILTER_BY_*: which filter maps select what is traced (0: everything).
    pub filter_enabled: u32,
    /// The agent's own process, never traced.
    pub agent_pid: u32,
    pub wakeup_bytes: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            capture_bytes: DEFAULT_CAPTURE_BYTES,
            filter_enabled: 0,
            agent_pid: 0,
            wakeup_bytes: DEFAULT_WAKEUP_BYTES,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, repr(C), no padding holes left implicit.
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for CaptureConfig {}
    unsafe impl aya::Pod for ConnState {}
    unsafe impl aya::Pod for SampleVerdict {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::{opens_sampling, standalone_exchanges};

    /// Every case's first 8 bytes must give `expected`.
    fn assert_all(cases: &[&[u8]], expected: bool) {
        for c in cases {
            let mut head = [0u8; 8];
            head.copy_from_slice(&c[..8]);
            assert_eq!(
                standalone_exchanges(&head),
                expected,
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    /// A Redis server's end is left to userspace's verdict (it ignores database server ends);
    /// its client's end, and either end of HTTP, open at once.
    #[test]
    fn a_redis_server_end_is_not_opened_to_sampling() {
        assert!(opens_sampling(b"*1\r\n$4\r\n", false));
        assert!(!opens_sampling(b"*1\r\n$4\r\n", true));
        assert!(opens_sampling(b"GET / HT", true));
        assert!(opens_sampling(b"GET / HT", false));
        assert!(!opens_sampling(b"\x00\x00\x00\x08\x04\xd2\x16/", false));
    }

    #[test]
    fn recognises_first_requests_whose_exchanges_stand_alone() {
        assert_all(
            &[
                b"GET / HTTP/1.1\r\n",
                b"POST /a HTTP/1.1\r\n",
                b"PUT /a HTTP/1.1",
                b"HEAD / HTTP/1.0",
                b"DELETE /x HTTP/1.1",
                b"PATCH /x HTTP/1.1",
                b"OPTIONS * HTTP/1.1",
                b"*1\r\n$4\r\nPING\r\n",
                b"*12\r\n$4\r\nMSET",
                b"*100\r\n$4\r\n",
            ],
            true,
        );
    }

    #[test]
    fn leaves_other_first_bytes_to_userspace() {
        assert_all(
            &[
                b"PRI * HTTP/2.0\r\n",
                b"CONNECT host:443 HTTP/1.1",
                b"GETX / HTTP/1.1",
                b"POSTED /",
                b"HTTP/1.1 200 OK\r\n",
                b"PING\r\n\0\0",
                b"*\r\n$4\r\nPI",
                b"*1\r\n+OK\r\n",
                b"*1234\r\n$",
                b"\0\0\0\x08\x04\xd2\x16\x2f",
                b"\x16\x03\x01\x02\0\x01\0\x01",
            ],
            false,
        );
    }
}
