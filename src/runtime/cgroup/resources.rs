//! The limits a cgroup can carry, in the terms of the OCI runtime spec
//! (which is what the container code builds), checked before anything is
//! written, and the conversions cgroup v2 needs.

use std::collections::BTreeMap;

use oci_spec::runtime::LinuxResources;

use super::CgroupError;
use super::devices::DeviceRule;

/// Resource limits for one cgroup. `None` leaves a setting as it is, so the
/// same struct serves creation and `UpdateContainerResources`. The CRI's
/// and OCI's "0 means unset" is `None` here (`TryFrom<&LinuxResources>`
/// does that mapping); an explicit zero memory limit or quota is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Relative CPU weight in v1 shares (2..=262144); v2 gets `cpu.weight`
    /// through [`shares_to_weight`].
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period; negative means no limit.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds (1000..=1000000).
    pub cpu_period: Option<u64>,
    /// CPUs allowed, in the kernel's list format (`0-3,6`).
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed, list format.
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes; negative means no limit.
    pub memory_limit: Option<i64>,
    /// Memory plus swap in bytes, as in OCI and v1's `memsw`; negative means
    /// unlimited swap. v2 gets `memory.swap.max` = this minus the memory limit.
    pub memory_swap: Option<i64>,
    /// Maximum number of tasks; zero or negative means no limit.
    pub pids_limit: Option<i64>,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// Device access rules, replacing the cgroup's current ones as a whole
    /// (see [`super::default_device_rules`]); None leaves them as they are.
    pub devices: Option<Vec<DeviceRule>>,
    /// Raw cgroup v2 settings, file name → value; rejected unless the host
    /// is pure cgroup v2.
    pub unified: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepageLimit {
    /// As the kernel names it: `2MB`, `1GB`, `64KB`.
    pub page_size: String,
    /// Bytes.
    pub limit: u64,
}

/// The CFS period bounds the kernel accepts, in microseconds.
const PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
const MIN_QUOTA: i64 = 1_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

impl Resources {
    /// Checks every value before any of them is written, so bad input
    /// changes nothing.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if let Some(p) = self.cpu_period
            && !PERIOD_RANGE.contains(&p)
        {
            return Err(invalid(
                "cpu period",
                format!("{p}µs is outside 1000..=1000000"),
            ));
        }
        if let Some(q) = self.cpu_quota
            && (0..MIN_QUOTA).contains(&q)
        {
            return Err(invalid("cpu quota", format!("{q}µs is below 1000µs")));
        }
        if let Some(cpus) = &self.cpuset_cpus {
            check_list("cpuset cpus", cpus)?;
        }
        if let Some(mems) = &self.cpuset_mems {
            check_list("cpuset mems", mems)?;
        }
        if let Some(m) = self.memory_limit
            && m == 0
        {
            return Err(invalid("memory limit", "0 bytes leaves no memory".into()));
        }
        if let Some(swap) = self.memory_swap
            && swap >= 0
        {
            match self.memory_limit {
                Some(m) if m > 0 && swap < m => {
                    return Err(invalid(
                        "memory swap",
                        format!("memory+swap {swap} is below the memory limit {m}"),
                    ));
                }
                Some(m) if m > 0 => {}
                _ => {
                    return Err(invalid(
                        "memory swap",
                        "a swap limit needs a memory limit".into(),
                    ));
                }
            }
        }
        for h in &self.hugepage_limits {
            if !is_page_size(&h.page_size) {
                return Err(invalid(
                    "hugepage size",
                    format!("{:?} is not like 2MB or 1GB", h.page_size),
                ));
            }
        }
        for (key, value) in &self.unified {
            let ok_key = !key.is_empty()
                && !key.starts_with('.')
                && key.contains('.')
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
            if !ok_key {
                return Err(invalid(
                    "unified key",
                    format!("{key:?} is not a cgroup control file name"),
                ));
            }
            if value.contains('\0') {
                return Err(invalid("unified value", format!("{key}: contains NUL")));
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: String) -> CgroupError {
    CgroupError::InvalidResource { field, reason }
}

/// The kernel's list format: `0`, `0-3`, `0-3,8,10-11`.
fn check_list(field: &'static str, list: &str) -> Result<(), CgroupError> {
    let bad = || invalid(field, format!("{list:?} is not a list like 0-3,6"));
    if list.is_empty() {
        return Err(bad());
    }
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u32 = lo.parse().map_err(|_| bad())?;
        let hi: u32 = hi.parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
    }
    Ok(())
}

fn is_page_size(s: &str) -> bool {
    let Some(num) = s
        .strip_suffix("KB")
        .or_else(|| s.strip_suffix("MB"))
        .or_else(|| s.strip_suffix("GB"))
    else {
        return false;
    };
    !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())
}

/// v1 `cpu.shares` → v2 `cpu.weight`, the mapping runc, crun and kubelet
/// share: the share range 2..=262144 onto the weight range 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES)
}

/// The v2 `cpu.max` value, or None when neither quota nor period is set.
pub(crate) fn v2_cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    if quota.is_none() && period.is_none() {
        return None;
    }
    let mut out = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    if let Some(p) = period {
        out.push(' ');
        out.push_str(&p.to_string());
    }
    Some(out)
}

