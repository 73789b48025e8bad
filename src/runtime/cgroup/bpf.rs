//! Device rules on cgroup v2: the kernel asks an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the cgroup, for every device
//! open and mknod. yonggi compiles the rule list into such a program (a
//! straight chain of compares, no maps, no helpers), loads it and attaches
//! it, replacing the one attached before.
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32
//! major; u32 minor; }` with `access_type = access << 16 | type` (type:
//! block 1, char 2; access: mknod 1, read 2, write 4), and returns 1 to
//! allow, 0 to deny.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::devices::{DeviceKind, DeviceRule};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One eBPF instruction, `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const AND64_IMM: u8 = 0x57;
const RSH64_IMM: u8 = 0x77;
const JEQ_IMM: u8 = 0x15;
const JNE_IMM: u8 = 0x55;
const EXIT: u8 = 0x95;

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// A jump to the end of the current rule's block, patched once the block
/// length is known.
const SKIP: i16 = i16::MIN;

/// Compiles `rules` (v1 semantics: later rules win, unmatched is allowed).
/// Registers: r2 access, r3 type, r4 major, r5 minor, r1 scratch.
pub(crate) fn compile(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        ins(LDX_MEM_W, 2, 1, 0, 0),
        ins(LDX_MEM_W, 4, 1, 4, 0),
        ins(LDX_MEM_W, 5, 1, 8, 0),
        ins(MOV64_REG, 3, 2, 0, 0),
        ins(AND64_IMM, 3, 0, 0, 0xffff),
        ins(RSH64_IMM, 2, 0, 0, 16),
    ];
    // Last rule first: the first one that matches decides.
    for rule in rules.iter().rev() {
        let mut block = Vec::new();
        match rule.kind {
            DeviceKind::All => {}
            DeviceKind::Block => block.push(ins(JNE_IMM, 3, 0, SKIP, 1)),
            DeviceKind::Char => block.push(ins(JNE_IMM, 3, 0, SKIP, 2)),
        }
        let acc = i32::from(rule.access.bits());
        if acc != 7 {
            block.push(ins(MOV64_REG, 1, 2, 0, 0));
            if rule.allow {
                // Allows only when every requested access is granted.
                block.push(ins(AND64_IMM, 1, 0, 0, !acc & 7));
                block.push(ins(JNE_IMM, 1, 0, SKIP, 0));
            } else {
                // Denies when any requested access is denied.
                block.push(ins(AND64_IMM, 1, 0, 0, acc));
                block.push(ins(JEQ_IMM, 1, 0, SKIP, 0));
            }
        }
        for (reg, n) in [(4, rule.major), (5, rule.minor)] {
            if let Some(n) = n {
                // Device numbers are below 2^20 (checked on conversion).
                block.push(ins(
                    JNE_IMM,
                    reg,
                    0,
                    SKIP,
                    i32::try_from(n).unwrap_or(i32::MAX),
                ));
            }
        }
        block.push(ins(MOV64_IMM, 0, 0, 0, i32::from(rule.allow)));
        block.push(ins(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.off == SKIP {
                // Blocks are a handful of instructions.
                insn.off = i16::try_from(len - i - 1).unwrap_or(0);
            }
        }
        let unconditional = len == 2;
        prog.extend(block);
        if unconditional {
            // Matches everything: earlier rules can never decide, and the
            // verifier refuses unreachable instructions.
            return prog;
        }
    }
    prog.push(ins(MOV64_IMM, 0, 0, 0, 1));
    prog.push(ins(EXIT, 0, 0, 0, 0));
    prog
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for attach and detach.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Runs `bpf(cmd, attr)`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of `union
    // bpf_attr` for `cmd`, and its size is passed along; the kernel reads
    // (and for queries writes) at most that many bytes. Pointers inside it
    // point to buffers the caller keeps alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_from(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads the program; on failure the verifier's log is in the error.
fn load(prog: &[Insn]) -> io::Result<OwnedFd> {
    let license = b"Apache-2.0\0";
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..7].copy_from_slice(b"yonggi\0");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(rc) => fd_from(rc),
        Err(first) => {
            let mut log = vec![0u8; 1 << 16];
            attr.log_level = 1;
            attr.log_size = u32::try_from(log.len()).unwrap_or(0);
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(
                first.kind(),
                format!("{first}: {}", text.trim()),
            ))
        }
    }
}

