//! Cgroups for pods and containers, on cgroup v1, v2 and the hybrid of both.
//!
//! [`Cgroups`] is the host's cgroup filesystem (detected once, cheap to
//! clone); a [`Cgroup`] is plain data naming one cgroup and the directories
//! yonggi made for it, so callers can store it and delete it after a restart.
//! Names come from [`Driver`] (cgroupfs or systemd naming of kubelet's
//! `cgroup_parent`). All calls are blocking file I/O on cgroupfs; the slow
//! ones (`kill_all`, `delete`) wait for processes to die, so async callers
//! run them on a blocking thread.
//!
//! yonggi only removes or kills what it was asked to: the cgroups it created
//! (recorded in `Cgroup`) and the processes inside a given cgroup.
//!
//! A container's life, as the container code drives it:
//!
//! ```no_run
//! # fn demo(oci: &oci_spec::runtime::LinuxResources, child_pid: i32)
//! #     -> Result<(), yonggi::runtime::cgroup::CgroupError> {
//! use std::time::Duration;
//! use yonggi::runtime::cgroup::{Cgroups, Driver, Resources};
//!
//! let cgroups = Cgroups::detect()?;
//! let driver = Driver::Cgroupfs; // from the config, as kubelet's
//! let pod = driver.pod_cgroup("/kubepods/burstable/pod1234")?;
//! let path = driver.container_cgroup(&pod, "0123abcd")?;
//! let cg = cgroups.create_with(&path, &Resources::try_from(oci)?)?;
//! // Store `cg` (it is serde) with the container, then start the process:
//! // on pure v2 with `clone3(CLONE_INTO_CGROUP)` and `cgroups.clone_into_fd(&cg)?`,
//! // elsewhere by moving it in:
//! cgroups.add_process(&cg, child_pid)?;
//! let usage = cgroups.stats(&cg)?;
//! let oom_killed = cgroups.oom_kills(&cg)? > 0;
//! cgroups.kill_all(&cg, Duration::from_secs(10))?;
//! cgroups.delete(&cg)?;
//! # let _ = (usage, oom_killed);
//! # Ok(()) }
//! ```

mod apply;
mod bpf;
mod devices;
mod fs;
mod hierarchy;
mod join;
mod path;
mod procs;
#[cfg(test)]
mod real_tests;
mod resources;
mod stats;
#[cfg(test)]
mod testfs;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use devices::{Access, DeviceKind, DeviceRule, default_device_rules};
pub use hierarchy::{Controller, Mode};
pub use path::{CgroupPath, Driver, SCOPE_PREFIX, expand_slice};
pub use resources::{HugepageLimit, Resources, shares_to_weight};
pub use stats::Stats;

use fs::{CgroupFs, HostFs};
use hierarchy::{Layout, Location};

