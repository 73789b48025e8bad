//! The few filesystem operations the cgroup code performs, behind a trait so
//! unit tests can stand in for the kernel: a plain temp dir does not grow
//! `cpuset.cpus` or `cgroup.controllers` when a directory is made, and tests
//! want to see the order of writes (memory before swap matters on v1).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub(crate) trait CgroupFs: Send + Sync + std::fmt::Debug {
    /// Makes one directory (not its parents).
    fn mkdir(&self, dir: &Path) -> io::Result<()>;
    fn rmdir(&self, dir: &Path) -> io::Result<()>;
    fn read(&self, file: &Path) -> io::Result<String>;
    /// Whether a control file exists; some (`cgroup.kill`) are write-only,
    /// and reading them fails even as root.
    fn exists(&self, file: &Path) -> bool;
    /// Writes `value` to an existing control file in one `write(2)`: the
    /// kernel parses each write on its own, so a split write would be two
    /// settings.
    fn write(&self, file: &Path, value: &str) -> io::Result<()>;
    /// Child directories of `dir` (the child cgroups).
    fn subdirs(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real cgroup filesystem.
#[derive(Debug, Default)]
pub(crate) struct HostFs;

impl CgroupFs for HostFs {
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)
    }

    fn rmdir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn read(&self, file: &Path) -> io::Result<String> {
        fs::read_to_string(file)
    }

    fn exists(&self, file: &Path) -> bool {
        file.exists()
    }

    fn write(&self, file: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT: a control file that does not exist is an unsupported
        // setting, and must fail rather than leave a stray regular file.
        let mut f = OpenOptions::new().write(true).truncate(true).open(file)?;
        let written = f.write(value.as_bytes())?;
        if written != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to a cgroup control file",
            ));
        }
        Ok(())
    }

    fn subdirs(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.path());
            }
        }
        Ok(out)
    }
}
