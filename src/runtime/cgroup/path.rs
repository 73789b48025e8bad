//! Cgroup names: the path of a cgroup below the hierarchy root, and the two
//! ways kubelet names them (its `--cgroup-driver`).
//!
//! - `cgroupfs`: kubelet's `cgroup_parent` is a path (`/kubepods/burstable/pod<uid>`)
//!   and a container's cgroup is `<parent>/<container id>`.
//! - `systemd`: the parent is a slice name (`kubepods-burstable-pod<uid>.slice`),
//!   where each `-` is a level: it lives at
//!   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`,
//!   and a container gets the scope `yonggi-<id>.scope` inside it.
//!
//! containerd and CRI-O ask systemd over D-Bus to create those slices and
//! scopes. yonggi makes the same directories itself in cgroupfs: nodes without
//! systemd as PID 1 (like the test machines) have no one to ask, and the
//! kernel-visible result (the paths, the limits) is the same. On a node where
//! systemd does run, it does not know these units; it leaves foreign cgroups
//! alone, which is also how it treats runc's cgroupfs driver.

use serde::{Deserialize, Serialize};

use super::CgroupError;

/// A cgroup's path below the root of each hierarchy, always absolute and
/// normalised: `/kubepods/burstable/pod1234`. Never the root itself, which
/// yonggi must not configure or remove.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CgroupPath(String);

