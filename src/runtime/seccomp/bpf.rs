//! Compiling a resolved profile to a BPF program (with libseccomp, which
//! defines the OCI profile semantics: runc, crun and containerd's
//! profiles are written against it) and installing the program.
//!
//! The program is compiled ahead — libseccomp allocates — and exported as
//! raw BPF; [`Filter::install`] is a single `seccomp(2)` call that neither
//! allocates nor sets no_new_privs, so it can run in a `pre_exec` closure
//! or the container's init right before `execve`, and a container whose
//! config keeps `no_new_privs` false still gets its setuid binaries.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use nix::sys::memfd::{MFdFlags, memfd_create};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag as Flag};
use oci_spec::runtime::{LinuxSeccompArg, LinuxSeccompOperator as Op};

use super::Error;
use super::profile::{check_syscall, scmp_arch};

/// A compiled seccomp filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    len: u16,
    flags: libc::c_ulong,
}

/// The kernel's limit on the length of one filter (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, Error> {
    let errno = errno.unwrap_or(libc::EPERM as u32);
    // The kernel hands back at most MAX_ERRNO.
    let data = u16::try_from(errno)
        .ok()
        .filter(|e| *e <= 4095)
        .ok_or_else(|| Error::Invalid(format!("errnoRet {errno} is past 4095")))?;
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(data)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(data),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::UnsupportedAction("SCMP_ACT_NOTIFY".to_string()));
        }
    })
}

fn compare(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, Error> {
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| Error::Invalid(format!("argument index {} is past 5", arg.index())))?;
    let (op, datum) = match arg.op() {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // OCI: `value` is the mask, `valueTwo` what the masked bits equal.
        Op::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(index, op, datum))
}

fn libseccomp(what: String) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    move |source| Error::Compile { what, source }
}

/// Compiles a resolved profile (the spec's `linux.seccomp`).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter, Error> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx =
        ScmpFilterContext::new(default).map_err(libseccomp("the default action".into()))?;
    for arch in seccomp.architectures().iter().flatten() {
        let arch = scmp_arch(arch)?;
        let present = ctx
            .is_arch_present(arch)
            .map_err(libseccomp(format!("architecture {arch:?}")))?;
        if !present {
            ctx.add_arch(arch)
                .map_err(libseccomp(format!("architecture {arch:?}")))?;
        }
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses rules that repeat the default.
        if act == default {
            continue;
        }
        let args = rule.args().as_deref().unwrap_or_default();
        let conditions: Vec<ScmpArgCompare> = args.iter().map(compare).collect::<Result<_, _>>()?;
        // Conditions on distinct arguments must all hold; several on the
        // same argument are alternatives, each its own rule.
        let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let rule_sets: Vec<&[ScmpArgCompare]> = if indexes.len() == args.len() {
            vec![&conditions[..]]
        } else {
            conditions.chunks(1).collect()
        };
        for name in rule.names() {
            let syscall = check_syscall(name)?;
            for set in &rule_sets {
                ctx.add_rule_conditional(act, syscall, set)
                    .map_err(libseccomp(format!("the rule for {name}")))?;
            }
        }
    }
    let mut flags: libc::c_ulong = 0;
    for flag in seccomp.flags().iter().flatten() {
        flags |= match flag {
            Flag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            Flag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            // One thread at exec: nothing to synchronise.
            Flag::SeccompFilterFlagTsync => 0,
        };
    }
    let program = export(&ctx)?;
    let len = u16::try_from(program.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_INSNS)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the filter has {} instructions, the kernel takes {MAX_INSNS}",
                program.len()
            ))
        })?;
    Ok(Filter {
        program,
        len,
        flags,
    })
}

/// The raw BPF of a filter context.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, Error> {
    let fd: OwnedFd = memfd_create("yonggi-seccomp", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::Export(e.into()))?;
    ctx.export_bpf(fd.as_fd())
        .map_err(libseccomp("exporting BPF".into()))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(Error::Export)?;
    let insn = std::mem::size_of::<libc::sock_filter>();
    if bytes.len() % insn != 0 || bytes.is_empty() {
        return Err(Error::Export(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes of BPF", bytes.len()),
        )));
    }
    Ok(bytes
        .chunks_exact(insn)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

impl Filter {
    /// The number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Installs the filter on the calling thread (inherited by its
    /// children and kept across `execve`). Needs no_new_privs or
    /// CAP_SYS_ADMIN. Does not allocate.
    pub fn install(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.len,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, `len` instructions long
        // and alive for the whole call; the kernel copies the program and
        // only reads through the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
