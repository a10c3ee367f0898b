//! The hooks the agent uses and whether this kernel offers them.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub struct Hook {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    pub purpose: &'static str,
}

macro_rules! sc {
    ($prog:literal, $name:literal, $purpose:literal) => {
        Hook {
            program: $prog,
            category: "syscalls",
            name: $name,
            purpose: $purpose,
        }
    };
}

/// Every hook of the syscall-tracepoint modes (where the kernel lacks the socket tracepoints,
/// or asked for), all required there: tracepoints exist on every kernel since 4.x with
/// CONFIG_FTRACE_SYSCALLS; kprobes/fentry are not needed. The reads add one of
/// [`READ_HOOKS_EXIT_ONLY`] or [`READ_HOOKS_ENTRY_EXIT`]. See [`required`].
pub static HOOKS: &[Hook] = &[
    sc!("tw_enter_write", "sys_enter_write", "socket writes"),
    sc!("tw_exit_data", "sys_exit_write", "socket writes"),
    sc!("tw_enter_sendto", "sys_enter_sendto", "send/sendto"),
    sc!("tw_exit_data", "sys_exit_sendto", "send/sendto"),
    sc!("tw_enter_writev", "sys_enter_writev", "vectored writes"),
    sc!("tw_exit_data", "sys_exit_writev", "vectored writes"),
    sc!("tw_enter_sendmsg", "sys_enter_sendmsg", "sendmsg"),
    sc!("tw_exit_data", "sys_exit_sendmsg", "sendmsg"),
    sc!(
        "tw_enter_sendfile",
        "sys_enter_sendfile64",
        "sendfile (byte count only)"
    ),
    sc!(
        "tw_exit_data",
        "sys_exit_sendfile64",
        "sendfile (byte count only)"
    ),
    sc!(
        "tw_enter_connect",
        "sys_enter_connect",
        "client connections"
    ),
    sc!("tw_exit_connect", "sys_exit_connect", "client connections"),
    sc!("tw_exit_accept", "sys_exit_accept", "server connections"),
    sc!("tw_exit_accept", "sys_exit_accept4", "server connections"),
    sc!("tw_enter_close", "sys_enter_close", "connection close"),
    sc!(
        "tw_fd_table_changed",
        "sys_exit_dup2",
        "fd cache: fd replaced"
    ),
    sc!(
        "tw_fd_table_changed",
        "sys_exit_dup3",
        "fd cache: fd replaced"
    ),
    sc!(
        "tw_fd_table_changed",
        "sys_exit_close_range",
        "fd cache: fds closed"
    ),
    sc!(
        "tw_fd_table_changed",
        "sys_exit_unshare",
        "fd cache: fd table unshared"
    ),
    Hook {
        program: "tw_fd_table_changed",
        category: "sched",
        name: "sched_process_exec",
        purpose: "fd cache: close-on-exec fds",
    },
    Hook {
        program: "tw_new_task",
        category: "task",
        name: "task_newtask",
        purpose: "fd cache: a new process has its own fd table",
    },
    Hook {
        program: "tw_sock_state",
        category: "sock",
        name: "inet_sock_set_state",
        purpose: "TCP close without close() (process exit)",
    },
];

/// The `raw_syscalls` tracepoints the dispatch (`--raw-syscalls`) attaches to instead of the
/// `syscalls:*` hooks (BTF-typed programs, kernel 5.5+, x86_64 register layout checked
/// against BTF).
pub static RAW_SYSCALL_HOOKS: &[Hook] = &[
    Hook {
        program: "tw_sys_enter",
        category: "raw_syscalls",
        name: "sys_enter",
        purpose: "entries of the traced syscalls, dispatched by number",
    },
    Hook {
        program: "tw_sys_exit",
        category: "raw_syscalls",
        name: "sys_exit",
        purpose: "exits of the traced syscalls, dispatched by number",
    },
];

/// The socket tracepoints (the default where the kernel has them, 6.3+): BTF-typed programs
/// on the send and receive of every socket, and on TCP state changes; no syscall tracepoint.
pub static SOCKET_HOOKS: &[Hook] = &[
    Hook {
        program: "tw_sock_send",
        category: "sock",
        name: "sock_send_length",
        purpose: "socket sends (any syscall), after the bytes moved",
    },
    Hook {
        program: "tw_sock_recv",
        category: "sock",
        name: "sock_recv_length",
        purpose: "socket receives (any syscall), with the bytes in user memory",
    },
    Hook {
        program: "tw_sock_state_btf",
        category: "sock",
        name: "inet_sock_set_state",
        purpose: "TCP connections established (role) and closed",
    },
];

/// The BTF-typed program that returns at once in place of each of [`SOCKET_HOOKS`] and
/// [`RAW_SYSCALL_HOOKS`] (hooks-only).
pub fn null_btf_program(hook: &Hook) -> &'static str {
    match hook.name {
        "sock_send_length" => "tw_null_sock_send",
        "sock_recv_length" => "tw_null_sock_recv",
        "inet_sock_set_state" => "tw_null_sock_state",
        "sys_enter" => "tw_null_sys_enter",
        _ => "tw_null_sys_exit",
    }
}

