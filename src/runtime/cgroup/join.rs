//! What a container's monitor needs from a cgroup: where its init writes
//! `cgroup.procs` to join (it joins itself, before any namespace or mount
//! work, so everything it does is accounted), and which file holds the
//! OOM-kill counter the monitor compares before and after the exit.

use std::path::PathBuf;

use super::hierarchy::{Controller, Location};
use super::{Cgroup, CgroupError, Cgroups};

impl Cgroups {
    /// `cg`'s directory in every hierarchy it is made in (each v1 mount
    /// yonggi uses, then the unified one), in [`Cgroups::add_process`]'s
    /// order.
    pub fn dirs(&self, cg: &Cgroup) -> Vec<PathBuf> {
        self.inner
            .layout
            .mounts()
            .iter()
            .map(|m| m.join(cg.path.relative()))
            .collect()
    }

    /// The file with `cg`'s `oom_kill` counter: v1 `memory.oom_control`,
    /// v2 `memory.events`.
    pub fn oom_events_file(&self, cg: &Cgroup) -> Result<PathBuf, CgroupError> {
        let loc = self
            .inner
            .layout
            .location(Controller::Memory)
            .ok_or(CgroupError::ControllerUnavailable(Controller::Memory))?;
        Ok(match &loc {
            Location::V1(mount) => mount.join(cg.path.relative()).join("memory.oom_control"),
            Location::V2 => self.v2_dir(cg)?.join("memory.events"),
        })
    }
}