/// Where cgroup filesystems are mounted on every distribution yonggi targets.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v1 or v2 hierarchy found under {0}")]
    NoHierarchy(PathBuf),
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("invalid systemd slice {name:?}: {reason}")]
    InvalidSlice { name: String, reason: &'static str },
    #[error("invalid {field}: {reason}")]
    InvalidResource { field: &'static str, reason: String },
    #[error("cgroup v2 setting {key:?} cannot be applied: this host uses cgroup {mode}")]
    UnifiedUnsupported { key: String, mode: Mode },
    #[error("unknown cgroup v2 setting {key:?} ({path} does not exist)")]
    UnknownUnifiedKey { key: String, path: PathBuf },
    #[error("the {0} cgroup controller is not available on this host")]
    ControllerUnavailable(Controller),
    #[error("a swap limit above the memory limit needs swap accounting, which this host lacks")]
    SwapUnsupported,
    #[error("huge page size {page_size} is not supported by this host ({path} does not exist)")]
    UnsupportedPageSize { page_size: String, path: PathBuf },
    #[error("cannot create cgroup directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup directory {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("unexpected content in {path}: {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("cannot install the device access program on {path}")]
    DeviceProgram {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open cgroup directory {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot signal process {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cgroup {path} still has processes after {waited_ms} ms of killing")]
    KillTimeout { path: CgroupPath, waited_ms: u128 },
}

/// Who is at fault for a [`CgroupError`], for callers choosing a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Malformed input, or a value the kernel refused as invalid (a CPU the
    /// host does not have): InvalidArgument.
    Input,
    /// Well-formed input this host cannot honour (cgroup v2 keys on v1, swap
    /// without swap accounting, a missing controller): FailedPrecondition.
    Unsupported,
    /// The host failed (I/O, processes that would not die): Internal.
    Host,
}

impl CgroupError {
    pub fn fault(&self) -> Fault {
        match self {
            CgroupError::InvalidPath { .. }
            | CgroupError::InvalidSlice { .. }
            | CgroupError::InvalidResource { .. }
            | CgroupError::UnknownUnifiedKey { .. } => Fault::Input,
            CgroupError::Write { source, .. }
                if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::ERANGE)) =>
            {
                Fault::Input
            }
            CgroupError::UnifiedUnsupported { .. }
            | CgroupError::ControllerUnavailable(_)
            | CgroupError::SwapUnsupported
            | CgroupError::UnsupportedPageSize { .. } => Fault::Unsupported,
            CgroupError::NoHierarchy(_)
            | CgroupError::Create { .. }
            | CgroupError::Remove { .. }
            | CgroupError::Read { .. }
            | CgroupError::Write { .. }
            | CgroupError::Parse { .. }
            | CgroupError::Open { .. }
            | CgroupError::DeviceProgram { .. }
            | CgroupError::Signal { .. }
            | CgroupError::KillTimeout { .. } => Fault::Host,
        }
    }
}

/// Whether a `mkdir` failed because its parent disappeared. That parent
/// is never one this call made (only its maker's delete removes a
/// directory), so walking down again is safe.
fn gone_meanwhile(e: &CgroupError) -> bool {
    matches!(e, CgroupError::Create { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// One cgroup: its path, and the directories yonggi created for it (so
/// deletion removes exactly those, leaf first, and never a parent someone
/// else made). Serializable so it can live in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    path: CgroupPath,
    /// Absolute directories made by `create`, outermost first.
    #[serde(default)]
    created: Vec<PathBuf>,
}

impl Cgroup {
    /// A cgroup yonggi did not create in this process's lifetime (or whose
    /// record was lost): `delete` removes only its leaf directories.
    pub fn existing(path: CgroupPath) -> Cgroup {
        Cgroup {
            path,
            created: Vec::new(),
        }
    }

    pub fn path(&self) -> &CgroupPath {
        &self.path
    }
}

/// The host's cgroup hierarchies.
#[derive(Debug, Clone)]
pub struct Cgroups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    fs: Box<dyn CgroupFs>,
    layout: Layout,
}

impl Cgroups {
    /// Detects the hierarchies under [`DEFAULT_ROOT`].
    pub fn detect() -> Result<Cgroups, CgroupError> {
        Cgroups::detect_at(Path::new(DEFAULT_ROOT))
    }

    /// Detects the hierarchies under `root` (a temp dir in tests).
    pub fn detect_at(root: &Path) -> Result<Cgroups, CgroupError> {
        Cgroups::with_fs(Box::new(HostFs), root)
    }

    fn with_fs(fs: Box<dyn CgroupFs>, root: &Path) -> Result<Cgroups, CgroupError> {
        let layout = Layout::detect(fs.as_ref(), root)?;
        Ok(Cgroups {
            inner: Arc::new(Inner { fs, layout }),
        })
    }

    pub fn mode(&self) -> Mode {
        self.inner.layout.mode
    }

    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    /// Whether the host can use [`Cgroups::clone_into_fd`] (pure v2).
    pub fn supports_clone_into(&self) -> bool {
        self.mode() == Mode::V2
    }

    /// Makes `path` (and missing parents) in every hierarchy, like `mkdir -p`.
    /// On v2 the controllers yonggi uses are enabled in each parent's
    /// `cgroup.subtree_control`; on v1 a new cpuset cgroup inherits its
    /// parent's CPUs and memory nodes (it starts empty, and an empty cpuset
    /// refuses tasks). Idempotent; a failure removes what this call made.
    pub fn create(&self, path: &CgroupPath) -> Result<Cgroup, CgroupError> {
        let mut created = Vec::new();
        match self.create_in_all(path, &mut created) {
            Ok(()) => Ok(Cgroup {
                path: path.clone(),
                created,
            }),
            Err(e) => {
                for dir in created.iter().rev() {
                    if let Err(err) = self.inner.fs.rmdir(dir) {
                        tracing::warn!(dir = %dir.display(), %err, "cannot roll back cgroup");
                    }
                }
                Err(e)
            }
        }
    }

    fn create_in_all(
        &self,
        path: &CgroupPath,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        let layout = &self.inner.layout;
        let cpuset_mount = match layout.location(Controller::Cpuset) {
            Some(Location::V1(dir)) => Some(dir),
            _ => None,
        };
        let v2_enable = layout.v2_enabled();
        for mount in layout.mounts() {
            let is_unified = layout.unified.as_ref() == Some(&mount);
            let is_cpuset = cpuset_mount.as_ref() == Some(&mount);
            let enable: &[Controller] = if is_unified { &v2_enable } else { &[] };
            // A parent shared with another pod can vanish between our
            // finding it and making our directory in it (that pod's delete
            // removed it): walk down again.
            let mut tries = 0;
            loop {
                match self.create_in_mount(&mount, path, enable, is_cpuset, created) {
                    Err(e) if gone_meanwhile(&e) && tries < 3 => tries += 1,
                    other => break other?,
                }
            }
        }
        Ok(())
    }

    fn create_in_mount(
        &self,
        mount: &Path,
        path: &CgroupPath,
        enable: &[Controller],
        is_cpuset: bool,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        let mut parent = mount.to_path_buf();
        for level in path.lineage() {
            if !enable.is_empty() {
                self.enable_controllers(&parent, enable)?;
            }
            let dir = mount.join(level.relative());
            match self.inner.fs.mkdir(&dir) {
                Ok(()) => {
                    created.push(dir.clone());
                    if is_cpuset {
                        self.inherit_cpuset(&parent, &dir)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(CgroupError::Create { path: dir, source }),
            }
            parent = dir;
        }
        Ok(())
    }

    /// [`Cgroups::create`] then [`Cgroups::apply`], checking the resources
    /// first and removing what was made if the kernel refuses a value, so a
    /// failed call leaves nothing behind.
    pub fn create_with(&self, path: &CgroupPath, res: &Resources) -> Result<Cgroup, CgroupError> {
        res.validate()?;
        if let Some(key) = res.unified.keys().next()
            && self.mode() != Mode::V2
        {
            return Err(CgroupError::UnifiedUnsupported {
                key: key.clone(),
                mode: self.mode(),
            });
        }
        let cg = self.create(path)?;
        if let Err(e) = self.apply(&cg, res) {
            if let Err(err) = self.delete(&cg) {
                tracing::warn!(path = %cg.path, %err, "cannot remove a cgroup after a failed apply");
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// Adds the controllers `parent` offers but does not yet pass down.
    fn enable_controllers(&self, parent: &Path, wanted: &[Controller]) -> Result<(), CgroupError> {
        let offered = self.read_string(&parent.join("cgroup.controllers"))?;
        let enabled = self.read_string(&parent.join("cgroup.subtree_control"))?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|c| offered.split_whitespace().any(|o| o == c.name()))
            .filter(|c| !enabled.split_whitespace().any(|o| o == c.name()))
            .map(|c| format!("+{}", c.name()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.write(&parent.join("cgroup.subtree_control"), &missing.join(" "))
    }

    fn inherit_cpuset(&self, parent: &Path, dir: &Path) -> Result<(), CgroupError> {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = self.read_string(&dir.join(file))?;
            if own.trim().is_empty() {
                let from_parent = self.read_string(&parent.join(file))?;
                self.write(&dir.join(file), from_parent.trim())?;
            }
        }
        Ok(())
    }

    /// Whether `cg` exists (in the first hierarchy yonggi uses).
    pub fn exists(&self, cg: &Cgroup) -> bool {
        self.inner
            .layout
            .mounts()
            .first()
            .is_some_and(|m| m.join(cg.path.relative()).is_dir())
    }

    /// Moves process `pid` (and its threads) into `cg` in every hierarchy.
    pub fn add_process(&self, cg: &Cgroup, pid: i32) -> Result<(), CgroupError> {
        for mount in self.inner.layout.mounts() {
            let file = mount.join(cg.path.relative()).join("cgroup.procs");
            self.write(&file, &pid.to_string())?;
        }
        Ok(())
    }

    /// A directory fd of `cg` for `clone3(CLONE_INTO_CGROUP)`, which starts
    /// a child directly in the cgroup and skips a `cgroup.procs` write that
    /// can stall for milliseconds. Only pure v2 has it: on hybrid the child
    /// would land in the unified hierarchy only, so None there and on v1
    /// (use [`Cgroups::add_process`]).
    pub fn clone_into_fd(&self, cg: &Cgroup) -> Result<Option<OwnedFd>, CgroupError> {
        use nix::fcntl::{OFlag, open};
        use nix::sys::stat::Mode as FileMode;
        if !self.supports_clone_into() {
            return Ok(None);
        }
        let dir = self.v2_dir(cg)?;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        open(&dir, flags, FileMode::empty())
            .map(Some)
            .map_err(|source| CgroupError::Open { path: dir, source })
    }

    /// `cg`'s directory in the hierarchy of a controller location.
    fn dir_at(&self, loc: &Location, cg: &Cgroup) -> Result<PathBuf, CgroupError> {
        match loc {
            Location::V1(mount) => Ok(mount.join(cg.path.relative())),
            Location::V2 => self.v2_dir(cg),
        }
    }

    fn v2_dir(&self, cg: &Cgroup) -> Result<PathBuf, CgroupError> {
        match &self.inner.layout.unified {
            Some(u) => Ok(u.join(cg.path.relative())),
            None => Err(CgroupError::NoHierarchy(self.root().join("unified"))),
        }
    }

    fn write(&self, file: &Path, value: &str) -> Result<(), CgroupError> {
        self.inner
            .fs
            .write(file, value)
            .map_err(|source| CgroupError::Write {
                path: file.to_path_buf(),
                value: value.to_string(),
                source,
            })
    }

    fn read_string(&self, file: &Path) -> Result<String, CgroupError> {
        self.inner
            .fs
            .read(file)
            .map_err(|source| CgroupError::Read {
                path: file.to_path_buf(),
                source,
            })
    }

    fn read_u64(&self, file: &Path) -> Result<u64, CgroupError> {
        let text = self.read_string(file)?;
        text.trim().parse().map_err(|_| CgroupError::Parse {
            path: file.to_path_buf(),
            content: text,
        })
    }
}
