//! Device access rules: which device nodes a container may create (mknod),
//! read and write. Without them a container holding CAP_MKNOD could make
//! `/dev/sda` and read the host's disk. v1 has the `devices` controller;
//! v2 has no files for this, only an eBPF program attached to the cgroup
//! (see `bpf.rs`).
//!
//! Semantics are v1's, which OCI follows: rules apply in order, a later
//! rule overriding an earlier one; with no matching rule a device is
//! allowed (so a list normally starts with "deny all").

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Every kind (`a`).
    All,
    Char,
    Block,
}

/// One rule; `None` for major or minor is the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Bits of [`Access`].
    pub access: Access,
}

/// Access to a device: mknod, read, write (`m`, `r`, `w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    pub const ALL: Access = Access(7);

    /// Parses `rwm` in any order and subset; empty means all, as in OCI.
    pub fn parse(s: &str) -> Result<Access, CgroupError> {
        if s.is_empty() {
            return Ok(Access::ALL);
        }
        let mut bits = 0;
        for c in s.chars() {
            bits |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => {
                    return Err(CgroupError::InvalidResource {
                        field: "device access",
                        reason: format!("{s:?} is not made of r, w and m"),
                    });
                }
            };
        }
        Ok(Access(bits))
    }

    /// The kernel's bit mask: mknod 1, read 2, write 4 (v2's
    /// `BPF_DEVCG_ACC_*` use the same values).
    pub fn bits(self) -> u8 {
        self.0
    }

    fn letters(self) -> String {
        let mut s = String::new();
        if self.0 & 2 != 0 {
            s.push('r');
        }
        if self.0 & 4 != 0 {
            s.push('w');
        }
        if self.0 & 1 != 0 {
            s.push('m');
        }
        s
    }
}

impl DeviceRule {
    /// The v1 line for `devices.allow` / `devices.deny`: `c 1:3 rwm`.
    pub(crate) fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::All => "a",
            DeviceKind::Char => "c",
            DeviceKind::Block => "b",
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access.letters()
        )
    }

    pub(crate) fn v1_file(&self) -> &'static str {
        if self.allow {
            "devices.allow"
        } else {
            "devices.deny"
        }
    }

    /// Converts an OCI rule. FIFO and unbuffered-char types map to their
    /// kernel kinds (the kernel knows only char and block devices).
    pub fn from_oci(rule: &LinuxDeviceCgroup) -> Result<DeviceRule, CgroupError> {
        let num = |field: &'static str, n: Option<i64>| match n {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n < (1 << 20))
                .map(Some)
                .ok_or_else(|| CgroupError::InvalidResource {
                    field,
                    reason: format!("{n} is not a device number"),
                }),
        };
        let kind = match rule.typ().unwrap_or_default() {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U | LinuxDeviceType::P => DeviceKind::Char,
        };
        Ok(DeviceRule {
            allow: rule.allow(),
            kind,
            major: num("device major", rule.major())?,
            minor: num("device minor", rule.minor())?,
            access: Access::parse(rule.access().as_deref().unwrap_or(""))?,
        })
    }
}

/// The rules a container without extra devices gets, as runc and crun
/// apply them: deny everything, allow mknod of any node (creating one
/// grants no access) and full access to the standard pseudo-devices.
pub fn default_device_rules() -> Vec<DeviceRule> {
    let rule = |allow, kind, major, minor, access| DeviceRule {
        allow,
        kind,
        major,
        minor,
        access,
    };
    let rwm = Access::ALL;
    vec![
        rule(false, DeviceKind::All, None, None, rwm),
        rule(true, DeviceKind::Char, None, None, Access::MKNOD),
        rule(true, DeviceKind::Block, None, None, Access::MKNOD),
        rule(true, DeviceKind::Char, Some(1), Some(3), rwm), // /dev/null
        rule(true, DeviceKind::Char, Some(1), Some(5), rwm), // /dev/zero
        rule(true, DeviceKind::Char, Some(1), Some(7), rwm), // /dev/full
        rule(true, DeviceKind::Char, Some(1), Some(8), rwm), // /dev/random
        rule(true, DeviceKind::Char, Some(1), Some(9), rwm), // /dev/urandom
        rule(true, DeviceKind::Char, Some(5), Some(0), rwm), // /dev/tty
        rule(true, DeviceKind::Char, Some(5), Some(1), rwm), // /dev/console
        rule(true, DeviceKind::Char, Some(5), Some(2), rwm), // /dev/ptmx
        rule(true, DeviceKind::Char, Some(136), None, rwm),  // /dev/pts/*
        rule(true, DeviceKind::Char, Some(10), Some(200), rwm), // /dev/net/tun
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn rules_render_as_v1_lines() {
        let rules = default_device_rules();
        assert_eq!(rules[0].v1_line(), "a *:* rwm");
        assert_eq!(rules[0].v1_file(), "devices.deny");
        assert_eq!(rules[1].v1_line(), "c *:* m");
        assert_eq!(rules[3].v1_line(), "c 1:3 rwm");
        assert_eq!(rules[11].v1_line(), "c 136:* rwm");
        assert_eq!(rules[11].v1_file(), "devices.allow");
    }

    #[test]
    fn oci_rules_convert() {
        let oci = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .major(8i64)
            .access("rw")
            .build()
            .expect("rule");
        let r = DeviceRule::from_oci(&oci).expect("convert");
        assert_eq!(r.v1_line(), "b 8:* rw");
        let bad = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rx")
            .build()
            .expect("rule");
        assert!(DeviceRule::from_oci(&bad).is_err());
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .build()
            .expect("rule");
        assert_eq!(
            DeviceRule::from_oci(&deny_all).expect("convert").v1_line(),
            "a *:* rwm"
        );
    }
}
