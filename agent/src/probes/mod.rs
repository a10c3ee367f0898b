//! Loading and attaching the kernel programs: privileges, tracefs, BTF offsets as globals,
//! hook availability, the process filter, and the counters the programs keep.

pub mod btf;
pub mod hooks;

use std::path::{Path, PathBuf};

use agent_common::{CaptureConfig, ConnState, KernelOffsets, MAX_PAYLOAD, SampleVerdict, counter};
use anyhow::{Context, Result, bail};

use crate::model::{ConnKey, Role};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};

pub use hooks::{
    HOOKS, Hook, HookStatus, OPTIONAL_HOOKS, RAW_SYSCALL_HOOKS, READ_HOOKS_ENTRY_EXIT,
    READ_HOOKS_EXIT_ONLY, SOCKET_HOOKS, SYSCALL_ACTIONS, hook_status, read_hooks, required,
    sockets_present,
};

/// Which processes to trace; empty means all.
#[derive(Debug, Clone, Default)]
pub struct ProcessFilter {
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
    pub ports: Vec<u16>,
}

impl ProcessFilter {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.exes.is_empty() && self.ports.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub capture_bytes: u32,
    pub filter: ProcessFilter,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Attach a no-op program to every hook instead of the real ones (benchmark floor).
    pub hooks_only: bool,
    /// Reads through entry and exit programs even where their exits could read the arguments
    /// from the saved registers (overrides `raw_syscalls_dispatch`).
    pub reads_at_entry: bool,
    /// Every syscall through the `raw_syscalls` dispatch instead of one `syscalls:*`
    /// tracepoint per traced syscall (falls back to those where it cannot be used).
    pub raw_syscalls_dispatch: bool,
    /// Syscall tracepoints even where the socket tracepoints could be used.
    pub syscall_tracepoints: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            capture_bytes: agent_common::DEFAULT_CAPTURE_BYTES,
            filter: ProcessFilter::default(),
            // 8 MiB holds ~40k typical events: dozens of 10 ms poll intervals at 100k+ req/s.
            ring_bytes: 8 * 1024 * 1024,
            hooks_only: false,
            reads_at_entry: false,
            raw_syscalls_dispatch: false,
            syscall_tracepoints: false,
        }
    }
}

/// The loaded, attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub attached: Vec<&'static Hook>,
    way: HookWay,
    /// Reads are seen at their exit only (arguments from the saved registers).
    exit_only_reads: bool,
}

/// How socket I/O is hooked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookWay {
    /// The socket tracepoints, with no syscall tracepoint.
    SocketTracepoints,
    /// The `raw_syscalls` dispatch.
    RawSyscalls,
    /// One `syscalls:*` tracepoint per traced syscall.
    PerSyscall,
}

/// Attaches one way of hooking to a loaded object (hooks-only or not).
type AttachFn = fn(&mut Ebpf, bool) -> Result<Vec<&'static Hook>>;

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    pub dropped_events: u64,
    pub truncated: u64,
    pub unknown_conns: u64,
    pub data_events: u64,
    pub conn_events: u64,
    pub read_errors: u64,
    pub filtered: u64,
    /// Exchanges seen on connections open to sampling.
    pub exchanges: u64,
    /// Exchanges skipped to stay within the capture budget.
    pub sampled_out: u64,
    /// Connections the kernel opened to sampling from their first request's bytes.
    pub opened_in_kernel: u64,
    /// Data calls lost to another thread sharing their in-flight slot.
    pub call_collisions: u64,
    /// Verdicts that arrived after their socket's address went to a newer connection.
    pub stale_verdicts: u64,
    /// Of the exchanges sampled out, those skipped by the per-CPU window cap.
    pub capped: u64,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// Errors a user can act on, before any program is loaded. Returns the tracefs root (mounted
