//! The host side of a volume's propagation. A bidirectional volume only
//! shares mounts with the host when the host path sits on a shared mount,
//! and a host-to-container one only receives them from a shared or slave
//! mount; otherwise the request cannot be honoured, and CreateContainer
//! says so instead of running a container that silently sees nothing.

use std::path::{Path, PathBuf};

use super::{ContainerError, Propagation, VolumeMount};

/// One line of `/proc/self/mountinfo`, the fields this module needs.
#[derive(Debug, PartialEq, Eq)]
struct MountEntry {
    mount_point: PathBuf,
    shared: bool,
    slave: bool,
}

fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let mount_point = fields.nth(4)?;
            // Optional fields come after the per-mount options, up to "-".
            let optional: Vec<&str> = fields.skip(1).take_while(|f| *f != "-").collect();
            Some(MountEntry {
                mount_point: PathBuf::from(crate::snapshot::unescape_mount_point(mount_point)),
                shared: optional.iter().any(|f| f.starts_with("shared:")),
                slave: optional.iter().any(|f| f.starts_with("master:")),
            })
        })
        .collect()
}

/// The mount `path` lives on: the longest mount point above it, the last
/// one listed when mounts are stacked on the same point.
fn mount_of<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m)
}

fn describe(m: &MountEntry) -> &'static str {
    match (m.shared, m.slave) {
        (true, true) => "shared and slave",
        (true, false) => "shared",
        (false, true) => "slave",
        (false, false) => "private",
    }
}

/// Checks the host mount of `resolved` (`m.host_path` with symlinks
/// resolved) against the propagation `m` asks.
pub(super) fn check_host_propagation(
    m: &VolumeMount,
    resolved: &Path,
) -> Result<(), ContainerError> {
    if m.propagation == Propagation::Private {
        return Ok(());
    }
    let info = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(info).map_err(|source| ContainerError::Io {
        action: "read",
        path: info.to_path_buf(),
        source,
    })?;
    check(&parse(&text), m, resolved)
}

fn check(mounts: &[MountEntry], m: &VolumeMount, resolved: &Path) -> Result<(), ContainerError> {
    let Some(host) = mount_of(mounts, resolved) else {
        return Ok(());
    };
    let (ok, wanted) = match m.propagation {
        Propagation::Private => (true, "private"),
        Propagation::HostToContainer => (host.shared || host.slave, "shared or slave"),
        Propagation::Bidirectional => (host.shared, "shared"),
    };
    if ok {
        return Ok(());
    }
    Err(ContainerError::HostPropagation {
        host_path: resolved.to_path_buf(),
        mount_point: host.mount_point.clone(),
        wanted,
        actual: describe(host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:30 / /tmp rw shared:5 - tmpfs tmpfs rw
41 40 0:31 / /tmp/priv rw - tmpfs tmpfs rw
42 40 0:32 / /tmp/slave rw master:5 - tmpfs tmpfs rw
43 41 0:33 / /tmp/priv rw shared:9 master:7 - tmpfs tmpfs rw
44 40 0:34 / /tmp/with\\040space rw - tmpfs tmpfs rw
";

    fn volume(path: &str, propagation: Propagation) -> VolumeMount {
        VolumeMount {
            container_path: "/v".into(),
            host_path: path.into(),
            readonly: false,
            recursive_read_only: false,
            propagation,
        }
    }

    #[test]
    fn the_host_mount_decides() {
        let mounts = parse(INFO);
        let m = |p: &str| mount_of(&mounts, Path::new(p)).expect("mount");
        assert_eq!(m("/etc").mount_point, Path::new("/"));
        assert_eq!(m("/tmp/x").mount_point, Path::new("/tmp"));
        // /tmp/privacy is not below /tmp/priv.
        assert_eq!(m("/tmp/privacy").mount_point, Path::new("/tmp"));
        // The top of a stack wins.
        assert_eq!(describe(m("/tmp/priv/a")), "shared and slave");
        assert_eq!(describe(m("/tmp/slave")), "slave");
        assert_eq!(describe(m("/tmp/with space/a")), "private");

        use Propagation::*;
        assert!(
            check(
                &mounts,
                &volume("/tmp/x", Bidirectional),
                Path::new("/tmp/x")
            )
            .is_ok()
        );
        assert!(
            check(
                &mounts,
                &volume("/tmp/slave/a", HostToContainer),
                Path::new("/tmp/slave/a")
            )
            .is_ok()
        );
        assert!(
            check(
                &mounts,
                &volume("/tmp/with space", Private),
                Path::new("/tmp/with space")
            )
            .is_ok()
        );
        assert!(matches!(
            check(
                &mounts,
                &volume("/tmp/slave/a", Bidirectional),
                Path::new("/tmp/slave/a")
            ),
            Err(ContainerError::HostPropagation {
                actual: "slave",
                ..
            })
        ));
        assert!(matches!(
            check(
                &mounts,
                &volume("/tmp/with space/a", HostToContainer),
                Path::new("/tmp/with space/a")
            ),
            Err(ContainerError::HostPropagation {
                actual: "private",
                ..
            })
        ));
    }
}
