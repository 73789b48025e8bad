//! A stand-in for cgroupfs in a temp dir: `mkdir` grows the control files
//! the kernel would show, writes go only to files that exist and are
//! logged in order, and the few files whose writes have side effects
//! (`cgroup.subtree_control`, `cgroup.kill`) behave like the kernel's.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fs::{CgroupFs, HostFs};

const V1_UNLIMITED: &str = "9223372036854771712";

#[derive(Debug, Clone)]
pub(crate) struct FakeFs {
    root: PathBuf,
    log: Arc<Mutex<Vec<(String, String)>>>,
    /// A directory whose first `mkdir` finds its parent removed, as when
    /// another pod's delete wins a race.
    vanish: Arc<Mutex<Option<PathBuf>>>,
}

impl FakeFs {
    pub(crate) fn new(root: &Path) -> FakeFs {
        FakeFs {
            root: root.to_path_buf(),
            log: Arc::default(),
            vanish: Arc::default(),
        }
    }

    pub(crate) fn vanish_parent_of(&self, dir: &Path) {
        *self.vanish.lock().expect("vanish lock") = Some(dir.to_path_buf());
    }

    /// Writes so far as (path below the root, value), oldest first; clears.
    pub(crate) fn take_log(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.log.lock().expect("log lock"))
    }

    /// A pure v2 host offering `controllers` at the root.
    pub(crate) fn layout_v2(&self, controllers: &str) {
        put(&self.root, "cgroup.controllers", controllers);
        put(&self.root, "cgroup.subtree_control", "");
        put(&self.root, "cgroup.procs", "");
        put(&self.root, "cpu.stat", "usage_usec 0\n");
    }

    /// A v1 host with one mount per controller (cpu and cpuacct co-mounted,
    /// as Debian and RHEL do). `hybrid` adds `unified` with only hugetlb,
    /// like the test machine, and takes hugetlb out of v1.
    pub(crate) fn layout_v1(&self, hybrid: bool) {
        let mut mounts = vec![
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "pids",
            "freezer",
            "devices",
            "systemd",
        ];
        if !hybrid {
            mounts.push("hugetlb");
        }
        for m in mounts {
            let dir = self.root.join(m);
            fs::create_dir_all(&dir).expect("mount dir");
            put(&dir, "cgroup.procs", "");
            put(&dir, "tasks", "");
        }
        put(&self.root.join("cpuset"), "cpuset.cpus", "0-1");
        put(&self.root.join("cpuset"), "cpuset.mems", "0");
        put(
            &self.root.join("memory"),
            "memory.limit_in_bytes",
            V1_UNLIMITED,
        );
        if hybrid {
            let u = self.root.join("unified");
            fs::create_dir_all(&u).expect("unified dir");
            put(&u, "cgroup.controllers", "hugetlb");
            put(&u, "cgroup.subtree_control", "");
            put(&u, "cgroup.procs", "");
        }
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }

    /// The files a new cgroup directory shows, by hierarchy.
    fn populate(&self, dir: &Path) -> io::Result<()> {
        put(dir, "cgroup.procs", "");
        let rel = self.rel(dir);
        let first = rel.split('/').next().unwrap_or_default();
        let v2 = self.root.join("cgroup.controllers").exists() || first == "unified";
        if v2 {
            let parent = dir.parent().unwrap_or(dir);
            let enabled = fs::read_to_string(parent.join("cgroup.subtree_control"))?;
            put(dir, "cgroup.controllers", &enabled);
            put(dir, "cgroup.subtree_control", "");
            put(dir, "cgroup.kill", "");
            put(dir, "cpu.stat", "usage_usec 0\n");
            for c in enabled.split_whitespace() {
                let files: &[(&str, &str)] = match c {
                    "cpu" => &[("cpu.weight", "100"), ("cpu.max", "max 100000")],
                    "cpuset" => &[("cpuset.cpus", ""), ("cpuset.mems", "")],
                    "memory" => &[
                        ("memory.max", "max"),
                        ("memory.swap.max", "max"),
                        ("memory.current", "0"),
                        ("memory.stat", ""),
                        ("memory.events", "oom 0\noom_kill 0\n"),
                    ],
                    "pids" => &[("pids.max", "max"), ("pids.current", "0")],
                    "hugetlb" => &[("hugetlb.2MB.max", "max")],
                    _ => &[],
                };
                for (f, v) in files {
                    put(dir, f, v);
                }
            }
            return Ok(());
        }
        put(dir, "tasks", "");
        for c in first.split(',') {
            let files: &[(&str, &str)] = match c {
                "cpu" => &[
                    ("cpu.shares", "1024"),
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", "-1"),
                ],
                "cpuacct" => &[("cpuacct.usage", "0")],
                "cpuset" => &[("cpuset.cpus", ""), ("cpuset.mems", "")],
                "memory" => &[
                    ("memory.limit_in_bytes", V1_UNLIMITED),
                    ("memory.memsw.limit_in_bytes", V1_UNLIMITED),
                    ("memory.usage_in_bytes", "0"),
                    ("memory.memsw.usage_in_bytes", "0"),
                    ("memory.stat", ""),
                    (
                        "memory.oom_control",
                        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                    ),
                ],
                "pids" => &[("pids.max", "max"), ("pids.current", "0")],
                "freezer" => &[("freezer.state", "THAWED")],
                "devices" => &[
                    ("devices.allow", ""),
                    ("devices.deny", ""),
                    ("devices.list", ""),
                ],
                "hugetlb" => &[("hugetlb.2MB.limit_in_bytes", V1_UNLIMITED)],
                _ => &[],
            };
            for (f, v) in files {
                put(dir, f, v);
            }
        }
        Ok(())
    }
}

