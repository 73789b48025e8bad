use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxSeccompAction, LinuxSyscall};

use super::*;
use crate::security::capabilities;

fn default_caps() -> HashSet<Capability> {
    capabilities::DEFAULT.into_iter().collect()
}

fn ctx(caps: &HashSet<Capability>) -> Context<'_> {
    Context {
        capabilities: caps,
        kernel: (6, 1),
    }
}

/// The rules of `seccomp` that name `syscall`.
fn rules_for<'a>(seccomp: &'a LinuxSeccomp, syscall: &str) -> Vec<&'a LinuxSyscall> {
    seccomp
        .syscalls()
        .iter()
        .flatten()
        .filter(|r| r.names().iter().any(|n| n == syscall))
        .collect()
}

fn allowed_unconditionally(seccomp: &LinuxSeccomp, syscall: &str) -> bool {
    rules_for(seccomp, syscall)
        .iter()
        .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
}

#[test]
fn runtime_default_blocks_the_escape_calls_without_caps() {
    let caps = default_caps();
    let p = resolve(&runtime_default().expect("default"), &ctx(&caps)).expect("resolve");
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
    for blocked in [
        "unshare",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "sethostname",
        "setdomainname",
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "open_by_handle_at",
        "userfaultfd",
        "io_uring_setup",
        "reboot",
        "swapon",
        "clock_settime",
        "acct",
        "fsopen",
        "move_mount",
    ] {
        assert!(rules_for(&p, blocked).is_empty(), "{blocked} is allowed");
    }
    for allowed in [
        "read", "execve", "clone3", "openat", "socket", "ptrace", "chroot",
    ] {
        assert!(
            !rules_for(&p, allowed).is_empty(),
            "{allowed} is not listed"
        );
    }
    // clone only without namespace flags; clone3 answers ENOSYS.
    let clone = rules_for(&p, "clone");
    assert_eq!(clone.len(), 1);
    assert!(clone[0].args().is_some());
    let clone3 = rules_for(&p, "clone3");
    assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
    // On x86_64 the 32-bit ABIs are filtered too.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(p.architectures().as_ref().map(Vec::len), Some(3));
        assert!(allowed_unconditionally(&p, "arch_prctl"));
    }
    compile(&p).expect("compiles");
}

#[test]
fn runtime_default_follows_the_capabilities() {
    let mut caps = default_caps();
    caps.insert(Capability::SysAdmin);
    caps.insert(Capability::SysTime);
    caps.remove(&Capability::SysChroot);
    let p = resolve(&runtime_default().expect("default"), &ctx(&caps)).expect("resolve");
    for allowed in [
        "unshare",
        "mount",
        "sethostname",
        "setns",
        "clone",
        "clone3",
        "clock_settime",
    ] {
        assert!(allowed_unconditionally(&p, allowed), "{allowed}");
    }
    assert!(rules_for(&p, "chroot").is_empty());
    // The ENOSYS rule for clone3 is for containers without SYS_ADMIN.
    assert!(
        rules_for(&p, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
    );
    compile(&p).expect("compiles");
}

#[test]
fn min_kernel_conditions() {
    let caps = default_caps();
    let old = Context {
        capabilities: &caps,
        kernel: (4, 4),
    };
    let p = resolve(&runtime_default().expect("default"), &old).expect("resolve");
    assert!(rules_for(&p, "ptrace").is_empty());
    let p = resolve(&runtime_default().expect("default"), &ctx(&caps)).expect("resolve");
    assert!(allowed_unconditionally(&p, "ptrace"));
}

fn parse_err(json: &str) -> Error {
    let caps = default_caps();
    match parse(json.as_bytes(), "test.json") {
        Err(e) => e,
        Ok(p) => resolve(&p, &ctx(&caps)).expect_err("an invalid profile"),
    }
}

#[test]
fn invalid_profiles_name_the_problem() {
    assert!(matches!(parse_err("{not json"), Error::Parse { origin, .. } if origin == "test.json"));
    assert!(matches!(
        parse_err(r#"{"defaultAction": "SCMP_ACT_EXPLODE"}"#),
        Error::Parse { detail, .. } if detail.contains("SCMP_ACT_EXPLODE")
    ));
    assert!(matches!(
        parse_err(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["sethostname", "frobnicate"], "action": "SCMP_ACT_ERRNO"}]}"#
        ),
        Error::UnknownSyscall(n) if n == "frobnicate"
    ));
    assert!(matches!(
        parse_err(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}"#
        ),
        Error::Parse { detail, .. } if detail.contains("SCMP_CMP_SOMETIMES")
    ));
    assert!(matches!(
        parse_err(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#
        ),
        Error::Invalid(_)
    ));
    assert!(matches!(
        parse_err(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#),
        Error::UnsupportedAction(_)
    ));
    assert!(matches!(
        parse_err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}"#),
        Error::Parse { detail, .. } if detail.contains("SCMP_ARCH_Z80")
    ));
    // A typo in a rule that does not apply here still fails.
    assert!(matches!(
        parse_err(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["not_a_call"], "action": "SCMP_ACT_ALLOW",
                              "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#
        ),
        Error::UnknownSyscall(_)
    ));
}

