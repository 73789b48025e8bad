//! The capability sets of a container's process, as containerd computes
//! them from the CRI security context.
//!
//! Start from the default set (below) — or every capability when
//! privileged, which ignores add/drop. "Every capability" is every one the
//! runtime itself holds when the caller says which (`available`), as
//! containerd gives a privileged container its own current set: a runtime
//! confined to fewer (root without CAP_SYS_RESOURCE, a nested node) could
//! not grant more. A capability named one by one that the runtime lacks is
//! an error rather than a silent drop. `ALL` in `add` means every
//! capability and `ALL` in `drop` none, applied before the individual
//! names, so `drop: [ALL], add: [NET_RAW]` is exactly NET_RAW and
//! `add: [ALL], drop: [CHOWN]` everything but CHOWN; an individual drop
//! wins over an individual add. Names are accepted with or without
//! `CAP_`, in any case.
//!
//! The resulting set is the bounding set. For root it is also the
//! effective and permitted sets; a non-root user gets empty effective and
//! permitted sets (what the kernel gives a non-root exec without file
//! capabilities anyway), so only a setuid or file-capability binary can
//! reach the bounding set. The inheritable set is empty (the fix for
//! CVE-2022-24769). Ambient capabilities only when asked: they are added
//! to the inheritable, permitted and effective sets too, as the kernel
//! requires, and must be within the bounding set (an error otherwise).

use std::collections::HashSet;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::Error;

/// Every capability up to CAP_CHECKPOINT_RESTORE (40), in kernel order.
const ALL: [Capability; 41] = {
    use Capability as C;
    [
        C::Chown,
        C::DacOverride,
        C::DacReadSearch,
        C::Fowner,
        C::Fsetid,
        C::Kill,
        C::Setgid,
        C::Setuid,
        C::Setpcap,
        C::LinuxImmutable,
        C::NetBindService,
        C::NetBroadcast,
        C::NetAdmin,
        C::NetRaw,
        C::IpcLock,
        C::IpcOwner,
        C::SysModule,
        C::SysRawio,
        C::SysChroot,
        C::SysPtrace,
        C::SysPacct,
        C::SysAdmin,
        C::SysBoot,
        C::SysNice,
        C::SysResource,
        C::SysTime,
        C::SysTtyConfig,
        C::Mknod,
        C::Lease,
        C::AuditWrite,
        C::AuditControl,
        C::Setfcap,
        C::MacOverride,
        C::MacAdmin,
        C::Syslog,
        C::WakeAlarm,
        C::BlockSuspend,
        C::AuditRead,
        C::Perfmon,
        C::Bpf,
        C::CheckpointRestore,
    ]
};

/// The set containerd and CRI-O give a non-privileged container.
pub const DEFAULT: [Capability; 14] = {
    use Capability as C;
    [
        C::Chown,
        C::DacOverride,
        C::Fsetid,
        C::Fowner,
        C::Mknod,
        C::NetRaw,
        C::Setgid,
        C::Setuid,
        C::Setfcap,
        C::Setpcap,
        C::NetBindService,
        C::SysChroot,
        C::Kill,
        C::AuditWrite,
    ]
};

/// Every capability the runtime knows.
pub fn all() -> Capabilities {
    ALL.into_iter().collect()
}

/// The capability part of a security context.
#[derive(Debug, Clone, Default)]
pub struct CapabilityRequest<'a> {
    pub privileged: bool,
    pub add: &'a [String],
    pub drop: &'a [String],
    pub add_ambient: &'a [String],
    /// The uid the process runs as (from `identity::resolve`).
    pub uid: u32,
    /// The capabilities the runtime can grant; `None`: every known one.
    pub available: Option<&'a Capabilities>,
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// `CAP_NET_RAW`, `net_raw` or `NET_RAW` → NetRaw.
pub fn parse(name: &str) -> Result<Capability, Error> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    // Only names of the kernel's form: the enum would also take odd
    // spellings of its variant names.
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return Err(Error::UnknownCapability(name.to_string()));
    }
    bare.parse::<Capability>()
        .ok()
        .filter(|c| ALL.contains(c))
        .ok_or_else(|| Error::UnknownCapability(name.to_string()))
}