/// here if it was not).
pub fn preflight() -> Result<PathBuf> {
    if unsafe { libc::geteuid() } != 0 && !has_cap_bpf() {
        bail!(
            "tracewire needs root or CAP_BPF+CAP_PERFMON+CAP_SYS_RESOURCE to load eBPF programs; run it with sudo or grant the capabilities"
        );
    }
    let tracefs = hooks::ensure_tracefs()?;
    if !Path::new(btf::VMLINUX_BTF).exists() {
        bail!(
            "{} is missing: the kernel was built without CONFIG_DEBUG_INFO_BTF, which tracewire needs to find socket structures",
            btf::VMLINUX_BTF
        );
    }
    Ok(tracefs)
}

/// How syscalls are hooked, for the start-up message and `check`.
pub fn syscall_hooks_mode(dispatch: bool) -> &'static str {
    if dispatch {
        "raw_syscalls:sys_enter/sys_exit, one BTF-typed program each, dispatching by syscall number"
    } else {
        "one syscalls:* tracepoint per syscall"
    }
}

const SOCKET_HOOKS_MODE: &str = "the socket tracepoints sock:sock_send_length/sock_recv_length (BTF-typed), no syscall tracepoint";

/// How reads are seen, for the start-up message and `check`.
pub fn reads_mode(exit_only: bool) -> &'static str {
    if exit_only {
        "at their exit only (arguments from the saved user registers)"
    } else {
        "at entry and exit"
    }
}

/// The program of `hook`, loaded (verified) once: hooks sharing a program share the load.
fn loaded_program<'a>(ebpf: &'a mut Ebpf, hook: &Hook) -> Result<&'a mut TracePoint> {
    let prog: &mut TracePoint = ebpf
        .program_mut(hook.program)
        .with_context(|| format!("program {} missing from the object", hook.program))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load()
            .with_context(|| format!("verifier rejected {}", hook.program))?;
    }
    Ok(prog)
}

/// The program that returns at once, loaded (hooks-only runs).
fn null_program(ebpf: &mut Ebpf) -> Result<&mut TracePoint> {
    let prog: &mut TracePoint = ebpf
        .program_mut("tw_null")
        .context("program tw_null missing from the object")?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().context("verifier rejected tw_null")?;
    }
    Ok(prog)
}

/// Attaches one `syscalls:*` tracepoint per traced syscall and the other hooks; with
/// `hooks_only`, a program that returns at once in place of each. Returns the hooks and
/// whether reads are seen at their exit alone.
fn attach_per_syscall(
    ebpf: &mut Ebpf,
    root: &Path,
    hooks_only: bool,
    regs_usable: bool,
) -> Result<(Vec<&'static Hook>, bool)> {
    let mut attached = Vec::new();
    if hooks_only {
        // The benchmark's floor: every hook attached, each running a program that returns
        // at once, so what the hooks alone cost is measured in the same run.
        let prog = null_program(ebpf)?;
        for hook in HOOKS.iter().chain(read_hooks(regs_usable)) {
            prog.attach(hook.category, hook.name)
                .with_context(|| format!("attaching {}:{}", hook.category, hook.name))?;
            attached.push(hook);
        }
        return Ok((attached, regs_usable));
    }
    // Exit-only reads need bpf_task_pt_regs (5.15+): where the verifier refuses them, the
    // reads fall back to entry programs.
    let exit_only_reads = regs_usable
        && match load_programs(ebpf, READ_HOOKS_EXIT_ONLY) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("tracewire: reads use entry programs: {e:#}");
                false
            }
        };
    let optional = OPTIONAL_HOOKS
        .iter()
        .filter(|h| hook_status(root, h) == HookStatus::Available);
    for hook in HOOKS
        .iter()
        .chain(read_hooks(exit_only_reads))
        .chain(optional)
    {
        loaded_program(ebpf, hook)?
            .attach(hook.category, hook.name)
            .with_context(|| format!("attaching {}:{}", hook.category, hook.name))?;
        attached.push(hook);
    }
    Ok((attached, exit_only_reads))
}

