//! The security context through the real daemon: identity, capabilities,
//! privileged, masked and read-only paths, read-only rootfs, seccomp,
//! no_new_privs and MAC requests, each checked from inside the container.

mod container_support;
mod pod_support;
mod security_support;
mod support;

use std::collections::BTreeSet;

use k8s_cri::v1 as cri;
use k8s_cri::v1::security_profile::ProfileType;
use pod_support::{remove, stop};
use security_support::*;
use tonic::Code;

type Sc = cri::LinuxContainerSecurityContext;
/// uid, gid, supplemental groups as `ContainerStatus.user` has them.
type User = (i64, i64, Vec<i64>);

fn uid(v: i64) -> Option<cri::Int64Value> {
    Some(cri::Int64Value { value: v })
}

fn groups(text: &str) -> BTreeSet<i64> {
    text.split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_from_the_config_or_the_image_user() {
    let mut e = env().await;
    let pod = pod(&mut e, "sec-identity", false).await;
    let ids = "echo $(id -u):$(id -g):$(id -G)";

    // RunAsUser, RunAsUserName, RunAsGroup, SupplementalGroups on busybox
    // (USER empty); ContainerStatus.user is the effective identity.
    let cases: [(&str, Sc, &str, User); 4] = [
        // root is in `wheel` in busybox's /etc/group (policy Merge).
        ("plain", Sc::default(), "0:0:0 10\n", (0, 0, vec![0, 10])),
        (
            "uid",
            Sc {
                run_as_user: uid(1234),
                ..Default::default()
            },
            "1234:0:0\n",
            (1234, 0, vec![0]),
        ),
        (
            "name",
            Sc {
                run_as_username: "www-data".into(),
                ..Default::default()
            },
            "33:33:33\n",
            (33, 33, vec![33]),
        ),
        (
            "uid-group-supp",
            Sc {
                run_as_user: uid(1234),
                run_as_group: uid(5678),
                supplemental_groups: vec![100, 200],
                ..Default::default()
            },
            "1234:5678:5678 100 200\n",
            (1234, 5678, vec![5678, 100, 200]),
        ),
    ];
    for (name, sc, want, user) in cases {
        let config = with_sc(e.container(name, &["sh", "-c", ids], &[]), sc);
        let id = e.create(&pod, config).await.expect("create");
        e.start(&id).await;
        let st = e.wait_exited(&id).await;
        let log = std::fs::read_to_string(e.log_file("sec-identity", name)).expect("log");
        assert!(
            log.ends_with(&format!("stdout F {}", want)),
            "{name}: {log}"
        );
        assert_eq!(user_of(&st), user, "{name}");
        e.remove(&id).await;
    }

    // The image's USER in its four forms, and overridden by RunAsUser.
    for (repo, want) in [
        (USER_IMAGES[0], "1002:0:0\n"),
        (USER_IMAGES[1], "33:33:33\n"),
        (USER_IMAGES[2], "1003:1004:1004\n"),
        (USER_IMAGES[3], "33:1004:1004\n"),
    ] {
        let name = format!("image-user-{}", repo.rsplit('/').next().expect("name"));
        let mut config = e.container(&name, &["sh", "-c", ids], &[]);
        config.image.as_mut().expect("image").image = image(&e, repo);
        assert_eq!(
            output(&mut e, &pod, config).await,
            (0, want.into()),
            "{repo}"
        );
    }
    let mut config = with_sc(
        e.container("override", &["sh", "-c", ids], &[]),
        Sc {
            run_as_user: uid(4321),
            ..Default::default()
        },
    );
    config.image.as_mut().expect("image").image = image(&e, USER_IMAGES[3]);
    assert_eq!(output(&mut e, &pod, config).await, (0, "4321:0:0\n".into()));

    // Refused at create, leaving nothing: a group without a user, a user
    // the image does not know.
    for sc in [
        Sc {
            run_as_group: uid(5),
            ..Default::default()
        },
        Sc {
            run_as_username: "nobody-here".into(),
            ..Default::default()
        },
    ] {
        let config = with_sc(e.container("refused", &["true"], &[]), sc);
        let err = e.create(&pod, config).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let (code, _) = script(&mut e, &pod, "refused", Sc::default(), "true").await;
    assert_eq!(code, 0, "the refused name stayed free");

    // The predefined-group image: default-user (1000) is in gid 50000 in
    // its /etc/group. Merge adds it, Strict does not; an exec'd process
    // has the same groups.
    for (policy, want) in [
        (
            cri::SupplementalGroupsPolicy::Merge,
            vec![1000, 1234, 50000],
        ),
        (cri::SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
    ] {
        let mut config = with_sc(
            e.container("groups", &["sleep", "1000"], &[]),
            Sc {
                run_as_user: uid(1000),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy.into(),
                ..Default::default()
            },
        );
        config.image.as_mut().expect("image").image = image(&e, USER_IMAGES[4]);
        let id = running(&mut e, &pod, config).await;
        let (code, out, _) = sh(&mut e, &id, "id -G").await;
        assert_eq!(code, 0);
        assert_eq!(groups(&out), want.iter().copied().collect(), "{policy:?}");
        let st = e.status(&id).await.status.expect("status");
        let (u, g, mut supp) = user_of(&st);
        supp.sort_unstable();
        assert_eq!((u, g, supp), (1000, 1000, want), "{policy:?}");
        e.stop(&id, 0).await;
        e.remove(&id).await;
    }

    let status =
        e.rt.status(cri::StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner();
    assert!(
        status
            .features
            .expect("features")
            .supplemental_groups_policy
    );
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_add_drop_all_and_ambient() {
    use oci_spec::runtime::Capability as C;
    let mut e = env().await;
    let pod = pod(&mut e, "sec-caps", false).await;
    let status = "cat /proc/self/status";
    let sets =
        |out: &str| ["CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"].map(|f| hex_field(out, f));
    let default = default_mask();
    let run = |name: &'static str, sc: Sc| (name, sc);

    let added = mask(&[C::NetAdmin, C::SysTime]);
    let dropped = mask(&[C::Chown, C::Kill]);
    let cases = [
        (
            run("default", Sc::default()),
            [default, default, default, 0, 0],
        ),
        (
            run(
                "add-drop",
                Sc {
                    capabilities: caps(&["NET_ADMIN", "cap_sys_time"], &["CAP_CHOWN", "kill"]),
                    ..Default::default()
                },
            ),
            {
                let m = (default | added) & !dropped;
                [m, m, m, 0, 0]
            },
        ),
        (
            run(
                "drop-all",
                Sc {
                    capabilities: caps(&[], &["ALL"]),
                    ..Default::default()
                },
            ),
            [0; 5],
        ),
        (
            run(
                "drop-all-add-one",
                Sc {
                    capabilities: caps(&["NET_RAW"], &["ALL"]),
                    ..Default::default()
                },
            ),
            {
                let m = mask(&[C::NetRaw]);
                [m, m, m, 0, 0]
            },
        ),
        (
            run(
                "add-all",
                Sc {
                    capabilities: caps(&["ALL"], &["CHOWN"]),
                    ..Default::default()
                },
            ),
            {
                let m = all_mask() & !mask(&[C::Chown]);
                [m, m, m, 0, 0]
            },
        ),
        // A non-root user keeps the bounding set (for setuid binaries)
        // but has nothing effective...
        (
            run(
                "non-root",
                Sc {
                    run_as_user: uid(1000),
                    capabilities: caps(&["NET_ADMIN"], &[]),
                    ..Default::default()
                },
            ),
            [default | mask(&[C::NetAdmin]), 0, 0, 0, 0],
        ),
        // ...unless asked for ambient capabilities.
        (
            run(
                "ambient",
                Sc {
                    run_as_user: uid(1000),
                    capabilities: Some(cri::Capability {
                        add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            {
                let m = mask(&[C::NetBindService]);
                [default, m, m, m, m]
            },
        ),
    ];
    for ((name, sc), want) in cases {
        let (code, out) = script(&mut e, &pod, name, sc, status).await;
        assert_eq!(code, 0, "{name}");
        assert_eq!(sets(&out), want, "{name}: {out}");
    }

    // What the sets mean: NET_ADMIN manages bridges, NET_RAW pings.
    let bridge = "brctl addbr secbr0 && brctl delbr secbr0";
    let admin = Sc {
        capabilities: caps(&["NET_ADMIN"], &["NET_RAW"]),
        ..Default::default()
    };
    let id = sleeper(&mut e, &pod, "admin", admin).await;
    let plain = sleeper(&mut e, &pod, "plain", Sc::default()).await;
    assert_eq!(sh(&mut e, &id, bridge).await.0, 0, "NET_ADMIN added");
    assert_ne!(
        sh(&mut e, &plain, bridge).await.0,
        0,
        "no NET_ADMIN by default"
    );
    let (code, _, err) = sh(&mut e, &id, "ping -c 1 -W 1 127.0.0.1").await;
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    assert_eq!(sh(&mut e, &plain, "ping -c 1 -W 1 127.0.0.1").await.0, 0);
    for id in [id, plain] {
        e.stop(&id, 0).await;
        e.remove(&id).await;
    }

    let bad = Sc {
        capabilities: caps(&["CAP_FLY"], &[]),
        ..Default::default()
    };
    let err = e
        .create(&pod, with_sc(e.container("bad", &["true"], &[]), bad))
        .await
        .expect_err("unknown capability");
    assert_eq!(err.code(), Code::InvalidArgument);
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_gets_everything_and_needs_a_privileged_pod() {
    let mut e = env().await;
    let profiles = tempfile::tempdir().expect("tempdir");
    let blocking = profile_file(&profiles, "block.json", BLOCK_SETHOSTNAME);
    let privileged = || Sc {
        privileged: true,
        capabilities: caps(&[], &["ALL"]),
        seccomp: profile(ProfileType::Localhost, &blocking),
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into()],
        ..Default::default()
    };

    let plain_pod = pod(&mut e, "sec-plain", false).await;
    let config = with_sc(e.container("priv", &["sleep", "1000"], &[]), privileged());
    let err = e
        .create(&plain_pod, config)
        .await
        .expect_err("privileged in an unprivileged pod");
    assert_eq!(err.code(), Code::InvalidArgument);

    let pod = pod(&mut e, "sec-priv", true).await;
    let config = with_sc(e.container("priv", &["sleep", "1000"], &[]), privileged());
    let id = running(&mut e, &pod, config).await;
    let (_, out, _) = sh(&mut e, &id, "cat /proc/self/status").await;
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(hex_field(&out, f), all_mask(), "{f}: drop ALL is ignored");
    }
    assert_eq!(field(&out, "Seccomp"), "0", "the profile is ignored");
    let (code, _, err) = sh(&mut e, &id, "hostname sec-privileged && hostname").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sh(&mut e, &id, "brctl addbr secbr1 && brctl delbr secbr1")
            .await
            .0,
        0
    );
    // /sys read-write, nothing masked or read-only over /proc.
    let (_, mounts, _) = sh(&mut e, &id, "cat /proc/self/mounts").await;
    let sys = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/sys"))
        .expect("/sys mount");
    assert!(
        sys.split(' ').nth(3).expect("options").starts_with("rw"),
        "{sys}"
    );
    for path in ["/proc/kcore", "/proc/sys", "/proc/timer_list"] {
        assert!(
            !mounts.lines().any(|l| l.split(' ').nth(1) == Some(path)),
            "{path} is masked or read-only: {mounts}"
        );
    }
    // The host's devices, e.g. /dev/kmsg, which an unprivileged one lacks.
    let kmsg = std::path::Path::new("/dev/kmsg").exists();
    if kmsg {
        assert_eq!(sh(&mut e, &id, "test -c /dev/kmsg").await.0, 0);
    }
    // An unprivileged container in the privileged pod stays unprivileged.
    let plain = sleeper(&mut e, &pod, "plain", Sc::default()).await;
    let (_, out, _) = sh(&mut e, &plain, "cat /proc/self/status").await;
    assert_eq!(hex_field(&out, "CapBnd"), default_mask());
    if kmsg {
        assert_ne!(sh(&mut e, &plain, "test -e /dev/kmsg").await.0, 0);
    }
    // CAP_MKNOD makes a node of a host disk, the device cgroup keeps it
    // closed; the privileged container may open it.
    let disk = std::fs::read_dir("/sys/dev/block")
        .expect("/sys/dev/block")
        .map(|d| d.expect("entry").file_name().into_string().expect("utf-8"))
        .next()
        .expect("a block device");
    let (maj, min) = disk.split_once(':').expect("major:minor");
    let open = format!("mknod /tmp/disk b {maj} {min} && head -c 1 /tmp/disk >/dev/null");
    let (code, _, err) = sh(&mut e, &plain, &open).await;
    assert_ne!(code, 0, "read block device {disk}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(sh(&mut e, &id, &open).await.0, 0, "privileged opens {disk}");
    for id in [id, plain] {
        e.stop(&id, 0).await;
        e.remove(&id).await;
    }
    for p in [pod, plain_pod] {
        stop(&mut e.rt, &p).await;
        remove(&mut e.rt, &p).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_and_readonly_paths_and_readonly_rootfs() {
    let mut e = env().await;
    let pod = pod(&mut e, "sec-paths", false).await;
    let sc = Sc {
        masked_paths: vec!["/bin/ls".into()],
        readonly_paths: vec!["/tmp".into()],
        ..Default::default()
    };
    let id = sleeper(&mut e, &pod, "paths", sc).await;
    // The defaults stay beside the client's paths (those this kernel has).
    let host_has = |p: &&str| std::path::Path::new(p).exists();
    let masked: Vec<&str> = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
        .iter()
        .copied()
        .filter(host_has)
        .collect();
    assert!(!masked.is_empty(), "no default masked path exists here");
    for masked in masked {
        let (code, out, err) = sh(&mut e, &id, &format!("cat {masked} | wc -c")).await;
        assert_eq!((code, out.trim()), (0, "0"), "{masked}: {err}");
    }
    let (_, out, _) = sh(&mut e, &id, "ls -A /sys/firmware | wc -l").await;
    assert_eq!(out.trim(), "0", "/sys/firmware is an empty mask");
    let (code, _, err) = sh(&mut e, &id, "ls /").await;
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    for write in ["touch /tmp/x", "echo x > /proc/sys/kernel/hostname"] {
        let (code, _, err) = sh(&mut e, &id, write).await;
        assert_ne!(code, 0, "{write}");
        assert!(err.contains("Read-only file system"), "{write}: {err}");
    }
    // /sys and the read-only /proc files by their mount options (writing
    // to them would reach the host if the test failed).
    let (_, mounts, _) = sh(&mut e, &id, "cat /proc/self/mounts").await;
    let read_only = ["/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/sys"];
    for path in read_only.into_iter().filter(host_has) {
        let line = mounts
            .lines()
            .rfind(|l| l.split(' ').nth(1) == Some(path))
            .unwrap_or_else(|| panic!("no mount at {path}: {mounts}"));
        let options = line.split(' ').nth(3).expect("options");
        assert!(options.split(',').any(|o| o == "ro"), "{line}");
    }
    e.stop(&id, 0).await;
    e.remove(&id).await;

    let bad = Sc {
        masked_paths: vec!["proc/kcore".into()],
        ..Default::default()
    };
    let err = e
        .create(&pod, with_sc(e.container("bad", &["true"], &[]), bad))
        .await
        .expect_err("relative path");
    assert_eq!(err.code(), Code::InvalidArgument);

    let probe = "touch /probe && echo wrote";
    for (ro, want) in [
        (false, (0, "wrote\n".to_string())),
        (true, (1, String::new())),
    ] {
        let sc = Sc {
            readonly_rootfs: ro,
            ..Default::default()
        };
        assert_eq!(
            script(&mut e, &pod, &format!("rootfs-{ro}"), sc, probe).await,
            want,
            "ro {ro}"
        );
    }
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)]
async fn seccomp_unconfined_runtime_default_and_localhost() {
    let mut e = env().await;
    let pod = pod(&mut e, "sec-seccomp", false).await;
    let profiles = tempfile::tempdir().expect("tempdir");
    let blocking = profile_file(&profiles, "block.json", BLOCK_SETHOSTNAME);
    let probe = "grep Seccomp: /proc/self/status; unshare -U true && echo unshared; \
                 hostname sec-renamed 2>/dev/null && echo renamed; \
                 mount -t tmpfs none /tmp 2>/dev/null && echo mounted; true";
    let sys_admin = || caps(&["SYS_ADMIN"], &[]);
    let cases = [
        ("nil", Sc::default(), "Seccomp:\t0\nunshared\n"),
        (
            "unconfined-sys-admin",
            Sc {
                seccomp: profile(ProfileType::Unconfined, ""),
                capabilities: sys_admin(),
                ..Default::default()
            },
            "Seccomp:\t0\nunshared\nrenamed\nmounted\n",
        ),
        (
            "default",
            Sc {
                seccomp: profile(ProfileType::RuntimeDefault, ""),
                ..Default::default()
            },
            "Seccomp:\t2\n",
        ),
        (
            "default-legacy",
            Sc {
                seccomp_profile_path: "runtime/default".into(),
                ..Default::default()
            },
            "Seccomp:\t2\n",
        ),
        // With CAP_SYS_ADMIN the default profile allows what it gates on
        // it, as Docker's does.
        (
            "default-sys-admin",
            Sc {
                seccomp: profile(ProfileType::RuntimeDefault, ""),
                capabilities: sys_admin(),
                ..Default::default()
            },
            "Seccomp:\t2\nunshared\nrenamed\nmounted\n",
        ),
        (
            "localhost",
            Sc {
                seccomp: profile(ProfileType::Localhost, &blocking),
                capabilities: sys_admin(),
                ..Default::default()
            },
            "Seccomp:\t2\nunshared\nmounted\n",
        ),
        (
            "localhost-legacy",
            Sc {
                seccomp_profile_path: format!("localhost/{blocking}"),
                capabilities: sys_admin(),
                ..Default::default()
            },
            "Seccomp:\t2\nunshared\nmounted\n",
        ),
    ];
    for (name, sc, want) in cases {
        let got = script(&mut e, &pod, name, sc, probe).await;
        assert_eq!(got, (0, want.to_string()), "{name}");
    }
    // An exec'd process is under the container's filter too.
    let sc = Sc {
        seccomp: profile(ProfileType::RuntimeDefault, ""),
        ..Default::default()
    };
    let id = sleeper(&mut e, &pod, "exec", sc).await;
    let (code, out, _) = sh(
        &mut e,
        &id,
        "grep Seccomp: /proc/self/status; unshare -U true",
    )
    .await;
    assert_ne!(code, 0);
    assert_eq!(out, "Seccomp:\t2\n");
    e.stop(&id, 0).await;
    e.remove(&id).await;

    // Bad profiles are refused at create, naming the problem.
    let unknown = profile_file(
        &profiles,
        "unknown.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["no_such_call"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let broken = profile_file(&profiles, "broken.json", "{\"defaultAction\": ");
    let missing = profiles.path().join("missing.json").display().to_string();
    for (path, code, mention) in [
        (unknown.as_str(), Code::InvalidArgument, "no_such_call"),
        (broken.as_str(), Code::InvalidArgument, "broken.json"),
        ("relative.json", Code::InvalidArgument, "relative.json"),
        (missing.as_str(), Code::FailedPrecondition, "missing.json"),
    ] {
        let sc = Sc {
            seccomp: profile(ProfileType::Localhost, path),
            ..Default::default()
        };
        let err = e
            .create(&pod, with_sc(e.container("bad", &["true"], &[]), sc))
            .await
            .expect_err(path);
        assert_eq!(err.code(), code, "{path}: {err:?}");
        assert!(err.message().contains(mention), "{path}: {}", err.message());
    }
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)]
async fn no_new_privs_and_mac_requests() {
    let mut e = env().await;
    let pod = pod(&mut e, "sec-nnp", false).await;
    // critest's setuid-root nnp prints its effective uid.
    for (nnp, want) in [
        (true, "Effective uid: 1000\n"),
        (false, "Effective uid: 0\n"),
    ] {
        let mut config = with_sc(
            e.container(&format!("nnp-{nnp}"), &[], &[]),
            Sc {
                no_new_privs: nnp,
                run_as_user: uid(1000),
                ..Default::default()
            },
        );
        config.image.as_mut().expect("image").image = nnp_image(&e);
        assert_eq!(
            output(&mut e, &pod, config).await,
            (0, want.into()),
            "nnp {nnp}"
        );
        let sc = Sc {
            no_new_privs: nnp,
            ..Default::default()
        };
        let name = format!("flag-{nnp}");
        let (_, out) = script(&mut e, &pod, &name, sc, "cat /proc/self/status").await;
        assert_eq!(field(&out, "NoNewPrivs"), if nnp { "1" } else { "0" });
    }

    // No AppArmor or SELinux here: asking for a profile is an error,
    // unconfined or nothing is fine.
    let refused = [
        Sc {
            apparmor: profile(ProfileType::Localhost, "k8s-apparmor-example"),
            ..Default::default()
        },
        Sc {
            apparmor_profile: "localhost/k8s-apparmor-example".into(),
            ..Default::default()
        },
        Sc {
            selinux_options: Some(cri::SeLinuxOption {
                r#type: "spc_t".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    for sc in refused {
        let err = e
            .create(&pod, with_sc(e.container("mac", &["true"], &[]), sc))
            .await
            .expect_err("MAC profile");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    for sc in [
        Sc {
            apparmor: profile(ProfileType::Unconfined, ""),
            selinux_options: Some(cri::SeLinuxOption::default()),
            ..Default::default()
        },
        Sc {
            apparmor_profile: "unconfined".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(script(&mut e, &pod, "mac", sc, "true").await.0, 0);
    }
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}