/// The v2 `memory.swap.max` value: v2 limits swap alone where OCI (and v1)
/// limit memory plus swap. Assumes [`Resources::validate`] passed.
pub(crate) fn v2_swap_max(memory: Option<i64>, swap: Option<i64>) -> Option<String> {
    match (swap, memory) {
        (None, _) => None,
        (Some(s), _) if s < 0 => Some("max".to_string()),
        (Some(s), Some(m)) if m > 0 => Some(s.saturating_sub(m).to_string()),
        // validate() refuses a swap limit without a memory limit.
        (Some(_), _) => None,
    }
}

/// A v2 limit value: a negative number means no limit.
pub(crate) fn v2_limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

impl TryFrom<&LinuxResources> for Resources {
    type Error = CgroupError;

    /// OCI uses 0 (or an empty string) for "not set" in several places, as
    /// the CRI does; those become `None` here. Fails on a malformed device
    /// rule.
    fn try_from(r: &LinuxResources) -> Result<Resources, CgroupError> {
        let nonzero_u = |v: Option<u64>| v.filter(|v| *v != 0);
        let nonzero_i = |v: Option<i64>| v.filter(|v| *v != 0);
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let mut out = Resources::default();
        if let Some(cpu) = r.cpu() {
            out.cpu_shares = nonzero_u(cpu.shares());
            out.cpu_quota = nonzero_i(cpu.quota());
            out.cpu_period = nonzero_u(cpu.period());
            out.cpuset_cpus = nonempty(cpu.cpus());
            out.cpuset_mems = nonempty(cpu.mems());
        }
        if let Some(mem) = r.memory() {
            out.memory_limit = nonzero_i(mem.limit());
            out.memory_swap = nonzero_i(mem.swap());
        }
        if let Some(pids) = r.pids() {
            out.pids_limit = nonzero_i(Some(pids.limit()));
        }
        for h in r.hugepage_limits().iter().flatten() {
            out.hugepage_limits.push(HugepageLimit {
                page_size: h.page_size().clone(),
                limit: u64::try_from(h.limit()).unwrap_or(0),
            });
        }
        if let Some(u) = r.unified() {
            out.unified = u.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if let Some(devices) = r.devices() {
            out.devices = Some(
                devices
                    .iter()
                    .map(DeviceRule::from_oci)
                    .collect::<Result<_, _>>()?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_onto_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(102), 4);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out of range shares are clamped as the v1 kernel does.
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
    }

    #[test]
    fn swap_is_memory_plus_swap_minus_memory_on_v2() {
        let mib = 1 << 20;
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(96 * mib)).as_deref(),
            Some("33554432")
        );
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(64 * mib)).as_deref(),
            Some("0")
        );
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(-1)).as_deref(),
            Some("max")
        );
        assert_eq!(v2_swap_max(Some(64 * mib), None), None);
    }

    #[test]
    fn cpu_max_combines_quota_and_period() {
        assert_eq!(
            v2_cpu_max(Some(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(
            v2_cpu_max(Some(-1), Some(100_000)).as_deref(),
            Some("max 100000")
        );
        assert_eq!(v2_cpu_max(Some(20_000), None).as_deref(), Some("20000"));
        assert_eq!(v2_cpu_max(None, None), None);
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            Resources {
                cpu_period: Some(10),
                ..Default::default()
            },
            Resources {
                cpu_quota: Some(5),
                ..Default::default()
            },
            Resources {
                cpuset_cpus: Some("0-".into()),
                ..Default::default()
            },
            Resources {
                cpuset_mems: Some("3-1".into()),
                ..Default::default()
            },
            Resources {
                memory_limit: Some(100 << 20),
                memory_swap: Some(50 << 20),
                ..Default::default()
            },
            Resources {
                memory_swap: Some(50 << 20),
                ..Default::default()
            },
            Resources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2M".into(),
                    limit: 0,
                }],
                ..Default::default()
            },
            Resources {
                unified: [("../memory.max".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
        ];
        for r in cases {
            assert!(
                matches!(r.validate(), Err(CgroupError::InvalidResource { .. })),
                "{r:?} accepted"
            );
        }
        let good = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(-1),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0-1,3".into()),
            memory_limit: Some(64 << 20),
            memory_swap: Some(-1),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        good.validate().expect("valid resources");
    }

    #[test]
    fn oci_zeroes_mean_unset() {
        use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
        let oci = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(0u64)
                    .quota(20_000i64)
                    .period(100_000u64)
                    .cpus("")
                    .build()
                    .expect("cpu"),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1i64 << 26)
                    .swap(0i64)
                    .build()
                    .expect("memory"),
            )
            .build()
            .expect("resources");
        let r = Resources::try_from(&oci).expect("convert");
        assert_eq!(
            r,
            Resources {
                cpu_quota: Some(20_000),
                cpu_period: Some(100_000),
                memory_limit: Some(1 << 26),
                ..Default::default()
            }
        );
    }
}