/// Attaches the `raw_syscalls` dispatch and the hooks that are not syscalls (exec, new
/// processes, TCP state); with `hooks_only`, programs that return at once in their place.
fn attach_dispatch(ebpf: &mut Ebpf, hooks_only: bool) -> Result<Vec<&'static Hook>> {
    fill_syscall_actions(ebpf)?;
    let mut attached = attach_btf(ebpf, RAW_SYSCALL_HOOKS, hooks_only)?;
    for hook in HOOKS.iter().filter(|h| h.category != "syscalls") {
        let prog = if hooks_only {
            null_program(ebpf)?
        } else {
            loaded_program(ebpf, hook)?
        };
        prog.attach(hook.category, hook.name)
            .with_context(|| format!("attaching {}:{}", hook.category, hook.name))?;
        attached.push(hook);
    }
    Ok(attached)
}

/// Fills the syscall number -> action table the dispatch and the socket tracepoints read.
fn fill_syscall_actions(ebpf: &mut Ebpf) -> Result<()> {
    let mut table: Array<_, u8> = Array::try_from(
        ebpf.map_mut("SYSCALL_ACTIONS")
            .context("SYSCALL_ACTIONS missing")?,
    )?;
    for &(nr, action) in SYSCALL_ACTIONS {
        let slot = u32::try_from(nr)
            .ok()
            .filter(|n| *n < agent_common::SYSCALL_TABLE)
            .with_context(|| format!("syscall number {nr} outside the dispatch table"))?;
        table.set(slot, action, 0)?;
    }
    Ok(())
}

/// Attaches the socket tracepoints (BTF-typed) and nothing else; with `hooks_only`, programs
/// that return at once in their place.
fn attach_sockets(ebpf: &mut Ebpf, hooks_only: bool) -> Result<Vec<&'static Hook>> {
    fill_syscall_actions(ebpf)?;
    attach_btf(ebpf, SOCKET_HOOKS, hooks_only)
}

/// Loads and attaches BTF-typed programs on `hooks` (with `hooks_only`, the program that
/// returns at once in place of each).
fn attach_btf(
    ebpf: &mut Ebpf,
    hooks: &'static [Hook],
    hooks_only: bool,
) -> Result<Vec<&'static Hook>> {
    let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let mut attached = Vec::new();
    for hook in hooks {
        let name = if hooks_only {
            hooks::null_btf_program(hook)
        } else {
            hook.program
        };
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?;
        prog.load(hook.name, &btf)
            .with_context(|| format!("verifier rejected {name}"))?;
        prog.attach()
            .with_context(|| format!("attaching {}:{}", hook.category, hook.name))?;
        attached.push(hook);
    }
    drop(btf);
    crate::memory::release_free_memory();
    Ok(attached)
}

/// Loads (verifies) the programs of `hooks` without attaching them.
fn load_programs(ebpf: &mut Ebpf, hooks: &[Hook]) -> Result<()> {
    for hook in hooks {
        loaded_program(ebpf, hook)?;
    }
    Ok(())
}

fn has_cap_bpf() -> bool {
    // CapEff bit 39 = CAP_BPF.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 39) != 0)
}