/// What the dispatch does with each syscall number of this architecture.
#[cfg(target_arch = "x86_64")]
pub static SYSCALL_ACTIONS: &[(i64, u8)] = {
    use agent_common::action as a;
    &[
        (libc::SYS_read, a::READ),
        (libc::SYS_write, a::WRITE),
        (libc::SYS_recvfrom, a::RECVFROM),
        (libc::SYS_sendto, a::SENDTO),
        (libc::SYS_recvmsg, a::RECVMSG),
        (libc::SYS_sendmsg, a::SENDMSG),
        (libc::SYS_readv, a::READV),
        (libc::SYS_writev, a::WRITEV),
        (libc::SYS_sendfile, a::SENDFILE),
        (libc::SYS_connect, a::CONNECT),
        (libc::SYS_accept, a::ACCEPT),
        (libc::SYS_accept4, a::ACCEPT),
        (libc::SYS_close, a::CLOSE),
        (libc::SYS_dup2, a::FD_TABLE_CHANGED),
        (libc::SYS_dup3, a::FD_TABLE_CHANGED),
        (libc::SYS_close_range, a::FD_TABLE_CHANGED),
        (libc::SYS_unshare, a::FD_TABLE_CHANGED),
        (libc::SYS_io_uring_enter, a::FD_TABLE_CHANGED),
    ]
};

/// Elsewhere the dispatch is not used (its register offsets are x86_64's).
#[cfg(not(target_arch = "x86_64"))]
pub static SYSCALL_ACTIONS: &[(i64, u8)] = &[];

/// read/recv seen at their exit only, their arguments read back from the saved user registers
/// (`bpf_task_pt_regs`, kernel 5.15+, x86_64 register layout checked against BTF): one program
/// run per read instead of two, and no socket lookup for failed reads.
pub static READ_HOOKS_EXIT_ONLY: &[Hook] = &[
    sc!("tw_exit_read", "sys_exit_read", "socket reads"),
    sc!("tw_exit_recvfrom", "sys_exit_recvfrom", "recv/recvfrom"),
    sc!("tw_exit_readv", "sys_exit_readv", "vectored reads"),
    sc!("tw_exit_recvmsg", "sys_exit_recvmsg", "recvmsg"),
];

/// read/recv seen at entry (arguments) and exit (result): where the registers cannot be used.
pub static READ_HOOKS_ENTRY_EXIT: &[Hook] = &[
    sc!("tw_enter_read", "sys_enter_read", "socket reads"),
    sc!("tw_exit_data", "sys_exit_read", "socket reads"),
    sc!("tw_enter_recvfrom", "sys_enter_recvfrom", "recv/recvfrom"),
    sc!("tw_exit_data", "sys_exit_recvfrom", "recv/recvfrom"),
    sc!("tw_enter_readv", "sys_enter_readv", "vectored reads"),
    sc!("tw_exit_data", "sys_exit_readv", "vectored reads"),
    sc!("tw_enter_recvmsg", "sys_enter_recvmsg", "recvmsg"),
    sc!("tw_exit_data", "sys_exit_recvmsg", "recvmsg"),
];

/// The read hooks for one way of seeing reads.
pub fn read_hooks(exit_only: bool) -> &'static [Hook] {
    if exit_only {
        READ_HOOKS_EXIT_ONLY
    } else {
        READ_HOOKS_ENTRY_EXIT
    }
}

/// Hooks attached when the kernel has them: without io_uring no fd can be closed behind the
/// syscalls the agent sees, so nothing is lost when this one is missing.
pub static OPTIONAL_HOOKS: &[Hook] = &[sc!(
    "tw_fd_table_changed",
    "sys_exit_io_uring_enter",
    "fd cache: io_uring may close fds without close()"
)];

/// Whether `tracewire run` cannot do without hook `h` (of [`HOOKS`] and
/// [`READ_HOOKS_ENTRY_EXIT`]). With the socket tracepoints present (`sockets_present`) the
/// per-syscall tracepoints serve only `--syscall-tracepoints`, `--raw-syscalls` (which falls
/// back to them) and reads at entry: a kernel built without CONFIG_FTRACE_SYSCALLS still runs
/// the default.
pub fn required(h: &Hook, sockets_present: bool) -> bool {
    !(sockets_present && h.category == "syscalls")
}

