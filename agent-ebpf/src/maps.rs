//! Maps and load-time globals shared by the programs.

use agent_common::{
    CaptureConfig, ConnState, DataEvent, KernelOffsets, PendingConn, SAMPLE_WINDOW_SHIFT,
    SAMPLING_CAP, SAMPLING_THRESHOLD, SampleVerdict, SampleWindow, counter,
};
use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// Set by userspace at load time (EbpfLoader::set_global); read with `read_volatile` so the
/// compiler cannot fold the zero initialisers.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    inode_ino: 0,
    socket_type: 0,
    socket_sk: 0,
    sk_daddr: 0,
    sk_rcv_saddr: 0,
    sk_dport: 0,
    sk_num: 0,
    sk_family: 0,
    sk_v6_daddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_type: 0,
    unix_addr: 0,
    unix_peer: 0,
    tp_newtask_pid: 0,
    tp_newtask_clone_flags: 0,
    tp_sock_state_skaddr: 0,
    tp_sock_state_newstate: 0,
    valid: 0,
};

#[unsafe(no_mangle)]
pub static CONFIG: CaptureConfig = CaptureConfig {
    capture_bytes: agent_common::DEFAULT_CAPTURE_BYTES,
    filter_enabled: 0,
    agent_pid: 0,
    wakeup_bytes: agent_common::DEFAULT_WAKEUP_BYTES,
};

/// The offsets, read field by field where used: copying the whole struct out on every
/// syscall cost a few ns per call. The pointer goes through a volatile load so the compiler
/// cannot see it points at the zero initialiser and fold the fields.
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    let p: *const KernelOffsets = &OFFSETS;
    // SAFETY: a pointer to a static, read back unchanged.
    unsafe { &*core::ptr::read_volatile(&p) }
}

#[inline(always)]
pub fn config() -> CaptureConfig {
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(32 * 1024 * 1024, 0);

/// Socket key ([`crate::sock::SockRef::key`]: the `struct sock` address) -> connection state,
/// with the syscall hooks (the socket tracepoints keep it on the socket: [`SOCK_STATE`]).
#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Connection state kept on the socket itself (socket local storage), with the socket
/// tracepoints: found from the socket in a few ns where a hash lookup by cookie cost about a
/// third of a sampled-out call, freed by the kernel with the socket, and not bounded by a
/// map size (CONNS, an LRU map, would evict live connections past 65,536 sockets).
#[btf_map]
pub static SOCK_STATE: SkStorage<ConnState> = SkStorage::new();

/// pid_tgid -> connect/accept in flight.
#[map]
pub static PENDING_CONN: HashMap<u64, PendingConn> = HashMap::with_max_entries(16384, 0);

/// One scratch event per CPU, indexed by CPU number: a plain array because a per-CPU map value
/// cannot exceed 32 KiB. Tracepoint programs cannot migrate, so the slot is ours while we run.
/// Userspace sizes it to the number of possible CPUs.
#[map]
pub static SCRATCH: Array<DataEvent> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn scratch() -> Option<*mut DataEvent> {
    let cpu = unsafe { aya_ebpf::helpers::generated::bpf_get_smp_processor_id() };
    SCRATCH.get_ptr_mut(cpu)
}

/// State of an iovec walk, shared between `copy_iov` and its `bpf_loop` callback. In a map
/// rather than on the stack: the verifier tracks stack scalars precisely, so every iteration
/// would give the callback new offset ranges to explore (past the 1M-instruction limit on
/// 6.18), while a map value's fields are unknown scalars and the callback is checked once.
#[repr(C)]
pub struct IovWalk {
    pub iov: u64,
    pub iovcnt: u64,
    pub off: u64,
    pub remaining: u64,
}

#[map]
pub static IOV_WALK: PerCpuArray<IovWalk> = PerCpuArray::with_max_entries(1, 0);

/// Exchange sampling: an exchange is skipped when its hash is below the threshold
/// (`SAMPLING_THRESHOLD`; 0: keep all), or when its CPU already kept the cap (`SAMPLING_CAP`;
/// 0: none) in the current window. Userspace adjusts both to the budget.
#[map]
pub static SAMPLING: Array<u32> = Array::with_max_entries(2, 0);

/// Per CPU: exchanges kept in the current sampling window.
#[map]
pub static SAMPLE_WINDOW: PerCpuArray<SampleWindow> = PerCpuArray::with_max_entries(1, 0);

/// Socket key (as in CONNS) -> role (ROLE_*): userspace recognised a protocol whose exchanges
/// stand alone on this connection. Taken over into the connection's state (and removed) at its
/// next turn, so userspace never rewrites state the programs are updating.
#[map]
pub static SAMPLE_ALLOW: LruHashMap<u64, SampleVerdict> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
pub fn skip_threshold() -> u32 {
    SAMPLING.get(SAMPLING_THRESHOLD).copied().unwrap_or(0)
}

/// Whether this CPU already kept its cap of exchanges in the current window (else counts one
/// more kept). The cap holds between two updates by userspace: an agent that is slow to get
/// the CPU (the node is saturated) cannot let a load that starts be captured in full.
#[inline(always)]
pub fn over_window_cap(now_ns: u64) -> bool {
    let cap = SAMPLING.get(SAMPLING_CAP).copied().unwrap_or(0) as u64;
    if cap == 0 {
        return false;
    }
    let Some(w) = SAMPLE_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot; programs on this CPU do not preempt one another.
    let w = unsafe { &mut *w };
    let window = now_ns >> SAMPLE_WINDOW_SHIFT;
    if w.window != window {
        w.window = window;
        w.kept = 0;
    }
    if w.kept >= cap {
        return true;
    }
    w.kept += 1;
    false
}

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per-CPU sequence for connection ids.
#[map]
pub static IDGEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

#[map]
pub static FILTER_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);

#[map]
pub static FILTER_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(256, 0);

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

/// A connection id unique for the agent's lifetime: per-CPU sequence in the high bits, CPU
/// number in the low byte.
#[inline(always)]
pub fn next_conn_id() -> u64 {
    let cpu = unsafe { aya_ebpf::helpers::generated::bpf_get_smp_processor_id() } as u64;
    match IDGEN.get_ptr_mut(0) {
        Some(p) => unsafe {
            *p += 1;
            (*p << 8) | (cpu & 0xff)
        },
        None => 0,
    }
}
