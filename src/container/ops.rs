//! What runs against a live container: ExecSync, UpdateContainerResources,
//! ReopenContainerLog, stats.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Container, ContainerError, ContainerResources, Service, State, now_ns};
use crate::runtime::cgroup::Stats;
use crate::runtime::exec::{ExecSpec, SETUP_FAILED};
use crate::snapshot::Usage;
use crate::state::Bucket;

/// Each of stdout and stderr of an ExecSync is kept up to this size.
pub const EXEC_OUTPUT_CAP: usize = 16 << 20;

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// A container's numbers for ContainerStats.
pub struct ContainerStats {
    pub timestamp: i64,
    pub cgroup: Stats,
    pub writable: Usage,
}

impl Service {
    fn running(&self, id: &str) -> Result<Container, ContainerError> {
        let c = self.get(id)?;
        if c.state() != State::Running {
            return Err(ContainerError::WrongState {
                id: c.id.clone(),
                state: super::lifecycle::state_name(c.state()),
                wanted: "running",
            });
        }
        Ok(c)
    }

    /// The `yonggi exec` spec for `args` in the container: its process
    /// (user, env, cwd, capabilities) with the command replaced.
    pub fn exec_spec(
        &self,
        id: &str,
        args: Vec<String>,
        tty: bool,
    ) -> Result<(Container, PathBuf), ContainerError> {
        let c = self.running(id)?;
        let spec_path = crate::monitor::Paths::spec(&c.dir);
        let spec = oci_spec::runtime::Spec::load(&spec_path).map_err(ContainerError::Spec)?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(args));
        process.set_terminal(Some(tty));
        let tag = hex::encode(rand::random::<[u8; 8]>());
        let exec = ExecSpec {
            init_pid: c.init_pid,
            process,
            cgroup_dirs: c
                .cgroup
                .as_ref()
                .map(|cg| self.cgroups.dirs(cg))
                .unwrap_or_default(),
            report: c.dir.join(format!("exec-{tag}.report")),
            seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        };
        let path = c.dir.join(format!("exec-{tag}.json"));
        let bytes = serde_json::to_vec(&exec).map_err(std::io::Error::other);
        bytes
            .and_then(|b| std::fs::write(&path, b))
            .map_err(|source| ContainerError::Io {
                action: "write the exec spec",
                path: path.clone(),
                source,
            })?;
        Ok((c, path))
    }

    /// Runs `args` in the container and collects its output; past
    /// `timeout` (if any) the command and all it started are killed.
    pub async fn exec_sync(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ContainerError> {
        let (_c, path) = self.exec_spec(id, args, false)?;
        let report = path.with_extension("report");
        let result = self.run_exec(&path, timeout).await;
        let setup = std::fs::read_to_string(&report).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&report);
        let out = result?;
        if out.exit_code == i32::from(SETUP_FAILED) && !setup.trim().is_empty() {
            return Err(ContainerError::ExecSetup(setup.trim().to_string()));
        }
        Ok(out)
    }

    async fn run_exec(
        &self,
        path: &PathBuf,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ContainerError> {
        let exe = self.exe()?;
        let mut child = tokio::process::Command::new(&exe)
            .arg("exec")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ContainerError::Io {
                action: "run",
                path: exe.clone(),
                source,
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let out = tokio::spawn(read_capped(stdout));
        let err = tokio::spawn(read_capped(stderr));
        let status = match timeout {
            None => child.wait().await,
            Some(t) => match tokio::time::timeout(t, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    // SIGTERM makes the helper kill the command's session
                    // and reap it before it exits itself.
                    if let Some(pid) = child.id() {
                        let pid = nix::unistd::Pid::from_raw(pid as i32);
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                    }
                    let _ = child.wait().await;
                    return Err(ContainerError::Timeout(t));
                }
            },
        }
        .map_err(|source| ContainerError::Io {
            action: "wait for",
            path: exe.clone(),
            source,
        })?;
        let stdout = out.await.map_err(ContainerError::Task)?;
        let stderr = err.await.map_err(ContainerError::Task)?;
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    pub async fn update_resources(
        &self,
        id: &str,
        resources: ContainerResources,
    ) -> Result<(), ContainerError> {
        let mut c = self.get(id)?;
        if c.state() == State::Exited {
            return Err(ContainerError::WrongState {
                id: c.id.clone(),
                state: "exited",
                wanted: "created or running",
            });
        }
        if let Some(cg) = &c.cgroup {
            let (cgroups, cg, res) = (self.cgroups.clone(), cg.clone(), resources.cgroup());
            tokio::task::spawn_blocking(move || cgroups.apply(&cg, &res))
                .await
                .map_err(ContainerError::Task)?
                .map_err(ContainerError::Cgroup)?;
        }
        c.spec.resources = resources;
        self.store.put(Bucket::Containers, &c.id, &c)?;
        Ok(())
    }

    pub async fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let c = self.running(id)?;
        tokio::task::spawn_blocking(move || crate::monitor::reopen_log(&c.dir))
            .await
            .map_err(ContainerError::Task)?
            .map_err(ContainerError::Monitor)
    }

    pub async fn stats(&self, c: &Container) -> Result<ContainerStats, ContainerError> {
        let (cgroups, snapshots, c) = (self.cgroups.clone(), self.snapshots.clone(), c.clone());
        tokio::task::spawn_blocking(move || {
            let cgroup = match &c.cgroup {
                Some(cg) if cgroups.exists(cg) => {
                    cgroups.stats(cg).map_err(ContainerError::Cgroup)?
                }
                _ => Stats::default(),
            };
            let writable = snapshots.usage(&c.id).unwrap_or_default();
            Ok(ContainerStats {
                timestamp: now_ns(),
                cgroup,
                writable,
            })
        })
        .await
        .map_err(ContainerError::Task)?
    }
}

/// Reads a stream to its end, keeping the first [`EXEC_OUTPUT_CAP`] bytes
/// (the rest is drained so the command never blocks on a full pipe).
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut r) = r else { return out };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    out
}