fn parse_list(names: &[String]) -> Result<Vec<Capability>, Error> {
    names
        .iter()
        .filter(|n| !is_all(n))
        .map(|n| parse(n))
        .collect()
}

/// The OCI `process.capabilities` for `req`.
pub fn build(req: &CapabilityRequest<'_>) -> Result<LinuxCapabilities, Error> {
    // Names are checked even where they end up unused (privileged): a typo
    // must not pass silently.
    let add = parse_list(req.add)?;
    let drop = parse_list(req.drop)?;
    let ambient = parse_list(req.add_ambient)?;
    if req.add_ambient.iter().any(|n| is_all(n)) {
        return Err(Error::UnknownCapability("ALL (in ambient)".to_string()));
    }
    let every = match req.available {
        Some(available) => all().intersection(available).copied().collect(),
        None => all(),
    };
    if let Some(c) = add.iter().find(|c| !every.contains(c)) {
        return Err(Error::CapabilityUnavailable(format!("CAP_{c}")));
    }
    let bounding: HashSet<Capability> = if req.privileged {
        every
    } else {
        let mut set: HashSet<Capability> =
            DEFAULT.into_iter().filter(|c| every.contains(c)).collect();
        if req.add.iter().any(|n| is_all(n)) {
            set = every;
        }
        if req.drop.iter().any(|n| is_all(n)) {
            set.clear();
        }
        set.extend(add);
        for c in &drop {
            set.remove(c);
        }
        set
    };
    // The kernel refuses to raise an ambient capability outside the
    // bounding set: say so at create rather than fail at start.
    if let Some(c) = ambient.iter().find(|c| !bounding.contains(c)) {
        return Err(Error::AmbientOutsideBounding(format!("CAP_{c}")));
    }
    let ambient: HashSet<Capability> = ambient.into_iter().collect();
    let mut effective = if req.uid == 0 {
        bounding.clone()
    } else {
        HashSet::new()
    };
    effective.extend(ambient.iter().copied());
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(bounding));
    caps.set_permitted(Some(effective.clone()));
    caps.set_effective(Some(effective));
    caps.set_inheritable(Some(ambient.clone()));
    caps.set_ambient(Some(ambient));
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability as C;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn set(list: &[Capability]) -> Capabilities {
        list.iter().copied().collect()
    }

    fn root(add: &[String], drop: &[String]) -> LinuxCapabilities {
        build(&CapabilityRequest {
            add,
            drop,
            ..Default::default()
        })
        .expect("build")
    }

    #[test]
    fn default_set_for_root() {
        let caps = root(&[], &[]);
        let default: Capabilities = DEFAULT.into_iter().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&default));
        assert_eq!(caps.effective().as_ref(), Some(&default));
        assert_eq!(caps.permitted().as_ref(), Some(&default));
        assert_eq!(caps.inheritable().as_ref(), Some(&set(&[])));
        assert_eq!(caps.ambient().as_ref(), Some(&set(&[])));
        assert!(!default.contains(&C::SysAdmin) && !default.contains(&C::NetAdmin));
    }

    #[test]
    fn add_and_drop_with_or_without_prefix() {
        let caps = root(
            &names(&["SYS_ADMIN", "cap_net_admin"]),
            &names(&["CAP_CHOWN", "kill"]),
        );
        let b = caps.bounding().clone().expect("bounding");
        assert!(b.contains(&C::SysAdmin) && b.contains(&C::NetAdmin));
        assert!(!b.contains(&C::Chown) && !b.contains(&C::Kill));
        assert_eq!(b.len(), DEFAULT.len());
        // Add and drop of the same name: the drop wins.
        let caps = root(&names(&["SYS_TIME"]), &names(&["SYS_TIME"]));
        assert!(!caps.bounding().clone().expect("b").contains(&C::SysTime));
    }

    #[test]
    fn all_in_add_and_drop() {
        let caps = root(&names(&["NET_RAW"]), &names(&["ALL"]));
        assert_eq!(caps.bounding().as_ref(), Some(&set(&[C::NetRaw])));
        assert_eq!(caps.effective().as_ref(), Some(&set(&[C::NetRaw])));
        let caps = root(&names(&["all"]), &names(&["CHOWN"]));
        let b = caps.bounding().clone().expect("bounding");
        assert_eq!(b.len(), ALL.len() - 1);
        assert!(!b.contains(&C::Chown) && b.contains(&C::SysModule));
        let caps = root(&names(&["ALL"]), &names(&["ALL"]));
        assert_eq!(caps.bounding().as_ref(), Some(&set(&[])));
    }

    #[test]
    fn unknown_names_are_errors() {
        for bad in ["CAP_FLY", "NET-RAW", "", "CAP_", "Net Raw", "CAP_CAP_CHOWN"] {
            let err = build(&CapabilityRequest {
                add: &names(&[bad]),
                ..Default::default()
            });
            assert!(
                matches!(err, Err(Error::UnknownCapability(n)) if n == bad),
                "{bad:?}"
            );
        }
        let err = build(&CapabilityRequest {
            drop: &names(&["SYS_FLY"]),
            privileged: true,
            ..Default::default()
        });
        assert!(matches!(err, Err(Error::UnknownCapability(_))));
    }

    #[test]
    fn privileged_gets_everything_and_ignores_drop() {
        let caps = build(&CapabilityRequest {
            privileged: true,
            drop: &names(&["ALL"]),
            ..Default::default()
        })
        .expect("build");
        assert_eq!(caps.bounding().as_ref(), Some(&all()));
        assert_eq!(caps.effective().as_ref(), Some(&all()));
        assert_eq!(all().len(), 41);
    }

    #[test]
    fn every_capability_is_every_available_one() {
        let available = set(&[C::Chown, C::Kill, C::SysAdmin]);
        let (none, all_, time) = (names(&[]), names(&["ALL"]), names(&["SYS_TIME"]));
        let req = |privileged, add| CapabilityRequest {
            privileged,
            add,
            available: Some(&available),
            ..Default::default()
        };
        let caps = build(&req(true, &none)).expect("privileged");
        assert_eq!(caps.bounding().as_ref(), Some(&available));
        let caps = build(&req(false, &all_)).expect("add ALL");
        assert_eq!(caps.effective().as_ref(), Some(&available));
        let caps = build(&req(false, &none)).expect("default");
        assert_eq!(caps.bounding().as_ref(), Some(&set(&[C::Chown, C::Kill])));
        let err = build(&req(false, &time));
        assert!(matches!(err, Err(Error::CapabilityUnavailable(n)) if n == "CAP_SYS_TIME"));
    }

    #[test]
    fn non_root_has_no_effective_or_permitted() {
        let caps = build(&CapabilityRequest {
            uid: 1000,
            add: &names(&["NET_ADMIN"]),
            ..Default::default()
        })
        .expect("build");
        assert!(caps.bounding().clone().expect("b").contains(&C::NetAdmin));
        assert_eq!(caps.effective().as_ref(), Some(&set(&[])));
        assert_eq!(caps.permitted().as_ref(), Some(&set(&[])));
        assert_eq!(caps.inheritable().as_ref(), Some(&set(&[])));
    }

    #[test]
    fn ambient_only_when_asked_and_within_bounding() {
        let caps = build(&CapabilityRequest {
            uid: 1000,
            add_ambient: &names(&["NET_BIND_SERVICE"]),
            ..Default::default()
        })
        .expect("build");
        let want = set(&[C::NetBindService]);
        assert_eq!(caps.ambient().as_ref(), Some(&want));
        assert_eq!(caps.inheritable().as_ref(), Some(&want));
        assert_eq!(caps.permitted().as_ref(), Some(&want));
        assert_eq!(caps.effective().as_ref(), Some(&want));
        // SYS_ADMIN is not in the bounding set: the kernel would refuse it,
        // and ambient must not widen the bounding set.
        let err = build(&CapabilityRequest {
            uid: 1000,
            add_ambient: &names(&["NET_BIND_SERVICE", "SYS_ADMIN"]),
            ..Default::default()
        });
        assert!(matches!(err, Err(Error::AmbientOutsideBounding(n)) if n == "CAP_SYS_ADMIN"));
        let err = build(&CapabilityRequest {
            add_ambient: &names(&["ALL"]),
            ..Default::default()
        });
        assert!(matches!(err, Err(Error::UnknownCapability(_))));
    }
}
