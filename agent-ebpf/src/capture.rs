//! Data syscalls: remember the arguments at entry (sockets we trace only), copy a bounded
//! payload prefix at exit and hand it to userspace through the ring buffer.

use agent_common::{
    ActiveCall, ConnState, DIR_EGRESS, DIR_INGRESS, DIR_NONE, DataHeader, EVENT_DATA,
    FILTER_BY_PROCESS, FLAG_AFTER_SKIP, FLAG_PEEK_PROTOCOL, FLAG_TRUNCATED, MAX_IOV, MAX_PAYLOAD,
    ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, SAMPLE_IGNORE, counter, opens_sampling, syscall,
};
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
    generated::{bpf_loop, bpf_probe_read_user as probe_read_user_raw, bpf_ringbuf_output},
};

use crate::calls;
use crate::conn::process_selected;
use crate::fdcache::{self, conn_of_fd};
use crate::maps::{
    EVENTS, IOV_WALK, IovWalk, SAMPLE_ALLOW, config, count, offsets, over_window_cap, scratch,
    skip_threshold,
};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Entry of write/sendto/writev/sendmsg/sendfile (and of the reads when their exits cannot
/// read the arguments themselves). `iovcnt` is 0 for a flat buffer.
#[inline(always)]
pub fn enter(fd: u64, buf: u64, iovcnt: u32, syscall: u8, direction: u8) {
    let id = bpf_get_current_pid_tgid();
    if let Some(call) = prepare(id, fd, buf, iovcnt, syscall, direction) {
        calls::record(id, &call);
    }
}

/// Exit of read/recvfrom/readv/recvmsg with the arguments read back from the saved user
/// registers: one program per call instead of an entry and an exit. Reads are timed by their
/// return, so nothing the entry would have recorded is missing; and failed reads (EAGAIN on a
/// non-blocking socket, most of an event loop's reads) cost no socket lookup at all.
/// `ret` > 0: the caller checked it before reading the registers.
#[inline(always)]
pub fn exit_direct(fd: u64, buf: u64, iovcnt: u32, syscall: u8, direction: u8, ret: i64) {
    let id = bpf_get_current_pid_tgid();
    if let Some(call) = prepare(id, fd, buf, iovcnt, syscall, direction) {
        // Seen at its return: one clock read serves as both times.
        finish(id, &call, ret, call.ts_enter_ns);
    }
}

/// What a data syscall on `fd` needs captured, or None when it is not a traced socket, its
/// process or connection is filtered out, or its exchange is sampled out.
#[inline(always)]
fn prepare(
    id: u64,
    fd: u64,
    buf: u64,
    iovcnt: u32,
    syscall: u8,
    direction: u8,
) -> Option<ActiveCall> {
    let cfg = config();
    let tgid = (id >> 32) as u32;
    if tgid == cfg.agent_pid {
        return None;
    }
    // A pid/executable filter alone is decided before walking to the socket: unselected
    // processes cost one or two hash lookups per syscall, not a dozen kernel reads.
    if cfg.filter_enabled == FILTER_BY_PROCESS && !process_selected(tgid) {
        return None;
    }
    let o = offsets();
    let (s, st) = conn_of_fd(o, tgid, fd)?;
    // SAFETY: an FD_SOCK value; concurrent syscalls on one fd race benignly on these bytes.
    let st = unsafe { &mut *st };
    if st.selected == 0 {
        count(counter::FILTERED);
        return None;
    }
    let flags = sample(st, s.key, direction)?;
    Some(ActiveCall {
        sock: s.key,
        buf,
        conn_id: st.conn_id,
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        iovcnt,
        fd: fd as i32,
        syscall,
        direction,
        flags,
        _pad: 0,
        exchange: st.exchanges,
    })
}

/// Exchange sampling: a turn to the request direction starts an exchange, captured or skipped
/// whole (request and response) when the budget userspace set is exceeded. The decision hashes
/// the connection's port pair with the exchange number, so both ends of a local connection
/// keep or skip the same exchange and traces stay whole. Returns the event flags, or None
/// when this syscall belongs to a skipped exchange.
#[inline(always)]
pub fn sample(st: &mut ConnState, key: u64, direction: u8) -> Option<u8> {
    let mut flags = 0;
    let turned = direction != st.last_dir;
    if st.sample_ok == 0 {
        // Userspace's verdict on the connection (SAMPLE_ALLOW) is taken over at a turn, and
        // every 16 calls on a one-way stream.
        st.since_allow_check = st.since_allow_check.wrapping_add(1);
        if turned || st.since_allow_check >= 16 {
            st.since_allow_check = 0;
            if let Some(v) = unsafe { SAMPLE_ALLOW.get(key) } {
                let v = *v;
                let _ = SAMPLE_ALLOW.remove(key);
                if v.conn_id != st.conn_id {
                    // Meant for an earlier socket at this address: not ours.
                    count(counter::STALE_VERDICTS);
                } else if v.verdict == SAMPLE_IGNORE {
                    // Userspace parses nothing here: stop capturing this connection.
                    st.selected = 0;
                    count(counter::FILTERED);
                    return None;
                } else {
                    if st.role == ROLE_UNKNOWN {
                        st.role = v.verdict;
                    }
                    st.sample_ok = 1;
                }
            }
        }
    }
    if turned {
        let request_dir = match st.role {
            ROLE_CLIENT => DIR_EGRESS,
            ROLE_SERVER => DIR_INGRESS,
            _ => DIR_NONE,
        };
        // Exchanges are numbered from the first one, sampled or not, so both ends of a
        // connection agree on the numbers whenever userspace allowed each of them sampling.
        if direction == request_dir {
            st.exchanges = st.exchanges.wrapping_add(1);
            if st.sample_ok != 0 {
                count(counter::EXCHANGES);
                let skip_below = skip_threshold();
                let h = mix(st.pair_hash, st.exchanges);
                let mut skip = h < skip_below;
                if !skip && over_window_cap(unsafe { bpf_ktime_get_ns() }) {
                    skip = true;
                    count(counter::CAPPED);
                }
                st.skipping = skip as u8;
                if skip {
                    count(counter::SAMPLED_OUT);
                }
            } else if st.exchanges == 1 {
                // Captured whole at both ends; its bytes may open the connection to sampling
                // at once instead of after a round trip through userspace.
                flags = FLAG_PEEK_PROTOCOL;
            }
        }
    }
    st.last_dir = direction;
    if st.skipping != 0 {
        st.after_skip = 1;
        return None;
    }
    if st.after_skip != 0 {
        st.after_skip = 0;
        flags |= FLAG_AFTER_SKIP;
    }
    Some(flags)
}

/// A well-spread 32-bit hash of (connection pair, exchange number).
#[inline(always)]
fn mix(pair: u32, n: u32) -> u32 {
    let mut x = ((pair as u64) << 32 | n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 32) as u32
}

/// What data syscall `sc` copies from or to, given its second and third arguments: (buffer,
/// iovec count; 0 for a flat buffer), or None when there is nothing to capture. Shared by the
/// per-syscall programs (where `sc` is a constant and the match folds away) and the dispatch.
#[inline(always)]
pub fn user_buffer(sc: u8, a1: u64, a2: u64) -> Option<(u64, u32)> {
    match sc {
        syscall::READV | syscall::WRITEV => {
            (a1 != 0 && a2 != 0).then_some((a1, a2.min(u32::MAX as u64) as u32))
        }
        syscall::RECVMSG | syscall::SENDMSG => msg_iov(a1),
        // Bytes go from a file to the socket: the byte count only.
        syscall::SENDFILE => Some((0, 0)),
        _ => Some((a1, 0)),
    }
}

/// Entry of a data syscall from its first three arguments (fd, then [`user_buffer`]'s).
#[inline(always)]
pub fn enter_args(fd: u64, a1: u64, a2: u64, sc: u8, direction: u8) {
    if let Some((buf, iovcnt)) = user_buffer(sc, a1, a2) {
        enter(fd, buf, iovcnt, sc, direction);
    }
}

/// The iovec array and its length in the user `struct msghdr` at `msg` (recvmsg/sendmsg;
/// stable ABI: msg_iov at offset 16, msg_iovlen at 24 on 64-bit).
#[inline(always)]
fn msg_iov(msg: u64) -> Option<(u64, u32)> {
    let iov: u64 = unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.unwrap_or(0);
    let iovlen: u64 = unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.unwrap_or(0);
    if iov == 0 || iovlen == 0 {
        return None;
    }
    Some((iov, iovlen.min(u32::MAX as u64) as u32))
}

#[inline(always)]
pub fn exit(ret: i64) {
    let id = bpf_get_current_pid_tgid();
    let Some(call) = calls::take(id) else {
        return;
    };
    if ret <= 0 {
        return;
    }
    finish(id, &call, ret, unsafe { bpf_ktime_get_ns() });
}

/// A data syscall on a traced socket returned `ret` > 0 bytes: copy the payload prefix and
/// hand the event to userspace.
#[inline(always)]
pub fn finish(id: u64, call: &ActiveCall, ret: i64, ts_exit_ns: u64) {
    // Before the copy, so the verifier sees the copy's states once, not once per branch here.
    if call.flags & FLAG_PEEK_PROTOCOL != 0 && ret >= 8 {
        peek_first_request(call, (id >> 32) as u32);
    }
    let Some(ev) = scratch() else {
        return;
    };
    let ev = unsafe { &mut *ev };
    let cfg = config();
    let mut cap = cfg.capture_bytes as u64;
    if cap > MAX_PAYLOAD as u64 {
        cap = MAX_PAYLOAD as u64;
    }
    let want = if (ret as u64) < cap { ret as u64 } else { cap };

    let captured = if call.buf == 0 {
        0
    } else if call.iovcnt == 0 {
        copy_flat(ev, call.buf, want)
    } else {
        copy_iov(ev, call.buf, call.iovcnt, want)
    };

    ev.hdr = DataHeader {
        kind: EVENT_DATA,
        direction: call.direction,
        syscall: call.syscall,
        flags: call.flags & !FLAG_PEEK_PROTOCOL,
        pid: (id >> 32) as u32,
        tid: id as u32,
        fd: call.fd,
        conn_id: call.conn_id,
        ts_enter_ns: call.ts_enter_ns,
        ts_exit_ns,
        bytes: ret as u64,
        captured: captured as u32,
        exchange: call.exchange,
    };
    if (captured as u64) < ret as u64 {
        ev.hdr.flags |= FLAG_TRUNCATED;
        count(counter::TRUNCATED);
    }
    let size = core::mem::size_of::<DataHeader>() + captured;
    if size > core::mem::size_of::<DataHeader>() + MAX_PAYLOAD {
        return;
    }
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    let flags = if avail >= cfg.wakeup_bytes as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let rc = unsafe {
        bpf_ringbuf_output(
            core::ptr::from_ref(&EVENTS).cast_mut().cast(),
            (ev as *mut agent_common::DataEvent).cast(),
            size as u64,
            flags,
        )
    };
    if rc < 0 {
        count(counter::DROPPED_EVENTS);
    } else {
        count(counter::DATA_EVENTS);
    }
}

/// Whether the first 8 bytes of the user buffer (`iovcnt` 0: flat; else its first iovec) open
/// the connection end to sampling ([`opens_sampling`]; `role` is the end's).
#[inline(always)]
pub fn first_request_opens(buf: u64, iovcnt: u32, role: u8) -> bool {
    let mut src = buf;
    if iovcnt != 0 {
        // First iovec: base at +0, length at +8.
        let len: u64 = unsafe { bpf_probe_read_user((src + 8) as *const u64) }.unwrap_or(0);
        if len < 8 {
            return false;
        }
        src = unsafe { bpf_probe_read_user(src as *const u64) }.unwrap_or(0);
    }
    if src == 0 {
        return false;
    }
    let Ok(head) = (unsafe { bpf_probe_read_user(src as *const [u8; 8]) }) else {
        return false;
    };
    opens_sampling(&head, role == ROLE_SERVER)
}

/// The first request of a connection: when its first bytes show a protocol whose exchanges
/// stand alone, the connection is open to sampling from its next exchange (8 bytes read
/// once per connection).
#[inline(always)]
fn peek_first_request(call: &ActiveCall, tgid: u32) {
    let Some(st) = fdcache::state_of(tgid, call.fd, call.sock) else {
        return;
    };
    // SAFETY: an FD_SOCK value; only `sample_ok` is written.
    if first_request_opens(call.buf, call.iovcnt, unsafe { (*st).role }) {
        unsafe { (*st).sample_ok = 1 };
        count(counter::OPENED_IN_KERNEL);
    }
}

#[inline(always)]
fn copy_flat(ev: &mut agent_common::DataEvent, src: u64, want: u64) -> usize {
    let n = want as usize;
    if n == 0 || n > MAX_PAYLOAD {
        return 0;
    }
    let rc =
        unsafe { probe_read_user_raw(ev.payload.as_mut_ptr().cast(), n as u32, src as *const _) };
    if rc < 0 {
        count(counter::READ_ERRORS);
        return 0;
    }
    n
}

/// Walks up to MAX_IOV iovecs with `bpf_loop` (kernel >= 5.17): the verifier checks the body
/// once instead of unrolling every path through every iteration.
#[inline(always)]
fn copy_iov(_ev: &mut agent_common::DataEvent, iov: u64, iovcnt: u32, want: u64) -> usize {
    let Some(w) = IOV_WALK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; a tracepoint program runs to completion on one CPU.
    unsafe {
        *w = IovWalk {
            iov,
            iovcnt: iovcnt as u64,
            off: 0,
            remaining: want,
        };
    }
    let n = if iovcnt < MAX_IOV { iovcnt } else { MAX_IOV };
    unsafe {
        bpf_loop(
            n,
            iov_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    let off = unsafe { (*w).off } as usize;
    if off > MAX_PAYLOAD { MAX_PAYLOAD } else { off }
}

/// One iovec: copy min(len, remaining) bytes at the current offset. Returns 1 to stop.
extern "C" fn iov_step(i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(w) = IOV_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot (see `copy_iov`).
    let w = unsafe { &mut *w };
    if i >= w.iovcnt || w.remaining == 0 || w.off >= MAX_PAYLOAD as u64 {
        return 1;
    }
    let Some(ev) = scratch() else {
        return 1;
    };
    let entry = w.iov + i * 16;
    let base: u64 = unsafe { bpf_probe_read_user(entry as *const u64) }.unwrap_or(0);
    let len: u64 = unsafe { bpf_probe_read_user((entry + 8) as *const u64) }.unwrap_or(0);
    if base == 0 || len == 0 {
        return 0;
    }
    let n = if len < w.remaining { len } else { w.remaining };
    // Offset below MAX_PAYLOAD and size at most MAX_PAYLOAD keep the copy inside the doubled
    // scratch buffer, which is what the verifier needs to see.
    let at = (w.off as usize) & (MAX_PAYLOAD - 1);
    let n = if n > MAX_PAYLOAD as u64 {
        MAX_PAYLOAD
    } else {
        n as usize
    };
    let rc = unsafe {
        probe_read_user_raw(
            (*ev).payload.as_mut_ptr().add(at).cast(),
            n as u32,
            base as *const _,
        )
    };
    if rc < 0 {
        count(counter::READ_ERRORS);
        return 1;
    }
    w.off = (at + n) as u64;
    w.remaining -= n as u64;
    0
}