/// Ids of the device programs attached directly to the cgroup.
fn attached(cgroup: &OwnedFd) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: 64,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(usize::try_from(attr.prog_cnt).unwrap_or(0).min(64));
    Ok(ids)
}

/// Replaces the device program of the cgroup at `dir` with one for `rules`.
/// The new program is attached before the old ones are detached: the
/// kernel requires every attached program to allow, so in between the
/// stricter of the two holds, never neither.
pub(crate) fn install(dir: &Path, rules: &[DeviceRule]) -> io::Result<()> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    // An O_PATH descriptor will not do: the bpf calls want an open file.
    let cgroup = open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let old = attached(&cgroup)?;
    let prog = load(&compile(rules))?;
    let raw = |fd: &OwnedFd| u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX);
    let mut attr = AttachAttr {
        target_fd: raw(&cgroup),
        attach_bpf_fd: raw(&prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)?;
    for id in old {
        let mut get = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let old_prog = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
            Ok(rc) => fd_from(rc)?,
            // Detached meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let mut detach = AttachAttr {
            target_fd: raw(&cgroup),
            attach_bpf_fd: raw(&old_prog),
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut detach)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cgroup::devices::{Access, default_device_rules};

    #[test]
    fn compiles_rules_last_first_with_patched_jumps() {
        let rules = [
            DeviceRule {
                allow: false,
                kind: DeviceKind::All,
                major: None,
                minor: None,
                access: Access::ALL,
            },
            DeviceRule {
                allow: true,
                kind: DeviceKind::Char,
                major: Some(1),
                minor: Some(3),
                access: Access::parse("rw").expect("access"),
            },
        ];
        let prog = compile(&rules);
        let expected = vec![
            // Prologue.
            ins(LDX_MEM_W, 2, 1, 0, 0),
            ins(LDX_MEM_W, 4, 1, 4, 0),
            ins(LDX_MEM_W, 5, 1, 8, 0),
            ins(MOV64_REG, 3, 2, 0, 0),
            ins(AND64_IMM, 3, 0, 0, 0xffff),
            ins(RSH64_IMM, 2, 0, 0, 16),
            // allow c 1:3 rw
            ins(JNE_IMM, 3, 0, 7, 2),
            ins(MOV64_REG, 1, 2, 0, 0),
            ins(AND64_IMM, 1, 0, 0, 1),
            ins(JNE_IMM, 1, 0, 4, 0),
            ins(JNE_IMM, 4, 0, 3, 1),
            ins(JNE_IMM, 5, 0, 2, 3),
            ins(MOV64_IMM, 0, 0, 0, 1),
            ins(EXIT, 0, 0, 0, 0),
            // deny a *:* rwm, which ends the program.
            ins(MOV64_IMM, 0, 0, 0, 0),
            ins(EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(prog, expected);
        // No rules: the prologue, then "allow".
        let empty = compile(&[]);
        assert_eq!(empty.len(), 8);
        assert_eq!(
            empty[6..],
            [ins(MOV64_IMM, 0, 0, 0, 1), ins(EXIT, 0, 0, 0, 0)]
        );
        // Every jump lands inside the program.
        let prog = compile(&default_device_rules());
        for (i, insn) in prog.iter().enumerate() {
            if insn.code == JNE_IMM || insn.code == JEQ_IMM {
                let target = i as i64 + 1 + i64::from(insn.off);
                assert!(target < prog.len() as i64 && insn.off > 0, "jump at {i}");
            }
        }
    }
}