/// `cgroup.kill` empties the whole subtree.
fn clear_procs(dir: &Path) -> io::Result<()> {
    fs::write(dir.join("cgroup.procs"), "")?;
    for sub in HostFs.subdirs(dir)? {
        clear_procs(&sub)?;
    }
    Ok(())
}

/// Sets a file's content directly, as the kernel would (not logged).
pub(crate) fn put(dir: &Path, file: &str, value: &str) {
    fs::write(dir.join(file), value).expect("fake cgroup file");
}

impl CgroupFs for FakeFs {
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        let mut vanish = self.vanish.lock().expect("vanish lock");
        if vanish.as_deref() == Some(dir) {
            *vanish = None;
            if let Some(parent) = dir.parent() {
                fs::remove_dir_all(parent)?;
            }
        }
        drop(vanish);
        fs::create_dir(dir)?;
        self.populate(dir)
    }

    fn rmdir(&self, dir: &Path) -> io::Result<()> {
        // A real cgroup directory goes away with its control files, but not
        // while it has child cgroups or processes.
        if !HostFs.subdirs(dir)?.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        }
        if !fs::read_to_string(dir.join("cgroup.procs"))?
            .trim()
            .is_empty()
        {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        fs::remove_dir_all(dir)
    }

    fn read(&self, file: &Path) -> io::Result<String> {
        // Write-only in the kernel: reading fails with EINVAL, even as root.
        if file.file_name().is_some_and(|n| n == "cgroup.kill") {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        fs::read_to_string(file)
    }

    fn exists(&self, file: &Path) -> bool {
        file.exists()
    }

    fn write(&self, file: &Path, value: &str) -> io::Result<()> {
        if !file.is_file() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.log
            .lock()
            .expect("log lock")
            .push((self.rel(file), value.to_string()));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let dir = file.parent().unwrap_or(file);
        match name {
            "cgroup.subtree_control" => {
                let mut have = fs::read_to_string(file)?;
                for c in value.split_whitespace() {
                    if let Some(c) = c.strip_prefix('+') {
                        have.push_str(if have.is_empty() { "" } else { " " });
                        have.push_str(c);
                    }
                }
                fs::write(file, have)
            }
            "cgroup.kill" => clear_procs(dir),
            _ => fs::write(file, value),
        }
    }

    fn subdirs(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        HostFs.subdirs(dir)
    }
}