/// Whether the kernel (tracefs at `root`) has every socket tracepoint the default uses.
pub fn sockets_present(root: &Path) -> bool {
    SOCKET_HOOKS
        .iter()
        .all(|h| hook_status(root, h) == HookStatus::Available)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStatus {
    Available,
    Missing(String),
}

const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

pub fn tracefs_root() -> Option<PathBuf> {
    TRACEFS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Mounts tracefs when it is not mounted and we are allowed to (aya attaches tracepoints by id
/// read from tracefs).
pub fn ensure_tracefs() -> Result<PathBuf> {
    if let Some(p) = tracefs_root() {
        return Ok(p);
    }
    let target = Path::new(TRACEFS[0]);
    let src = c"nodev";
    let fstype = c"tracefs";
    let tgt = std::ffi::CString::new(TRACEFS[0])?;
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and mounting it at {} failed ({}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    tracefs_root().ok_or_else(|| anyhow::anyhow!("tracefs mounted but has no events directory"))
}

pub fn hook_status(root: &Path, hook: &Hook) -> HookStatus {
    let p = root.join("events").join(hook.category).join(hook.name);
    if p.join("id").exists() {
        HookStatus::Available
    } else {
        HookStatus::Missing(format!("{} not found", p.display()))
    }
}

/// Offset of `field` in the records of tracepoint `category:name`, from its tracefs `format`
/// file (a stable ABI: the programs read records at these offsets, not at hard-coded ones).
pub fn tracepoint_field_offset(
    root: &Path,
    category: &str,
    name: &str,
    field: &str,
) -> Result<u32> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    parse_field_offset(&text, field)
        .ok_or_else(|| anyhow::anyhow!("{}: no field `{field}`", path.display()))
}

/// `field:<type> <name>[...];\toffset:<n>;` lines of a tracefs format file.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod format_tests {
    use super::parse_field_offset;

    const NEWTASK: &str = "name: task_newtask\nID: 205\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n";

    #[test]
    fn offsets_from_a_format_file() {
        assert_eq!(parse_field_offset(NEWTASK, "pid"), Some(8));
        assert_eq!(parse_field_offset(NEWTASK, "clone_flags"), Some(32));
        assert_eq!(parse_field_offset(NEWTASK, "comm"), Some(12));
        assert_eq!(parse_field_offset(NEWTASK, "common_pid"), Some(4));
        assert_eq!(parse_field_offset(NEWTASK, "nope"), None);
    }

    #[test]
    fn offsets_on_this_kernel() {
        let Some(root) = super::tracefs_root() else {
            return;
        };
        let off = |c: &str, n: &str, f: &str| super::tracepoint_field_offset(&root, c, n, f).ok();
        if off("task", "task_newtask", "pid").is_none() {
            return; // tracefs not readable here
        }
        assert_eq!(off("task", "task_newtask", "pid"), Some(8));
        assert!(off("task", "task_newtask", "clone_flags").is_some());
        assert!(off("sock", "inet_sock_set_state", "skaddr").is_some());
        assert!(off("sock", "inet_sock_set_state", "newstate").is_some());
    }
}

#[cfg(test)]
mod dispatch_table_tests {
    use super::SYSCALL_ACTIONS;
    use agent_common::{SYSCALL_TABLE, action};

    /// Every syscall the per-syscall tracepoints hook has its number in the dispatch table,
    /// once, inside the table's bounds.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_dispatch_table_covers_the_hooked_syscalls_once() {
        let t = SYSCALL_ACTIONS;
        let mut nrs: Vec<i64> = t.iter().map(|(nr, _)| *nr).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), t.len(), "a syscall number twice");
        assert!(
            t.iter()
                .all(|(nr, a)| (0..SYSCALL_TABLE as i64).contains(nr) && *a != action::NONE)
        );
        let of = |nr: i64| t.iter().find(|(n, _)| *n == nr).map(|(_, a)| *a);
        assert_eq!(of(libc::SYS_write), Some(action::WRITE));
        assert_eq!(of(libc::SYS_recvmsg), Some(action::RECVMSG));
        assert_eq!(of(libc::SYS_accept4), Some(action::ACCEPT));
        assert_eq!(of(libc::SYS_getppid), None);
        // As many data/lifecycle syscalls as the per-syscall hook list names (io_uring_enter
        // is optional there).
        let per_syscall: std::collections::BTreeSet<&str> = super::HOOKS
            .iter()
            .chain(super::READ_HOOKS_ENTRY_EXIT)
            .chain(super::OPTIONAL_HOOKS)
            .filter(|h| h.category == "syscalls")
            .map(|h| {
                h.name
                    .trim_start_matches("sys_enter_")
                    .trim_start_matches("sys_exit_")
            })
            .collect();
        assert_eq!(per_syscall.len(), t.len(), "{per_syscall:?}");
    }
}

#[cfg(test)]
mod required_tests {
    use super::*;

    /// Without syscall tracepoints the default (socket tracepoints) still runs; the other
    /// tracepoints are needed either way, and without the socket ones everything is.
    #[test]
    fn syscall_tracepoints_are_required_only_without_the_socket_ones() {
        let all = || HOOKS.iter().chain(READ_HOOKS_ENTRY_EXIT);
        let still: Vec<&str> = all()
            .filter(|h| required(h, true))
            .map(|h| h.name)
            .collect();
        assert_eq!(
            still,
            ["sched_process_exec", "task_newtask", "inet_sock_set_state"]
        );
        assert!(all().all(|h| required(h, false)));
    }
}
