//! Which cgroup hierarchies the host has, and where each controller lives.
//!
//! Three shapes exist in the wild: pure v2 (one cgroup2 mount at the root,
//! what current nodes run), v1 (one mount per controller or group of
//! controllers, `/sys/fs/cgroup/<name>`), and hybrid (v1 mounts plus a
//! cgroup2 mount at `<root>/unified`, usually without controllers). The
//! kernel binds each controller to exactly one hierarchy, so yonggi asks per
//! controller: a v1 mount if there is one, else the unified hierarchy if it
//! lists the controller. On a hybrid host that means v1 for CPU, memory and
//! pids; a controller only the unified hierarchy has (hugetlb on some hosts)
//! is still usable there. Detection reads files only, so tests can point it
//! at a temp dir laid out like cgroupfs.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::CgroupError;
use super::fs::CgroupFs;

/// The host's cgroup setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    V1,
    Hybrid,
    V2,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::V1 => "v1",
            Mode::Hybrid => "v1/v2 hybrid",
            Mode::V2 => "v2",
        })
    }
}

/// The controllers yonggi places containers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    Cpu,
    Cpuacct,
    Cpuset,
    Memory,
    Pids,
    Hugetlb,
    Devices,
    Freezer,
    Blkio,
    Io,
}

impl Controller {
    const ALL: [Controller; 10] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Pids,
        Controller::Hugetlb,
        Controller::Devices,
        Controller::Freezer,
        Controller::Blkio,
        Controller::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Hugetlb => "hugetlb",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Blkio => "blkio",
            Controller::Io => "io",
        }
    }

    fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Controllers that exist only on v1 (v2 has freezing and device
    /// control built in, and `io` replaced `blkio`).
    fn is_v1_only(self) -> bool {
        matches!(
            self,
            Controller::Cpuacct | Controller::Devices | Controller::Freezer | Controller::Blkio
        )
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a controller's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// The mount of a v1 hierarchy.
    V1(PathBuf),
    /// The unified (cgroup2) hierarchy.
    V2,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) mode: Mode,
    /// Each v1 controller with its mount; co-mounted controllers share one.
    pub(crate) v1: Vec<(Controller, PathBuf)>,
    /// The cgroup2 mount: the root on pure v2, `<root>/unified` on hybrid.
    pub(crate) unified: Option<PathBuf>,
    /// Controllers the unified hierarchy offers at its root.
    pub(crate) v2_controllers: BTreeSet<Controller>,
}

impl Layout {
    pub(crate) fn detect(fs: &dyn CgroupFs, root: &Path) -> Result<Layout, CgroupError> {
        if let Some(ctrls) = read_controllers(fs, root)? {
            return Ok(Layout {
                root: root.to_path_buf(),
                mode: Mode::V2,
                v1: Vec::new(),
                unified: Some(root.to_path_buf()),
                v2_controllers: ctrls,
            });
        }
        let dirs = fs.subdirs(root).map_err(|source| CgroupError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        let mut v1 = Vec::new();
        let mut unified = None;
        let mut v2_controllers = BTreeSet::new();
        let mut dirs = dirs;
        dirs.sort();
        for dir in dirs {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name == "unified" {
                if let Some(ctrls) = read_controllers(fs, &dir)? {
                    v2_controllers = ctrls;
                    unified = Some(dir);
                }
                continue;
            }
            // A v1 mount has `cgroup.procs` at its top; the tmpfs around the
            // mounts and other stray directories do not.
            if !fs.exists(&dir.join("cgroup.procs")) {
                continue;
            }
            for part in name.split(',') {
                if let Some(c) = Controller::from_name(part)
                    && !v1.iter().any(|(have, _)| *have == c)
                {
                    v1.push((c, dir.clone()));
                }
            }
        }
        let mode = match (v1.is_empty(), unified.is_some()) {
            (true, false) => return Err(CgroupError::NoHierarchy(root.to_path_buf())),
            (false, false) => Mode::V1,
            _ => Mode::Hybrid,
        };
        Ok(Layout {
            root: root.to_path_buf(),
            mode,
            v1,
            unified,
            v2_controllers,
        })
    }

    pub(crate) fn location(&self, c: Controller) -> Option<Location> {
        if let Some((_, dir)) = self.v1.iter().find(|(have, _)| *have == c) {
            return Some(Location::V1(dir.clone()));
        }
        if self.unified.is_some() && !c.is_v1_only() && self.v2_controllers.contains(&c) {
            return Some(Location::V2);
        }
        None
    }

    /// Every hierarchy a cgroup is made in: each distinct v1 mount of a
    /// controller yonggi uses, then the unified one. On hybrid the unified
    /// cgroup has no resource controllers but tracks the processes and gives
    /// `cgroup.kill`.
    pub(crate) fn mounts(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for (_, dir) in &self.v1 {
            if !out.contains(dir) {
                out.push(dir.clone());
            }
        }
        if let Some(u) = &self.unified {
            out.push(u.clone());
        }
        out
    }

    /// Controllers to enable in `cgroup.subtree_control` on the way down
    /// to a new v2 cgroup: the ones that live in the unified hierarchy.
    pub(crate) fn v2_enabled(&self) -> Vec<Controller> {
        self.v2_controllers
            .iter()
            .copied()
            .filter(|c| self.location(*c) == Some(Location::V2))
            .collect()
    }
}

/// `cgroup.controllers` of a cgroup2 directory, or None when `dir` is not one.
fn read_controllers(
    fs: &dyn CgroupFs,
    dir: &Path,
) -> Result<Option<BTreeSet<Controller>>, CgroupError> {
    let file = dir.join("cgroup.controllers");
    match fs.read(&file) {
        Ok(text) => Ok(Some(
            text.split_whitespace()
                .filter_map(Controller::from_name)
                .collect(),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path: file, source }),
    }
}
