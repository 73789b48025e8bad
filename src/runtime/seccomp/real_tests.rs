//! Filters installed for real, in a child that execs host programs at
//! once (util-linux `unshare` and `mount`, busybox `hostname`, which
//! reports the errno it got). Every child first gets mount and UTS namespaces of its own (and
//! a private `/`), so a filter that fails to block cannot change the
//! host's hostname or mounts.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use oci_spec::runtime::Capability;

use super::*;
use crate::security::capabilities;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it installs seccomp filters in namespaces)"
    );
}

fn filter_for(profile: &Profile, caps: &HashSet<Capability>) -> Filter {
    let ctx = Context {
        capabilities: caps,
        kernel: host_kernel().expect("kernel"),
    };
    compile(&resolve(profile, &ctx).expect("resolve")).expect("compile")
}

/// Runs `program args` under `filter` (None: no filter) in its own mount
/// and UTS namespaces.
fn run(filter: Option<&Filter>, program: &str, args: &[&str]) -> Output {
    let filter = filter.cloned();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the child runs the closure between fork and exec; it only
    // makes syscalls through nix and `Filter::install`, none of which
    // allocate or take locks.
    unsafe {
        cmd.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            if let Some(filter) = &filter {
                filter.install()?;
            }
            Ok(())
        });
    }
    cmd.output().expect("spawn")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const EPERM_TEXT: &str = "Operation not permitted";

#[test]
fn runtime_default_blocks_unshare_sethostname_and_mount() {
    require_root();
    let caps: HashSet<Capability> = capabilities::DEFAULT.into_iter().collect();
    let filter = filter_for(&runtime_default().expect("default"), &caps);

    // Without a filter all three work (as root, in the child's namespaces):
    // the failures below are the filter's doing.
    assert!(run(None, "unshare", &["-U", "true"]).status.success());
    assert!(
        run(None, "busybox", &["hostname", "yonggi-seccomp-test"])
            .status
            .success()
    );
    let target = tempfile::tempdir().expect("tempdir");
    let target_s = target.path().to_str().expect("utf-8");
    let unfiltered = run(None, "mount", &["-t", "tmpfs", "none", target_s]);
    assert!(unfiltered.status.success(), "{}", stderr(&unfiltered));

    let out = run(Some(&filter), "unshare", &["-U", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(EPERM_TEXT), "{}", stderr(&out));
    let out = run(
        Some(&filter),
        "busybox",
        &["hostname", "yonggi-seccomp-test"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains(EPERM_TEXT), "{}", stderr(&out));
    let out = run(Some(&filter), "mount", &["-t", "tmpfs", "none", target_s]);
    assert!(
        !out.status.success(),
        "mount under RuntimeDefault succeeded"
    );

    // Allowed calls still work: reading the hostname, the filter in place.
    let out = run(Some(&filter), "cat", &["/proc/self/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
        "{status}"
    );
    // The install left no_new_privs alone: setuid binaries still work for
    // a container whose config keeps it off.
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "0"])),
        "{status}"
    );
    let out = run(Some(&filter), "busybox", &["hostname"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn runtime_default_with_sys_admin_allows_sethostname() {
    require_root();
    let mut caps: HashSet<Capability> = capabilities::DEFAULT.into_iter().collect();
    caps.insert(Capability::SysAdmin);
    let filter = filter_for(&runtime_default().expect("default"), &caps);
    let out = run(
        Some(&filter),
        "busybox",
        &["hostname", "yonggi-seccomp-test"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn localhost_profile_blocks_sethostname_with_its_errno() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-hostname.json");
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .expect("write");
    let caps: HashSet<Capability> = capabilities::all();
    let filter = filter_for(&load(&path).expect("load"), &caps);
    let out = run(
        Some(&filter),
        "busybox",
        &["hostname", "yonggi-seccomp-test"],
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    // EACCES, the profile's errnoRet, not the default EPERM.
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    // Everything else is allowed, unshare included.
    let out = run(Some(&filter), "unshare", &["-U", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn install_at_installs_only_at_its_point() {
    require_root();
    let caps: HashSet<Capability> = capabilities::DEFAULT.into_iter().collect();
    let prepared = Prepared {
        filter: filter_for(&runtime_default().expect("default"), &caps),
        at: InstallAt::AfterDroppingPrivileges,
    };
    let status_seccomp = |at: InstallAt| {
        let prepared = prepared.clone();
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/status");
        // SAFETY: between fork and exec the closure only calls
        // `install_at`, which does not allocate.
        unsafe {
            cmd.pre_exec(move || install_at(Some(&prepared), at));
        }
        let out = cmd.output().expect("spawn");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_string()))
            .expect("a Seccomp line")
    };
    assert_eq!(status_seccomp(InstallAt::BeforeDroppingPrivileges), "0");
    assert_eq!(status_seccomp(InstallAt::AfterDroppingPrivileges), "2");
    install_at(None, InstallAt::AfterDroppingPrivileges).expect("nothing to install");
}