impl CgroupPath {
    /// Accepts `a/b` or `/a/b`; rejects the root, `.`/`..` components, empty
    /// components, and NUL or newline bytes (the kernel takes a newline in a
    /// control file as the end of a value).
    pub fn parse(path: &str) -> Result<CgroupPath, CgroupError> {
        let invalid = |reason| CgroupError::InvalidPath {
            path: path.to_string(),
            reason,
        };
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        if trimmed.is_empty() {
            return Err(invalid("the root cgroup cannot be used"));
        }
        let mut out = String::with_capacity(path.len() + 1);
        for part in trimmed.split('/') {
            check_component(part).map_err(invalid)?;
            out.push('/');
            out.push_str(part);
        }
        Ok(CgroupPath(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/`, to join onto a hierarchy's mount.
    pub(crate) fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// A child cgroup named `name` (one component).
    pub fn join(&self, name: &str) -> Result<CgroupPath, CgroupError> {
        check_component(name).map_err(|reason| CgroupError::InvalidPath {
            path: format!("{}/{name}", self.0),
            reason,
        })?;
        Ok(CgroupPath(format!("{}/{name}", self.0)))
    }

    /// This path and every ancestor below the root, outermost first:
    /// `/a`, `/a/b`, `/a/b/c`.
    pub(crate) fn lineage(&self) -> Vec<CgroupPath> {
        let mut out = Vec::new();
        for (i, c) in self.0.char_indices().skip(1) {
            if c == '/' {
                out.push(CgroupPath(self.0[..i].to_string()));
            }
        }
        out.push(self.clone());
        out
    }
}

fn check_component(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("empty path component");
    }
    if part == "." || part == ".." {
        return Err("`.` and `..` are not allowed");
    }
    if part.contains(['\0', '\n']) {
        return Err("NUL and newline are not allowed");
    }
    Ok(())
}

impl std::fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CgroupPath {
    type Error = CgroupError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CgroupPath::parse(&s)
    }
}

impl From<CgroupPath> for String {
    fn from(p: CgroupPath) -> String {
        p.0
    }
}

/// How cgroups are named (kubelet's `--cgroup-driver`, which must match ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

impl From<crate::config::CgroupDriver> for Driver {
    /// `auto` should be resolved first (`Config::effective_cgroup_driver`);
    /// if it is not, cgroupfs naming is the one that needs no systemd.
    fn from(d: crate::config::CgroupDriver) -> Driver {
        match d {
            crate::config::CgroupDriver::Systemd => Driver::Systemd,
            crate::config::CgroupDriver::Cgroupfs | crate::config::CgroupDriver::Auto => {
                Driver::Cgroupfs
            }
        }
    }
}

/// The prefix of container scopes with the systemd driver (CRI-O uses `crio`,
/// containerd `cri-containerd`).
pub const SCOPE_PREFIX: &str = "yonggi";

impl Driver {
    /// The pod's cgroup from kubelet's `cgroup_parent`: a path with cgroupfs,
    /// a slice name with systemd (an already expanded path whose last
    /// component is a slice is accepted too, e.g. `/test.slice`).
    pub fn pod_cgroup(self, cgroup_parent: &str) -> Result<CgroupPath, CgroupError> {
        match self {
            Driver::Cgroupfs => CgroupPath::parse(cgroup_parent),
            Driver::Systemd => {
                let bare = cgroup_parent.strip_prefix('/').unwrap_or(cgroup_parent);
                if bare.contains('/') {
                    let path = CgroupPath::parse(bare)?;
                    if !bare.ends_with(".slice") {
                        return Err(CgroupError::InvalidSlice {
                            name: cgroup_parent.to_string(),
                            reason: "a systemd cgroup parent must be a slice",
                        });
                    }
                    Ok(path)
                } else {
                    expand_slice(bare)
                }
            }
        }
    }

    /// A container's cgroup inside its pod's cgroup.
    pub fn container_cgroup(
        self,
        pod: &CgroupPath,
        container_id: &str,
    ) -> Result<CgroupPath, CgroupError> {
        let valid = !container_id.is_empty()
            && !container_id.starts_with('.')
            && container_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid {
            return Err(CgroupError::InvalidPath {
                path: container_id.to_string(),
                reason: "a container id must be letters, digits, `-`, `_` or `.`",
            });
        }
        match self {
            Driver::Cgroupfs => pod.join(container_id),
            Driver::Systemd => pod.join(&format!("{SCOPE_PREFIX}-{container_id}.scope")),
        }
    }
}

/// Expands a systemd slice name to its cgroup path: every `-` in the name
/// starts a nested slice, so `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`.
pub fn expand_slice(name: &str) -> Result<CgroupPath, CgroupError> {
    let invalid = |reason| CgroupError::InvalidSlice {
        name: name.to_string(),
        reason,
    };
    let stem = name
        .strip_suffix(".slice")
        .ok_or_else(|| invalid("a slice name ends with `.slice`"))?;
    if stem == "-" || stem.is_empty() {
        return Err(invalid("the root slice cannot be used"));
    }
    if stem.contains('/') {
        return Err(invalid("a slice name has no `/`"));
    }
    if stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(invalid("a slice name has no empty `-` level"));
    }
    let mut path = String::new();
    for (i, c) in stem.char_indices() {
        if c == '-' {
            path.push('/');
            path.push_str(&stem[..i]);
            path.push_str(".slice");
        }
    }
    path.push('/');
    path.push_str(name);
    CgroupPath::parse(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_checked() {
        assert_eq!(CgroupPath::parse("a/b").expect("path").as_str(), "/a/b");
        assert_eq!(CgroupPath::parse("/a/b").expect("path").relative(), "a/b");
        for bad in ["", "/", "/a/../b", "/a//b", "/a/", "./a", "/a\nb"] {
            assert!(CgroupPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let lineage: Vec<String> = CgroupPath::parse("/a/b/c")
            .expect("path")
            .lineage()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(lineage, ["/a", "/a/b", "/a/b/c"]);
    }

    #[test]
    fn slices_expand_level_by_level() {
        let p = expand_slice("kubepods-burstable-pod1234_5678.slice").expect("slice");
        assert_eq!(
            p.as_str(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice"
        );
        assert_eq!(
            expand_slice("test.slice").expect("slice").as_str(),
            "/test.slice"
        );
        for bad in [
            "-.slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "kubepods",
            "a/b.slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn drivers_name_pods_and_containers() {
        let pod = Driver::Cgroupfs
            .pod_cgroup("/kubepods/burstable/pod12")
            .expect("pod");
        assert_eq!(pod.as_str(), "/kubepods/burstable/pod12");
        let c = Driver::Cgroupfs
            .container_cgroup(&pod, "abc123")
            .expect("ctr");
        assert_eq!(c.as_str(), "/kubepods/burstable/pod12/abc123");

        let pod = Driver::Systemd
            .pod_cgroup("kubepods-besteffort-pod12.slice")
            .expect("pod");
        assert_eq!(
            pod.as_str(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice"
        );
        let c = Driver::Systemd
            .container_cgroup(&pod, "abc123")
            .expect("ctr");
        assert_eq!(
            c.as_str(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/yonggi-abc123.scope"
        );
        assert_eq!(
            Driver::Systemd
                .pod_cgroup("/test.slice")
                .expect("pod")
                .as_str(),
            "/test.slice"
        );
        assert!(Driver::Systemd.pod_cgroup("/kubepods/pod1").is_err());
        assert!(Driver::Systemd.pod_cgroup("kubepods").is_err());
        assert!(Driver::Cgroupfs.container_cgroup(&pod, "../x").is_err());
        assert!(Driver::Cgroupfs.container_cgroup(&pod, "").is_err());
    }
}
