//! Writing [`Resources`] to a cgroup: each controller to the hierarchy that
//! holds it, in v1 or v2 file names.

use std::path::{Path, PathBuf};

use super::hierarchy::{Controller, Location, Mode};
use super::resources::{Resources, shares_to_weight, v2_cpu_max, v2_limit, v2_swap_max};
use super::{Cgroup, CgroupError, Cgroups};

impl Cgroups {
    /// Sets the limits in `res` on `cg`, leaving unset ones alone; used at
    /// creation and for updates. Everything is validated before the first
    /// write. `unified` settings are refused unless the host is pure v2.
    pub fn apply(&self, cg: &Cgroup, res: &Resources) -> Result<(), CgroupError> {
        res.validate()?;
        if let Some(key) = res.unified.keys().next()
            && self.mode() != Mode::V2
        {
            return Err(CgroupError::UnifiedUnsupported {
                key: key.clone(),
                mode: self.mode(),
            });
        }
        // Find every hierarchy and file first, so a missing controller,
        // page size, swap accounting or v2 key fails before anything
        // changed.
        let cpu_wanted =
            res.cpu_shares.is_some() || res.cpu_quota.is_some() || res.cpu_period.is_some();
        let cpu = self.dir_if(cg, Controller::Cpu, cpu_wanted)?;
        let cpuset_wanted = res.cpuset_cpus.is_some() || res.cpuset_mems.is_some();
        let cpuset = self.dir_if(cg, Controller::Cpuset, cpuset_wanted)?;
        let memory_wanted = res.memory_limit.is_some() || res.memory_swap.is_some();
        let memory = match self.dir_if(cg, Controller::Memory, memory_wanted)? {
            Some((loc, dir)) => Some(self.plan_memory(&loc, dir, res)?),
            None => None,
        };
        let pids = self.dir_if(cg, Controller::Pids, res.pids_limit.is_some())?;
        let mut hugetlb = Vec::new();
        if let Some((loc, dir)) =
            self.dir_if(cg, Controller::Hugetlb, !res.hugepage_limits.is_empty())?
        {
            for h in &res.hugepage_limits {
                let file = dir.join(match loc {
                    Location::V1(_) => format!("hugetlb.{}.limit_in_bytes", h.page_size),
                    Location::V2 => format!("hugetlb.{}.max", h.page_size),
                });
                if !self.inner.fs.exists(&file) {
                    return Err(CgroupError::UnsupportedPageSize {
                        page_size: h.page_size.clone(),
                        path: file,
                    });
                }
                hugetlb.push((file, h.limit.to_string()));
            }
        }
        // v1 has a devices controller; v2 takes an eBPF program instead.
        let devices = match &res.devices {
            None => None,
            Some(_) if self.mode() == Mode::V2 => Some((Location::V2, self.v2_dir(cg)?)),
            Some(_) => self.dir_if(cg, Controller::Devices, true)?,
        };
        let mut unified = Vec::new();
        if !res.unified.is_empty() {
            let dir = self.v2_dir(cg)?;
            for (key, value) in &res.unified {
                let file = dir.join(key);
                if !self.inner.fs.exists(&file) {
                    return Err(CgroupError::UnknownUnifiedKey {
                        key: key.clone(),
                        path: file,
                    });
                }
                unified.push((file, value));
            }
        }

        if let Some((loc, dir)) = cpu {
            self.apply_cpu(&loc, &dir, res)?;
        }
        if let Some((_, dir)) = cpuset {
            // The file names are the same on v1 and v2.
            if let Some(cpus) = &res.cpuset_cpus {
                self.write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = &res.cpuset_mems {
                self.write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let Some(plan) = memory {
            self.write_memory(plan)?;
        }
        if let (Some((_, dir)), Some(limit)) = (pids, res.pids_limit) {
            let value = if limit > 0 {
                limit.to_string()
            } else {
                "max".into()
            };
            self.write(&dir.join("pids.max"), &value)?;
        }
        for (file, value) in hugetlb {
            self.write(&file, &value)?;
        }
        if let (Some((loc, dir)), Some(rules)) = (devices, &res.devices) {
            match loc {
                Location::V1(_) => {
                    for rule in rules {
                        self.write(&dir.join(rule.v1_file()), &rule.v1_line())?;
                    }
                }
                Location::V2 => super::bpf::install(&dir, rules)
                    .map_err(|source| CgroupError::DeviceProgram { path: dir, source })?,
            }
        }
        // Raw v2 settings last: they are the caller's override of the above.
        for (file, value) in unified {
            self.write(&file, value)?;
        }
        Ok(())
    }

    /// The directory of `cg` in the hierarchy holding `c`, when `wanted`.
    fn dir_if(
        &self,
        cg: &Cgroup,
        c: Controller,
        wanted: bool,
    ) -> Result<Option<(Location, PathBuf)>, CgroupError> {
        if !wanted {
            return Ok(None);
        }
        let loc = self
            .inner
            .layout
            .location(c)
            .ok_or(CgroupError::ControllerUnavailable(c))?;
        let dir = self.dir_at(&loc, cg)?;
        Ok(Some((loc, dir)))
    }

    fn apply_cpu(&self, loc: &Location, dir: &Path, res: &Resources) -> Result<(), CgroupError> {
        match loc {
            Location::V1(_) => {
                if let Some(shares) = res.cpu_shares {
                    self.write(&dir.join("cpu.shares"), &shares.to_string())?;
                }
                let quota = res.cpu_quota.map(|q| if q > 0 { q } else { -1 });
                let quota_file = dir.join("cpu.cfs_quota_us");
                if let Some(period) = res.cpu_period {
                    let period_file = dir.join("cpu.cfs_period_us");
                    match self.inner.fs.write(&period_file, &period.to_string()) {
                        Ok(()) => {}
                        // The kernel checks the new period against the
                        // current quota; with a new quota, set that first.
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota.is_some() => {
                            if let Some(q) = quota {
                                self.write(&quota_file, &q.to_string())?;
                            }
                            self.write(&period_file, &period.to_string())?;
                            return Ok(());
                        }
                        Err(source) => {
                            return Err(CgroupError::Write {
                                path: period_file,
                                value: period.to_string(),
                                source,
                            });
                        }
                    }
                }
                if let Some(q) = quota {
                    self.write(&quota_file, &q.to_string())?;
                }
            }
            Location::V2 => {
                if let Some(shares) = res.cpu_shares {
                    self.write(
                        &dir.join("cpu.weight"),
                        &shares_to_weight(shares).to_string(),
                    )?;
                }
                if let Some(max) = v2_cpu_max(res.cpu_quota, res.cpu_period) {
                    self.write(&dir.join("cpu.max"), &max)?;
                }
            }
        }
        Ok(())
    }

    /// What to write for memory and swap, after checking that the host
    /// can do it.
    fn plan_memory(
        &self,
        loc: &Location,
        dir: PathBuf,
        res: &Resources,
    ) -> Result<MemoryPlan, CgroupError> {
        match loc {
            Location::V1(_) => {
                let memory = res.memory_limit.map(|m| m.max(-1));
                // Lifting the memory limit needs memsw lifted too, or the
                // kernel refuses it.
                let mut swap = match (memory, res.memory_swap) {
                    (Some(-1), None) => Some(-1),
                    (_, s) => s.map(|s| s.max(-1)),
                };
                if swap.is_some() && !self.inner.fs.exists(&dir.join(V1_MEMSW)) {
                    // No swap accounting (kernel built or booted without
                    // it): fine as long as no swap beyond the memory limit
                    // was asked for.
                    match (memory, swap) {
                        (_, Some(-1)) => swap = None,
                        (Some(m), Some(s)) if m == s => swap = None,
                        _ => return Err(CgroupError::SwapUnsupported),
                    }
                }
                Ok(MemoryPlan::V1 { dir, memory, swap })
            }
            Location::V2 => {
                let memory = res.memory_limit.map(v2_limit);
                let mut swap = v2_swap_max(res.memory_limit, res.memory_swap);
                if swap.is_some() && !self.inner.fs.exists(&dir.join("memory.swap.max")) {
                    // No swap accounting: only "no swap beyond memory" holds.
                    match swap.as_deref() {
                        Some("0") | Some("max") => swap = None,
                        _ => return Err(CgroupError::SwapUnsupported),
                    }
                }
                Ok(MemoryPlan::V2 { dir, memory, swap })
            }
        }
    }

    /// v1 keeps `memsw >= memory` at every moment, so the order of the two
    /// writes depends on whether the limits grow or shrink.
    fn write_memory(&self, plan: MemoryPlan) -> Result<(), CgroupError> {
        match plan {
            MemoryPlan::V1 { dir, memory, swap } => {
                let mem_file = dir.join("memory.limit_in_bytes");
                let swap_file = dir.join(V1_MEMSW);
                match (memory, swap) {
                    (Some(m), Some(s)) => {
                        let current = self.read_u64(&mem_file)?;
                        let grows = s == -1 || u64::try_from(s).is_ok_and(|s| s >= current);
                        if grows {
                            self.write(&swap_file, &s.to_string())?;
                            self.write(&mem_file, &m.to_string())?;
                        } else {
                            self.write(&mem_file, &m.to_string())?;
                            self.write(&swap_file, &s.to_string())?;
                        }
                    }
                    (Some(m), None) => self.write(&mem_file, &m.to_string())?,
                    (None, Some(s)) => self.write(&swap_file, &s.to_string())?,
                    (None, None) => {}
                }
            }
            MemoryPlan::V2 { dir, memory, swap } => {
                if let Some(m) = memory {
                    self.write(&dir.join("memory.max"), &m)?;
                }
                if let Some(s) = swap {
                    self.write(&dir.join("memory.swap.max"), &s)?;
                }
            }
        }
        Ok(())
    }
}

const V1_MEMSW: &str = "memory.memsw.limit_in_bytes";

/// Memory settings checked and ready to write.
enum MemoryPlan {
    /// Bytes, -1 for no limit.
    V1 {
        dir: PathBuf,
        memory: Option<i64>,
        swap: Option<i64>,
    },
    /// `memory.max` and `memory.swap.max` values.
    V2 {
        dir: PathBuf,
        memory: Option<String>,
        swap: Option<String>,
    },
}