impl Probes {
    pub fn load(cfg: &ProbeConfig) -> Result<Self> {
        let root = preflight()?;
        let kernel_btf = btf::KernelBtf::load(Path::new(btf::VMLINUX_BTF))?;
        let mut offsets: KernelOffsets = kernel_btf
            .kernel_offsets()
            .context("reading kernel struct offsets from BTF")?;
        let regs_usable = cfg!(target_arch = "x86_64")
            && kernel_btf.syscall_args_in_regs()
            && !cfg.reads_at_entry;
        let dispatch_regs =
            regs_usable && kernel_btf.syscall_dispatch_regs() && !SYSCALL_ACTIONS.is_empty();
        let dispatch_usable = dispatch_regs && cfg.raw_syscalls_dispatch;
        // The socket tracepoints read the syscall's number and arguments from the same saved
        // registers as the dispatch, and the socket's type from BTF.
        let sockets_usable = dispatch_regs
            && !cfg.raw_syscalls_dispatch
            && !cfg.syscall_tracepoints
            && offsets.sk_type != 0;
        let sockets_present = sockets_present(&root);
        if sockets_usable && !sockets_present {
            eprintln!(
                "tracewire: this kernel has no sock:sock_send_length/sock_recv_length tracepoints (6.3+); syscall tracepoints instead"
            );
        }
        let sockets_usable = sockets_usable && sockets_present;
        if cfg.raw_syscalls_dispatch && !cfg.reads_at_entry && !dispatch_usable {
            eprintln!(
                "tracewire: --raw-syscalls needs x86_64 and a `struct pt_regs` layout this agent knows; one tracepoint per syscall instead"
            );
        }
        drop(kernel_btf);
        // The parsed BTF is gone; return its pages before the loader parses BTF again, so the
        // two parses do not add up in the peak.
        crate::memory::release_free_memory();
        let tp = |c: &str, n: &str, f: &str| hooks::tracepoint_field_offset(&root, c, n, f);
        offsets.tp_newtask_pid = tp("task", "task_newtask", "pid")?;
        offsets.tp_newtask_clone_flags = tp("task", "task_newtask", "clone_flags")?;
        offsets.tp_sock_state_skaddr = tp("sock", "inet_sock_set_state", "skaddr")?;
        offsets.tp_sock_state_newstate = tp("sock", "inet_sock_set_state", "newstate")?;
        if cfg.capture_bytes == 0 || cfg.capture_bytes as usize > MAX_PAYLOAD {
            bail!(
                "capture size {} is out of range 1..={MAX_PAYLOAD}",
                cfg.capture_bytes
            );
        }
        let ccfg = CaptureConfig {
            capture_bytes: cfg.capture_bytes,
            filter_enabled: filter_bits(&cfg.filter),
            agent_pid: std::process::id(),
            ..CaptureConfig::default()
        };
        bump_memlock();
        let load_object = || -> Result<Ebpf> {
            let mut ebpf = EbpfLoader::new()
                .override_global("OFFSETS", &offsets, true)
                .override_global("CONFIG", &ccfg, true)
                .map_max_entries("EVENTS", cfg.ring_bytes)
                .map_max_entries("SCRATCH", possible_cpus()?)
                .load(EBPF_OBJECT)
                .context("loading the eBPF programs into the kernel")?;
            fill_filter(&mut ebpf, &cfg.filter)?;
            Ok(ebpf)
        };
        let mut ebpf = load_object()?;
        // The ways that may fail on a kernel that lists their hooks; each falls back to the one
        // tracepoint per syscall on a fresh object (whatever the failed attempt attached goes
        // with the old one). At most one of them is usable.
        let attempts: [(bool, HookWay, AttachFn, &str); 2] = [
            (
                sockets_usable,
                HookWay::SocketTracepoints,
                attach_sockets,
                "syscall tracepoints instead of the socket tracepoints",
            ),
            (
                dispatch_usable,
                HookWay::RawSyscalls,
                attach_dispatch,
                "one tracepoint per syscall instead of raw_syscalls",
            ),
        ];
        for (usable, way, attach, instead) in attempts {
            if !usable {
                continue;
            }
            match attach(&mut ebpf, cfg.hooks_only) {
                Ok(attached) => {
                    return Ok(Self {
                        ebpf,
                        attached,
                        way,
                        exit_only_reads: true,
                    });
                }
                Err(e) => {
                    eprintln!("tracewire: {instead}: {e:#}");
                    drop(ebpf);
                    ebpf = load_object()?;
                }
            }
        }

        let (attached, exit_only_reads) =
            attach_per_syscall(&mut ebpf, &root, cfg.hooks_only, regs_usable)?;
        Ok(Self {
            ebpf,
            attached,
            way: HookWay::PerSyscall,
            exit_only_reads,
        })
    }