#[test]
fn docker_style_profile_with_conditions() {
    let json = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW", "args": []},
            {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
        ]
    }"#;
    let caps = default_caps();
    let p = resolve(
        &parse(json.as_bytes(), "docker").expect("parse"),
        &ctx(&caps),
    )
    .expect("ok");
    assert!(allowed_unconditionally(&p, "getpid"));
    assert!(rules_for(&p, "mount").is_empty());
    // Excluded: the container has SYS_CHROOT.
    assert!(rules_for(&p, "chroot").is_empty());
    assert_eq!(
        rules_for(&p, "arch_prctl").len(),
        usize::from(cfg!(target_arch = "x86_64"))
    );
    assert!(rules_for(&p, "ptrace").is_empty());
    assert_eq!(rules_for(&p, "personality").len(), 1);
    let filter = compile(&p).expect("compile");
    assert!(filter.len() > 10);
}

#[test]
fn localhost_profiles_must_be_absolute_files() {
    assert!(matches!(
        load(Path::new("profiles/p.json")),
        Err(Error::RelativePath { .. })
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.json");
    assert!(matches!(load(&missing), Err(Error::Read { .. })));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "[]").expect("write");
    assert!(matches!(load(&bad), Err(Error::Parse { origin, .. }) if origin.contains("bad.json")));
}

#[test]
fn for_container_privileged_and_unconfined_have_none() {
    let caps = default_caps();
    let local = security::Profile::Localhost("/nonexistent/profile.json".into());
    // Privileged ignores even a profile that does not exist.
    assert!(
        for_container(&local, true, &caps)
            .expect("privileged")
            .is_none()
    );
    assert!(
        for_container(&security::Profile::Unconfined, false, &caps)
            .expect("unconfined")
            .is_none()
    );
    assert!(matches!(
        for_container(&local, false, &caps),
        Err(Error::Read { .. })
    ));
    let p = for_container(&security::Profile::RuntimeDefault, false, &caps)
        .expect("default")
        .expect("some");
    assert!(rules_for(&p, "unshare").is_empty());
}

#[test]
fn errno_ret_past_max_errno_is_refused() {
    let json = r#"{"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}"#;
    let caps = default_caps();
    let p = resolve(&parse(json.as_bytes(), "t").expect("parse"), &ctx(&caps)).expect("ok");
    assert!(matches!(compile(&p), Err(Error::Invalid(_))));
}

#[test]
fn prepare_picks_the_install_point_from_no_new_privs() {
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, SpecBuilder};
    let caps = default_caps();
    let seccomp = for_container(&security::Profile::RuntimeDefault, false, &caps)
        .expect("default")
        .expect("some");
    let spec = |nnp: bool, seccomp: Option<LinuxSeccomp>| {
        let mut linux = LinuxBuilder::default().build().expect("linux");
        linux.set_seccomp(seccomp);
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .no_new_privileges(nnp)
                    .build()
                    .expect("process"),
            )
            .linux(linux)
            .build()
            .expect("spec")
    };
    let p = prepare(&spec(true, Some(seccomp.clone())))
        .expect("prepare")
        .expect("some");
    assert_eq!(p.at, InstallAt::AfterDroppingPrivileges);
    assert!(!p.filter.is_empty());
    let p = prepare(&spec(false, Some(seccomp)))
        .expect("prepare")
        .expect("some");
    assert_eq!(p.at, InstallAt::BeforeDroppingPrivileges);
    assert!(prepare(&spec(false, None)).expect("prepare").is_none());
}
