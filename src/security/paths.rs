//! Masked paths (a `/dev/null` or empty read-only tmpfs over them) and
//! read-only paths (remounted read-only) of a container's `/proc` and
//! `/sys`: kernel interfaces that leak host information or change the
//! host.
//!
//! The defaults are containerd's (CRI-O's are the same set). Kubelet sends
//! its own lists in the security context (for `procMount: Default` the same
//! paths; for `Unmasked` none): a non-empty list replaces the default, as
//! containerd does (an empty one is indistinguishable from unset on the
//! wire). A privileged container gets none at all.

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

fn checked(paths: &[String], default: &[&str]) -> Result<Vec<String>, Error> {
    if paths.is_empty() {
        return Ok(default.iter().map(|p| p.to_string()).collect());
    }
    paths
        .iter()
        .map(|p| {
            let ok = p.starts_with('/') && !p.contains('\0') && !p.split('/').any(|c| c == "..");
            if ok {
                Ok(p.clone())
            } else {
                Err(Error::InvalidPath(p.clone()))
            }
        })
        .collect()
}

/// The paths for a container: kubelet's lists when given, the defaults
/// otherwise, nothing when privileged.
pub fn masked_and_readonly(
    privileged: bool,
    kubelet_masked: &[String],
    kubelet_readonly: &[String],
) -> Result<ProcPaths, Error> {
    let masked = checked(kubelet_masked, &DEFAULT_MASKED)?;
    let readonly = checked(kubelet_readonly, &DEFAULT_READONLY)?;
    if privileged {
        return Ok(ProcPaths::default());
    }
    Ok(ProcPaths { masked, readonly })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_kubelet_sends_none() {
        let p = masked_and_readonly(false, &[], &[]).expect("paths");
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
    fn kubelet_lists_replace_the_defaults() {
        let masked = vec!["/proc/kcore".to_string(), "/proc/custom".to_string()];
        let p = masked_and_readonly(false, &masked, &[]).expect("paths");
        assert_eq!(p.masked, masked);
        assert_eq!(p.readonly.len(), DEFAULT_READONLY.len());
        let ro = vec!["/proc/other".to_string()];
        let p = masked_and_readonly(false, &[], &ro).expect("paths");
        assert_eq!(p.readonly, ro);
        assert_eq!(p.masked.len(), DEFAULT_MASKED.len());
    }

    #[test]
    fn privileged_has_none() {
        let p = masked_and_readonly(true, &["/proc/kcore".to_string()], &[]).expect("paths");
        assert_eq!(p, ProcPaths::default());
    }

    #[test]
    fn relative_or_dotdot_paths_are_rejected() {
        for bad in ["proc/kcore", "/proc/../etc", "/proc/\0x", ""] {
            let err = masked_and_readonly(false, &[bad.to_string()], &[]);
            assert!(
                matches!(err, Err(Error::InvalidPath(p)) if p == bad),
                "{bad:?}"
            );
            let err = masked_and_readonly(true, &[], &[bad.to_string()]);
            assert!(matches!(err, Err(Error::InvalidPath(_))), "{bad:?}");
        }
    }
}
