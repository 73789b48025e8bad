//! Seccomp through the real container init: the spec's `linux.seccomp`
//! (as the container service builds it) is compiled and installed by the
//! init, with and without no_new_privs.

mod support;

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxSeccomp};
use support::engine::*;
use yonggi::runtime::seccomp;
use yonggi::security::{self, capabilities};

const SCRIPT: &str = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | cut -f2; \
                      hostname; ls / >/dev/null && echo ok; \
                      unshare -U true 2>&1 || echo blocked";

fn run_with(seccomp: Option<LinuxSeccomp>, nnp: bool, script: &str) -> Vec<String> {
    let mut case = Case::new();
    let mut spec = case.spec(&["sh", "-c", script]);
    let process = spec.process_mut().as_mut().expect("process");
    process.set_no_new_privileges(Some(nnp));
    spec.linux_mut()
        .as_mut()
        .expect("linux")
        .set_seccomp(seccomp);
    let (status, lines) = case.run(&spec);
    case.finish();
    assert_eq!(status.exit_code, 0, "{lines:?}");
    lines.into_iter().map(|l| l.content).collect()
}

fn default_caps() -> HashSet<Capability> {
    capabilities::DEFAULT.into_iter().collect()
}

#[test]
fn runtime_default_is_installed_with_and_without_no_new_privs() {
    let profile =
        seccomp::for_container(&security::Profile::RuntimeDefault, false, &default_caps())
            .expect("profile");
    assert!(profile.is_some());
    for nnp in [false, true] {
        let out = run_with(profile.clone(), nnp, SCRIPT);
        let nnp_flag = if nnp { "1" } else { "0" };
        // /proc/self/status lists NoNewPrivs before Seccomp.
        assert_eq!(out[..4], [nnp_flag, "2", "yonggi-test", "ok"], "{out:?}");
        assert!(out[4].contains("Operation not permitted"), "{out:?}");
        assert_eq!(out[5], "blocked");
    }
    // Unconfined: the same container may create a user namespace.
    let out = run_with(None, false, SCRIPT);
    assert_eq!(out, ["0", "0", "yonggi-test", "ok"], "{out:?}");
}

#[test]
fn a_localhost_profile_blocks_sethostname_with_its_errno() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-hostname.json");
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .expect("write");
    let local = security::Profile::Localhost(path.display().to_string());
    let profile = seccomp::for_container(&local, false, &default_caps()).expect("profile");
    let out = run_with(profile, true, "hostname other 2>&1; hostname");
    // EACCES: the profile's answer, not the EPERM a missing capability gives.
    assert!(out[0].contains("Permission denied"), "{out:?}");
    assert_eq!(out[1], "yonggi-test");
}
