//! Seccomp profiles in the JSON format of the OCI runtime spec, with the
//! extensions of Docker's and containerd's profile files that make one
//! file serve many containers: `archMap` (architectures by native arch),
//! `name` beside `names`, and per-rule `includes`/`excludes` conditions
//! on the container's capabilities, the native architecture and the
//! kernel version. [`resolve`] evaluates those for one container and
//! yields a plain OCI [`LinuxSeccomp`], the form the spec carries.
//!
//! Everything is checked before anything runs: an unknown action or
//! operator fails the JSON parse with its name; syscall names the seccomp
//! library does not know, argument indexes past 5, notify actions (no
//! listener here) and unknown architectures fail [`resolve`] naming them.

use std::collections::HashSet;
use std::str::FromStr;

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSyscall,
};
use serde::Deserialize;

use super::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Option<Vec<Arch>>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    pub flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    pub listener_path: Option<String>,
    #[serde(default)]
    pub syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub names: Option<Vec<String>>,
    #[serde(default)]
    pub name: Option<String>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    pub includes: Option<Condition>,
    #[serde(default)]
    pub excludes: Option<Condition>,
}

/// `includes` (all must hold) or `excludes` (any holding skips the rule).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// What the conditions of a profile are evaluated against.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The container's bounding set.
    pub capabilities: &'a HashSet<Capability>,
    /// The host kernel's (major, minor).
    pub kernel: (u32, u32),
}

/// The host kernel's (major, minor), from `/proc/sys/kernel/osrelease`.
pub fn host_kernel() -> std::io::Result<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    parse_kernel(release.trim()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("kernel release {release:?}"),
        )
    })
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// Names the native architecture goes by in `arches` conditions (the
/// kernel's and Go's).
fn native_names() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["x86_64", "amd64"],
        "aarch64" => &["aarch64", "arm64"],
        "x86" => &["x86", "386"],
        "arm" => &["arm"],
        "riscv64" => &["riscv64"],
        "s390x" => &["s390x"],
        "powerpc64" => &["ppc64le", "ppc64"],
        // Elsewhere `arches` conditions never hold.
        _ => &[],
    }
}

fn oci_name<T: serde::Serialize + std::fmt::Debug>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{value:?}"))
}

/// The seccomp library's architecture for an OCI one.
pub(crate) fn scmp_arch(arch: &Arch) -> Result<ScmpArch, Error> {
    let name = oci_name(arch);
    ScmpArch::from_str(&name).map_err(|_| Error::UnknownArch(name))
}

impl Condition {
    /// Whether every part of the condition holds (an empty one holds).
    fn holds_all(&self, ctx: &Context<'_>) -> Result<bool, Error> {
        for cap in self.caps.iter().flatten() {
            if !ctx.capabilities.contains(&parse_cap(cap)?) {
                return Ok(false);
            }
        }
        if let Some(arches) = &self.arches
            && !arches.iter().any(|a| native_names().contains(&a.as_str()))
        {
            return Ok(false);
        }
        if let Some(min) = &self.min_kernel
            && ctx.kernel < kernel_condition(min)?
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether any part of the condition holds.
    fn holds_any(&self, ctx: &Context<'_>) -> Result<bool, Error> {
        for cap in self.caps.iter().flatten() {
            if ctx.capabilities.contains(&parse_cap(cap)?) {
                return Ok(true);
            }
        }
        if let Some(arches) = &self.arches
            && arches.iter().any(|a| native_names().contains(&a.as_str()))
        {
            return Ok(true);
        }
        if let Some(min) = &self.min_kernel
            && ctx.kernel >= kernel_condition(min)?
        {
            return Ok(true);
        }
        Ok(false)
    }
}

fn kernel_condition(s: &str) -> Result<(u32, u32), Error> {
    parse_kernel(s).ok_or_else(|| Error::Invalid(format!("minKernel {s:?} is not major.minor")))
}

fn parse_cap(name: &str) -> Result<Capability, Error> {
    crate::security::capabilities::parse(name)
        .map_err(|_| Error::Invalid(format!("unknown capability {name:?} in a condition")))
}

/// Checks a syscall name against the seccomp library's table.
pub(crate) fn check_syscall(name: &str) -> Result<ScmpSyscall, Error> {
    ScmpSyscall::from_name(name).map_err(|_| Error::UnknownSyscall(name.to_string()))
}

fn check_action(action: LinuxSeccompAction) -> Result<(), Error> {
    match action {
        LinuxSeccompAction::ScmpActNotify => Err(Error::UnsupportedAction(oci_name(&action))),
        _ => Ok(()),
    }
}

/// The profile for one container: conditions evaluated, everything
/// checked.
pub fn resolve(profile: &Profile, ctx: &Context<'_>) -> Result<LinuxSeccomp, Error> {
    check_action(profile.default_action)?;
    if profile.listener_path.is_some() {
        return Err(Error::UnsupportedAction("listenerPath".to_string()));
    }
    let native = ScmpArch::native();
    let architectures = match &profile.arch_map {
        Some(map) => {
            let mut arches = Vec::new();
            for entry in map {
                if scmp_arch(&entry.architecture)? == native {
                    arches.push(entry.architecture);
                    arches.extend(entry.sub_architectures.iter().flatten().copied());
                }
            }
            arches
        }
        None => profile.architectures.clone().unwrap_or_default(),
    };
    for arch in &architectures {
        scmp_arch(arch)?;
    }
    let mut syscalls = Vec::new();
    for rule in profile.syscalls.iter().flatten() {
        check_action(rule.action)?;
        let names: Vec<String> = rule
            .names
            .iter()
            .flatten()
            .chain(rule.name.iter())
            .cloned()
            .collect();
        // Names and arguments are checked even in rules that do not apply
        // here: a typo must fail on every host, not only on some.
        for name in &names {
            check_syscall(name)?;
        }
        if let Some(arg) = rule.args.iter().flatten().find(|a| a.index() > 5) {
            return Err(Error::Invalid(format!(
                "argument index {} of {names:?} is past 5",
                arg.index()
            )));
        }
        if names.is_empty() {
            return Err(Error::Invalid("a syscall rule without names".to_string()));
        }
        let included = match &rule.includes {
            Some(c) => c.holds_all(ctx)?,
            None => true,
        };
        let excluded = match &rule.excludes {
            Some(c) => c.holds_any(ctx)?,
            None => false,
        };
        if !included || excluded {
            continue;
        }
        let mut out = LinuxSyscall::default();
        out.set_names(names);
        out.set_action(rule.action);
        out.set_errno_ret(rule.errno_ret);
        out.set_args(rule.args.clone().filter(|a| !a.is_empty()));
        syscalls.push(out);
    }
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(profile.default_action);
    seccomp.set_default_errno_ret(profile.default_errno_ret);
    seccomp.set_architectures(Some(architectures).filter(|a| !a.is_empty()));
    seccomp.set_flags(profile.flags.clone().filter(|f| !f.is_empty()));
    seccomp.set_syscalls(Some(syscalls));
    Ok(seccomp)
}

/// Parses a profile file's contents; `origin` names it in errors.
pub fn parse(json: &[u8], origin: &str) -> Result<Profile, Error> {
    serde_json::from_slice(json).map_err(|e| Error::Parse {
        origin: origin.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x.y"), None);
        let (major, _) = host_kernel().expect("host kernel");
        assert!(major >= 3);
    }
}
