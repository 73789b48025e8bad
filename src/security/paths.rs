//! Masked paths (a `/dev/null` or empty read-only tmpfs over them) and
//! read-only paths (remounted read-only) of a container's `/proc` and
//! `/sys`: kernel interfaces that leak host information or change the
//! host.
//!
//! The defaults are containerd's (CRI-O's are the same set), and kubelet's
//! own default lists (`procMount: Default`) hold the same paths. What
//! kubelet or another client sends is added to the defaults, never put in
//! their place: a list from an older or newer client cannot unmask
//! `/proc/kcore` by omission. The one way to get none is kubelet's
//! `procMount: Unmasked`, which it sends as two empty lists and allows
//! only with `hostUsers: false`; on the wire empty lists look like unset
//! ones, so the caller says when they mean Unmasked (see
//! `SecurityContext::proc_unmasked`). A privileged container gets none at
//! all.

use super::Error;

pub const DEFAULT_MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const DEFAULT_READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The OCI `linux.maskedPaths` and `linux.readonlyPaths`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcPaths {
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
}

fn checked(paths: &[String]) -> Result<(), Error> {
    for p in paths {
        let ok = p.starts_with('/') && !p.contains('\0') && !p.split('/').any(|c| c == "..");
        if !ok {
            return Err(Error::InvalidPath(p.clone()));
        }
    }
    Ok(())
}

/// `default` then the additions not already in it.
fn merged(default: &[&str], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = default.iter().map(|p| p.to_string()).collect();
    for p in extra {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// The paths for a container: the defaults plus the client's lists,
/// nothing when privileged or `unmasked`. The lists are checked in every
/// case: a bad path must not pass silently.
pub fn masked_and_readonly(
    privileged: bool,
    unmasked: bool,
    masked: &[String],
    readonly: &[String],
) -> Result<ProcPaths, Error> {
    checked(masked)?;
    checked(readonly)?;
    if privileged || unmasked {
        return Ok(ProcPaths::default());
    }
    Ok(ProcPaths {
        masked: merged(&DEFAULT_MASKED, masked),
        readonly: merged(&DEFAULT_READONLY, readonly),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_kubelet_sends_none() {
        let p = masked_and_readonly(false, false, &[], &[]).expect("paths");
        for must in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/sys/firmware",
        ] {
            assert!(p.masked.iter().any(|m| m == must), "{must}");
        }
        for must in ["/proc/sys", "/proc/sysrq-trigger", "/proc/bus"] {
            assert!(p.readonly.iter().any(|m| m == must), "{must}");
        }
        assert_eq!(p.masked.len(), 11);
        assert_eq!(p.readonly.len(), 5);
    }

    #[test]
    fn client_lists_add_to_the_defaults() {
        let masked = vec!["/proc/kcore".to_string(), "/bin/ls".to_string()];
        let p = masked_and_readonly(false, false, &masked, &[]).expect("paths");
        assert_eq!(p.masked.len(), DEFAULT_MASKED.len() + 1);
        assert_eq!(p.masked.last().map(String::as_str), Some("/bin/ls"));
        assert_eq!(p.readonly.len(), DEFAULT_READONLY.len());
        let ro = vec!["/tmp".to_string()];
        let p = masked_and_readonly(false, false, &[], &ro).expect("paths");
        assert!(p.readonly.contains(&"/tmp".to_string()));
        assert!(p.readonly.contains(&"/proc/sys".to_string()));
        assert_eq!(p.masked.len(), DEFAULT_MASKED.len());
    }

    #[test]
    fn privileged_and_unmasked_have_none() {
        let kcore = ["/proc/kcore".to_string()];
        let p = masked_and_readonly(true, false, &kcore, &[]).expect("paths");
        assert_eq!(p, ProcPaths::default());
        let p = masked_and_readonly(false, true, &[], &[]).expect("paths");
        assert_eq!(p, ProcPaths::default());
    }

    #[test]
    fn relative_or_dotdot_paths_are_rejected() {
        for bad in ["proc/kcore", "/proc/../etc", "/proc/\0x", ""] {
            let err = masked_and_readonly(false, false, &[bad.to_string()], &[]);
            assert!(
                matches!(err, Err(Error::InvalidPath(p)) if p == bad),
                "{bad:?}"
            );
            let err = masked_and_readonly(true, false, &[], &[bad.to_string()]);
            assert!(matches!(err, Err(Error::InvalidPath(_))), "{bad:?}");
        }
    }
}
