//! Usage figures of a cgroup, computed the way kubelet (through cadvisor)
//! computes them, so `ContainerStats` agrees with what kubelet would read.

use std::collections::HashMap;
use std::path::Path;

use super::hierarchy::{Controller, Location};
use super::{Cgroup, CgroupError, Cgroups};

/// One reading of a cgroup's usage. Figures of a controller the host lacks
/// are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used by all tasks, nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages: what kubelet evicts on.
    pub memory_working_set_bytes: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub memory_rss_bytes: u64,
    /// The memory limit, None when unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub swap_usage_bytes: u64,
    /// Tasks (threads) in the cgroup.
    pub pids: u64,
    /// Processes the kernel's OOM killer killed in this cgroup.
    pub oom_kills: u64,
}

/// v1 reports "no limit" as the largest page-aligned counter value; anything
/// this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

impl Cgroups {
    pub fn stats(&self, cg: &Cgroup) -> Result<Stats, CgroupError> {
        let layout = &self.inner.layout;
        let mut s = Stats::default();

        // v2 has CPU usage in every cgroup (`cpu.stat` is a core file); v1
        // in cpuacct.
        match layout.location(Controller::Cpuacct) {
            Some(loc @ Location::V1(_)) => {
                s.cpu_usage_ns = self.read_u64(&self.dir_at(&loc, cg)?.join("cpuacct.usage"))?;
            }
            _ if layout.mode == super::Mode::V2 => {
                let dir = self.v2_dir(cg)?;
                let stat = self.read_keyed(&dir.join("cpu.stat"))?;
                s.cpu_usage_ns = stat.get("usage_usec").copied().unwrap_or(0) * 1000;
            }
            _ => {}
        }

        if let Some(loc) = layout.location(Controller::Memory) {
            let dir = self.dir_at(&loc, cg)?;
            self.memory_stats(&loc, &dir, &mut s)?;
        }

        s.pids = match layout.location(Controller::Pids) {
            Some(loc) => self.read_u64(&self.dir_at(&loc, cg)?.join("pids.current"))?,
            None => u64::try_from(self.pids(cg)?.len()).unwrap_or(u64::MAX),
        };
        Ok(s)
    }

    fn memory_stats(&self, loc: &Location, dir: &Path, s: &mut Stats) -> Result<(), CgroupError> {
        let stat = self.read_keyed(&dir.join("memory.stat"))?;
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        let inactive_file = match loc {
            Location::V1(_) => {
                s.memory_usage_bytes = self.read_u64(&dir.join("memory.usage_in_bytes"))?;
                let limit = self.read_u64(&dir.join("memory.limit_in_bytes"))?;
                s.memory_limit_bytes = (limit < V1_UNLIMITED).then_some(limit);
                s.memory_rss_bytes = get("total_rss");
                s.page_faults = get("total_pgfault");
                s.major_page_faults = get("total_pgmajfault");
                if let Ok(text) = self.inner.fs.read(&dir.join("memory.memsw.usage_in_bytes"))
                    && let Ok(memsw) = text.trim().parse::<u64>()
                {
                    s.swap_usage_bytes = memsw.saturating_sub(s.memory_usage_bytes);
                }
                s.oom_kills = self
                    .read_keyed(&dir.join("memory.oom_control"))?
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0);
                get("total_inactive_file")
            }
            Location::V2 => {
                s.memory_usage_bytes = self.read_u64(&dir.join("memory.current"))?;
                let max = self.read_string(&dir.join("memory.max"))?;
                s.memory_limit_bytes = max.trim().parse().ok();
                s.memory_rss_bytes = get("anon");
                s.page_faults = get("pgfault");
                s.major_page_faults = get("pgmajfault");
                if let Ok(text) = self.inner.fs.read(&dir.join("memory.swap.current"))
                    && let Ok(swap) = text.trim().parse::<u64>()
                {
                    s.swap_usage_bytes = swap;
                }
                s.oom_kills = self
                    .read_keyed(&dir.join("memory.events"))?
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0);
                get("inactive_file")
            }
        };
        s.memory_working_set_bytes = s.memory_usage_bytes.saturating_sub(inactive_file);
        Ok(())
    }

    /// How many processes of `cg` the OOM killer has killed (v2
    /// `memory.events` `oom_kill`, v1 `memory.oom_control` `oom_kill`). The
    /// monitor reads it before and after the container exits.
    pub fn oom_kills(&self, cg: &Cgroup) -> Result<u64, CgroupError> {
        let loc = self
            .inner
            .layout
            .location(Controller::Memory)
            .ok_or(CgroupError::ControllerUnavailable(Controller::Memory))?;
        let dir = self.dir_at(&loc, cg)?;
        let file = match loc {
            Location::V1(_) => dir.join("memory.oom_control"),
            Location::V2 => dir.join("memory.events"),
        };
        Ok(self
            .read_keyed(&file)?
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }

    /// A flat `key value` file (`memory.stat`, `cpu.stat`, `memory.events`).
    fn read_keyed(&self, file: &Path) -> Result<HashMap<String, u64>, CgroupError> {
        let text = self.read_string(file)?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }
}
