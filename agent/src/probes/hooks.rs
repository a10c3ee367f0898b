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

/// Every hook, all required: tracepoints exist on every kernel since 4.x with
/// CONFIG_FTRACE_SYSCALLS; kprobes/fentry are not needed.
pub static HOOKS: &[Hook] = &[
    sc!("tw_enter_read", "sys_enter_read", "socket reads"),
    sc!("tw_exit_data", "sys_exit_read", "socket reads"),
    sc!("tw_enter_write", "sys_enter_write", "socket writes"),
    sc!("tw_exit_data", "sys_exit_write", "socket writes"),
    sc!("tw_enter_recvfrom", "sys_enter_recvfrom", "recv/recvfrom"),
    sc!("tw_exit_data", "sys_exit_recvfrom", "recv/recvfrom"),
    sc!("tw_enter_sendto", "sys_enter_sendto", "send/sendto"),
    sc!("tw_exit_data", "sys_exit_sendto", "send/sendto"),
    sc!("tw_enter_readv", "sys_enter_readv", "vectored reads"),
    sc!("tw_exit_data", "sys_exit_readv", "vectored reads"),
    sc!("tw_enter_writev", "sys_enter_writev", "vectored writes"),
    sc!("tw_exit_data", "sys_exit_writev", "vectored writes"),
    sc!("tw_enter_recvmsg", "sys_enter_recvmsg", "recvmsg"),
    sc!("tw_exit_data", "sys_exit_recvmsg", "recvmsg"),
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
    Hook {
        program: "tw_sock_state",
        category: "sock",
        name: "inet_sock_set_state",
        purpose: "TCP close without close() (process exit)",
    },
];

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