    /// How socket I/O is hooked, for the start-up message and `check`.
    pub fn hooks_mode(&self) -> &'static str {
        match self.way {
            HookWay::SocketTracepoints => SOCKET_HOOKS_MODE,
            way => syscall_hooks_mode(way == HookWay::RawSyscalls),
        }
    }

    /// How reads are seen, for the start-up message and `check`.
    pub fn reads_mode(&self) -> &'static str {
        match self.way {
            HookWay::SocketTracepoints => {
                "when the socket returns them (buffer from the saved user registers)"
            }
            _ => reads_mode(self.exit_only_reads),
        }
    }

    /// Instructions the verifier processed for each loaded program, largest first: how close
    /// each is to the kernel's 1M limit, which a new kernel's verifier can move.
    pub fn verifier_costs(&self) -> Vec<(String, Option<u32>)> {
        let mut costs: Vec<(String, Option<u32>)> = self
            .ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                Some((name.to_string(), info.verified_instruction_count()))
            })
            .collect();
        costs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        costs
    }

    /// The ring buffer events arrive on (taken once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS map missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Stops payload capture of these connections, each named by its socket key (the cookie
    /// with the socket tracepoints, the CONNS key with the syscall hooks) and connection id: userspace found no protocol it parses in their first bytes. With the
    /// syscall hooks the socket's state in CONNS stops new users of it; the processes already
    /// using it, and every user with the socket tracepoints (whose state lives on the socket,
    /// out of userspace's reach), take the verdict over from SAMPLE_ALLOW at their next turn
    /// (or within 16 calls), as with
    /// [`Self::allow_sampling`]. A socket that closed meanwhile may have had its address
    /// reused by a new connection: the connection id keeps that one out of it.
    pub fn ignore_conns(&mut self, conns: &[ConnKey]) -> Result<()> {
        {
            let mut map: BpfHashMap<_, u64, ConnState> =
                BpfHashMap::try_from(self.ebpf.map_mut("CONNS").context("CONNS missing")?)?;
            for c in conns {
                if let Ok(mut st) = map.get(&c.sock, 0)
                    && st.conn_id == c.conn_id
                {
                    st.selected = 0;
                    // The socket may have closed meanwhile: a failed update is fine.
                    let _ = map.insert(c.sock, st, 0);
                }
            }
        }
        let mut verdicts = self.sample_allow()?;
        for c in conns {
            let v = SampleVerdict::new(c.conn_id, agent_common::SAMPLE_IGNORE);
            // A full map leaves the connection captured and dropped in userspace: fine.
            let _ = verdicts.insert(c.sock, v, 0);
        }
        Ok(())
    }

    /// Lets the kernel sample out whole exchanges of these connections (socket and connection
    /// id, as in [`Self::ignore_conns`]): their protocol's exchanges stand alone. The role is
    /// the one userspace settled on. The programs take this over at the connection's next
    /// turn; userspace never rewrites the connection state they keep updating.
    pub fn allow_sampling(&mut self, conns: &[(ConnKey, Role)]) -> Result<()> {
        let mut map = self.sample_allow()?;
        for (c, role) in conns {
            let role = match role {
                Role::Client => agent_common::ROLE_CLIENT,
                Role::Server => agent_common::ROLE_SERVER,
                Role::Unknown => continue,
            };
            // A full map only delays sampling of this connection: fine.
            let _ = map.insert(c.sock, SampleVerdict::new(c.conn_id, role), 0);
        }
        Ok(())
    }

    /// Userspace's per-socket verdicts the programs take over: a role (open to sampling) or
    /// `SAMPLE_IGNORE`.
    fn sample_allow(&mut self) -> Result<BpfHashMap<&mut MapData, u64, SampleVerdict>> {
        Ok(BpfHashMap::try_from(
            self.ebpf
                .map_mut("SAMPLE_ALLOW")
                .context("SAMPLE_ALLOW missing")?,
        )?)
    }

    /// Exchanges whose hash falls below `threshold` are skipped (0: keep all).
    pub fn set_skip_threshold(&mut self, threshold: u32) -> Result<()> {
        self.set_sampling(agent_common::SAMPLING_THRESHOLD, threshold)
    }

    /// Exchanges each CPU keeps at most per sampling window (0: no cap).
    pub fn set_window_cap(&mut self, cap: u32) -> Result<()> {
        self.set_sampling(agent_common::SAMPLING_CAP, cap)
    }

    fn set_sampling(&mut self, index: u32, value: u32) -> Result<()> {
        let mut arr: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut("SAMPLING").context("SAMPLING missing")?)?;
        arr.set(index, value, 0)?;
        Ok(())
    }

    /// A reader of the per-CPU kernel counters (`counter::*`), summed over CPUs.
    fn counter_reader(&self) -> Result<impl Fn(u32) -> u64 + '_> {
        let map = self.ebpf.map("COUNTERS").context("COUNTERS map missing")?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(move |i: u32| arr.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
    }

    /// (exchanges offered to sampling, exchanges sampled out): what the sampler reads on
    /// every poll, without the other counters.
    pub fn sampling_counters(&self) -> Result<(u64, u64)> {
        let get = self.counter_reader()?;
        Ok((get(counter::EXCHANGES), get(counter::SAMPLED_OUT)))
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let get = self.counter_reader()?;
        Ok(KernelCounters {
            dropped_events: get(counter::DROPPED_EVENTS),
            truncated: get(counter::TRUNCATED),
            unknown_conns: get(counter::UNKNOWN_CONNS),
            data_events: get(counter::DATA_EVENTS),
            conn_events: get(counter::CONN_EVENTS),
            read_errors: get(counter::READ_ERRORS),
            filtered: get(counter::FILTERED),
            exchanges: get(counter::EXCHANGES),
            sampled_out: get(counter::SAMPLED_OUT),
            opened_in_kernel: get(counter::OPENED_IN_KERNEL),
            call_collisions: get(counter::CALL_COLLISIONS),
            stale_verdicts: get(counter::STALE_VERDICTS),
            capped: get(counter::CAPPED),
        })
    }
}

