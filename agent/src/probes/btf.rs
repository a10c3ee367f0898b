//! Kernel struct field offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux), handed
//! to the kernel programs as globals: Rust eBPF has no CO-RE relocations, and hard-coding one
//! kernel's layout would break on the next.

use std::path::Path;

use agent_common::KernelOffsets;
use btf_rs::{Btf, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strct} has no field {field}")]
    NoField { strct: String, field: String },
    #[error("kernel BTF: {0}")]
    Other(String),
}

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// Byte offset of `field` in `struct strct`, looking through anonymous struct/union members
    /// (e.g. `sock_common.skc_daddr` sits in an anonymous union inside an anonymous struct).
    pub fn offset_of(&self, strct: &str, field: &str) -> Result<u32, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(strct)
            .map_err(|_| BtfError::NoStruct(strct.into()))?;
        let s = types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct(strct.into()))?;
        self.find_in(&s, field, 0)?
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoField {
                strct: strct.into(),
                field: field.into(),
            })
    }

    fn find_in(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        depth: u32,
    ) -> Result<Option<u32>, BtfError> {
        if depth > 8 {
            return Ok(None);
        }
        for m in &s.members {
            let name = self
                .btf
                .resolve_name(m)
                .map_err(|e| BtfError::Other(e.to_string()))?;
            if name == field {
                return Ok(Some(m.bit_offset()));
            }
            if name.is_empty()
                && let Some(inner) = self.struct_of_member(m)?
                && let Some(off) = self.find_in(&inner, field, depth + 1)?
            {
                return Ok(Some(m.bit_offset() + off));
            }
        }
        Ok(None)
    }

    /// The struct/union type of a member, through typedefs and qualifiers.
    fn struct_of_member(&self, m: &btf_rs::Member) -> Result<Option<btf_rs::Struct>, BtfError> {
        let mut t = self
            .btf
            .resolve_chained_type(m)
            .map_err(|e| BtfError::Other(e.to_string()))?;
        for _ in 0..8 {
            match t {
                Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => {
                    let Some(bt) = t.as_btf_type() else {
                        return Ok(None);
                    };
                    t = self
                        .btf
                        .resolve_chained_type(bt)
                        .map_err(|e| BtfError::Other(e.to_string()))?;
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Whether `struct pt_regs` holds the first three syscall arguments where the exit-only
    /// read programs load them (x86_64 layout; any other layout or a missing field: no).
    pub fn syscall_args_in_regs(&self) -> bool {
        let at = |f: &str| self.offset_of("pt_regs", f).ok();
        [at("di"), at("si"), at("dx")] == agent_common::PT_REGS_ARGS.map(Some)
    }

    /// The registers the `raw_syscalls` dispatch reads besides the arguments
    /// ([`Self::syscall_args_in_regs`]): the syscall number and the code segment.
    pub fn syscall_dispatch_regs(&self) -> bool {
        let at = |f: &str| self.offset_of("pt_regs", f).ok();
        at("orig_ax") == Some(agent_common::PT_REGS_ORIG_AX)
            && at("cs") == Some(agent_common::PT_REGS_CS)
    }

    /// Every offset the kernel programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_files: self.offset_of("task_struct", "files")?,
            files_fdt: self.offset_of("files_struct", "fdt")?,
            fdt_max_fds: self.offset_of("fdtable", "max_fds")?,
            fdt_fd: self.offset_of("fdtable", "fd")?,
            file_inode: self.offset_of("file", "f_inode")?,
            file_private_data: self.offset_of("file", "private_data")?,
            inode_mode: self.offset_of("inode", "i_mode")?,
            inode_ino: self.offset_of("inode", "i_ino")?,
            socket_type: self.offset_of("socket", "type")?,
            socket_sk: self.offset_of("socket", "sk")?,
            sk_daddr: self.offset_of("sock_common", "skc_daddr")?,
            sk_rcv_saddr: self.offset_of("sock_common", "skc_rcv_saddr")?,
            sk_dport: self.offset_of("sock_common", "skc_dport")?,
            sk_num: self.offset_of("sock_common", "skc_num")?,
            sk_family: self.offset_of("sock_common", "skc_family")?,
            sk_v6_daddr: self.offset_of("sock_common", "skc_v6_daddr")?,
            sk_v6_rcv_saddr: self.offset_of("sock_common", "skc_v6_rcv_saddr")?,
            // Only the socket tracepoints need it; kernels whose `sk_type` is a bitfield
            // (before 5.6) have no such tracepoints either.
            sk_type: self.offset_of("sock", "sk_type").unwrap_or(0),
            unix_addr: self.offset_of("unix_sock", "addr").unwrap_or(0),
            unix_peer: self.offset_of("unix_sock", "peer").unwrap_or(0),
            // Tracepoint record offsets come from tracefs, filled in by the loader.
            tp_newtask_pid: 0,
            tp_newtask_clone_flags: 0,
            tp_sock_state_skaddr: 0,
            tp_sock_state_newstate: 0,
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's BTF; the figures differ per kernel, so assert relations that hold on
    /// every 64-bit kernel rather than numbers.
    #[test]
    fn offsets_from_running_kernel() {
        let p = Path::new(VMLINUX_BTF);
        if !p.exists() {
            eprintln!("skipping: {VMLINUX_BTF} absent");
            return;
        }
        let k = KernelBtf::load(p).expect("load btf");
        let o = k.kernel_offsets().expect("offsets");
        // struct sock starts with struct sock_common; skc_daddr/skc_rcv_saddr are its first fields.
        assert_eq!(o.sk_daddr, 0);
        assert_eq!(o.sk_rcv_saddr, 4);
        assert_eq!(o.sk_dport + 2, o.sk_num);
        assert!(o.task_files > 0 && o.file_private_data > 0 && o.socket_sk > 0);
        #[cfg(target_arch = "x86_64")]
        assert!(k.syscall_args_in_regs() && k.syscall_dispatch_regs());
        assert!(matches!(
            k.offset_of("sock_common", "no_such_field"),
            Err(BtfError::NoField { .. })
        ));
    }
}
