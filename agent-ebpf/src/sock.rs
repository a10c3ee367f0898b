//! fd -> socket resolution by walking task -> files -> fdtable -> file -> socket -> sock with
//! offsets userspace read from BTF. Non-socket fds and non-stream sockets are rejected here, in
//! the kernel, before anything is stored or copied.

use agent_common::{AF_INET, AF_INET6, AF_UNIX, ConnEvent, KernelOffsets};
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;

#[derive(Clone, Copy)]
pub struct SockRef {
    /// The `struct sock` address, for reading its fields.
    pub sk: u64,
    /// The socket's key in SAMPLE_ALLOW (and CONNS with the syscall hooks), and its `sock` in
    /// events: its address where close() tells when the address may be reused (syscall
    /// hooks), its cookie, never reused, where only the socket tracepoints are attached.
    pub key: u64,
    pub family: u16,
    pub inode: u64,
}

/// The kernel value of type `T` at `base + off`.
#[inline(always)]
pub unsafe fn rd<T>(base: u64, off: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// What the fd walk found.
pub enum Walk {
    Sock(SockRef),
    /// An open fd that is not a stream socket we trace: stays so until the fd is closed or
    /// replaced, so the answer can be cached.
    NotTraced,
    /// Not an open fd (or unreadable): nothing to cache.
    Unknown,
}

/// The stream socket behind `fd` of the current task, if it is one we trace.
#[inline(always)]
pub fn walk(o: &KernelOffsets, fd: u64) -> Walk {
    if o.valid == 0 || fd > i32::MAX as u64 {
        return Walk::Unknown;
    }
    let Some(file) = file_of_fd(o, fd) else {
        return Walk::Unknown;
    };
    match sock_of_file(o, file) {
        Some(s) => Walk::Sock(s),
        None => Walk::NotTraced,
    }
}

#[inline(always)]
fn file_of_fd(o: &KernelOffsets, fd: u64) -> Option<u64> {
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = rd(task, o.task_files)?;
        let fdt: u64 = rd(files, o.files_fdt)?;
        let max_fds: u32 = rd(fdt, o.fdt_max_fds)?;
        if fd >= max_fds as u64 {
            return None;
        }
        let fd_array: u64 = rd(fdt, o.fdt_fd)?;
        let file: u64 = bpf_probe_read_kernel((fd_array + fd * 8) as *const u64).ok()?;
        (file != 0).then_some(file)
    }
}

#[inline(always)]
fn sock_of_file(o: &KernelOffsets, file: u64) -> Option<SockRef> {
    unsafe {
        let inode: u64 = rd(file, o.file_inode)?;
        let mode: u16 = rd(inode, o.inode_mode)?;
        if mode & S_IFMT != S_IFSOCK {
            return None;
        }
        let socket: u64 = rd(file, o.file_private_data)?;
        let stype: u16 = rd(socket, o.socket_type)?;
        if stype != SOCK_STREAM {
            return None;
        }
        let sk: u64 = rd(socket, o.socket_sk)?;
        if sk == 0 {
            return None;
        }
        let family: u16 = rd(sk, o.sk_family)?;
        if family != AF_INET && family != AF_INET6 && family != AF_UNIX {
            return None;
        }
        let ino: u64 = if family == AF_UNIX {
            rd(inode, o.inode_ino).unwrap_or(0)
        } else {
            0
        };
        Some(SockRef {
            sk,
            key: sk,
            family,
            inode: ino,
        })
    }
}

/// Local and remote address/port of an inet socket, into a connection event.
#[inline(always)]
pub fn fill_tuple(o: &KernelOffsets, s: &SockRef, ev: &mut ConnEvent) {
    ev.family = s.family;
    ev.inode = s.inode;
    if s.family == AF_UNIX {
        return;
    }
    unsafe {
        ev.local_port = rd::<u16>(s.sk, o.sk_num).unwrap_or(0);
        ev.remote_port = u16::from_be(rd::<u16>(s.sk, o.sk_dport).unwrap_or(0));
        if s.family == AF_INET {
            let l: [u8; 4] = rd(s.sk, o.sk_rcv_saddr).unwrap_or([0; 4]);
            let r: [u8; 4] = rd(s.sk, o.sk_daddr).unwrap_or([0; 4]);
            ev.local_addr[..4].copy_from_slice(&l);
            ev.remote_addr[..4].copy_from_slice(&r);
        } else {
            ev.local_addr = rd(s.sk, o.sk_v6_rcv_saddr).unwrap_or([0; 16]);
            ev.remote_addr = rd(s.sk, o.sk_v6_daddr).unwrap_or([0; 16]);
        }
    }
}

/// Local and remote port only (for the port filter).
#[inline(always)]
pub fn ports(o: &KernelOffsets, s: &SockRef) -> (u16, u16) {
    if s.family == AF_UNIX {
        return (0, 0);
    }
    unsafe {
        (
            rd::<u16>(s.sk, o.sk_num).unwrap_or(0),
            u16::from_be(rd::<u16>(s.sk, o.sk_dport).unwrap_or(0)),
        )
    }
}