fn filter_bits(f: &ProcessFilter) -> u32 {
    let mut bits = 0;
    if !f.pids.is_empty() || !f.exes.is_empty() {
        bits |= agent_common::FILTER_BY_PROCESS;
    }
    if !f.ports.is_empty() {
        bits |= agent_common::FILTER_BY_PORT;
    }
    bits
}

fn fill_filter(ebpf: &mut Ebpf, f: &ProcessFilter) -> Result<()> {
    {
        let mut pids: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(ebpf.map_mut("FILTER_PIDS").context("FILTER_PIDS missing")?)?;
        for p in &f.pids {
            pids.insert(p, 1, 0)?;
        }
    }
    {
        let mut comms: BpfHashMap<_, [u8; 16], u8> = BpfHashMap::try_from(
            ebpf.map_mut("FILTER_COMMS")
                .context("FILTER_COMMS missing")?,
        )?;
        for e in &f.exes {
            comms.insert(comm_key(e), 1, 0)?;
        }
    }
    let mut ports: BpfHashMap<_, u16, u8> = BpfHashMap::try_from(
        ebpf.map_mut("FILTER_PORTS")
            .context("FILTER_PORTS missing")?,
    )?;
    for p in &f.ports {
        ports.insert(p, 1, 0)?;
    }
    Ok(())
}

/// The kernel's task comm: at most 15 bytes, NUL-padded.
pub fn comm_key(exe: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    for (d, s) in k.iter_mut().zip(exe.bytes().take(15)) {
        *d = s;
    }
    k
}

fn possible_cpus() -> Result<u32> {
    let n = aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .context("reading possible CPUs")?;
    Ok(n as u32)
}

fn bump_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // Kernels >= 5.11 account BPF memory to cgroups and ignore this; older ones need it.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}
