//! Pods in a user namespace (CRI `userns_options` mode POD) through the
//! real daemon: the container's root is an unprivileged host uid, its
//! image files and its `/dev` are root's inside, writes land owned by the
//! mapped ids, and bad mappings are refused leaving nothing.

mod container_support;
mod pod_support;
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use container_support::*;
use k8s_cri::v1 as cri;
use pod_support::*;
use tonic::Code;

/// A 64k range no other test of this run uses (kubelet hands out ranges
/// at multiples of 65536 too).
fn host_base() -> u32 {
    65536 * (16 + rand::random::<u32>() % 4096)
}

fn userns(mode: cri::NamespaceMode, uids: &[(u32, u32, u32)]) -> cri::UserNamespace {
    let list = |l: &[(u32, u32, u32)]| {
        l.iter()
            .map(|&(host_id, container_id, length)| cri::IdMapping {
                host_id,
                container_id,
                length,
            })
            .collect::<Vec<_>>()
    };
    cri::UserNamespace {
        mode: mode.into(),
        uids: list(uids),
        gids: list(uids),
    }
}

async fn run_pod(e: &mut Env, mut c: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    let name = c.metadata.as_ref().expect("meta").name.clone();
    c.log_directory = e.logs.path().join(&name).display().to_string();
    e.pod_names.push(name);
    c.linux.as_mut().expect("linux").cgroup_parent =
        format!("/yonggi-test-{:08x}", rand::random::<u32>());
    run(&mut e.rt, c).await
}

async fn sh(e: &mut Env, id: &str, script: &str) -> String {
    let r = e
        .exec(id, &["sh", "-c", script], 20)
        .await
        .expect("ExecSync");
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

/// The writable layer of container `id` under the daemon's root.
fn upper_dir(e: &Env, id: &str) -> PathBuf {
    walk(e.daemon.dir.path(), &Path::new(id).join("upper"), 5).expect("the container's upper dir")
}

fn walk(root: &Path, rel: &Path, depth: u32) -> Option<PathBuf> {
    if root.join(rel).is_dir() {
        return Some(root.join(rel));
    }
    if depth == 0 {
        return None;
    }
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(p) = walk(&entry.path(), rel, depth - 1) {
            return Some(p);
        }
    }
    None
}

fn host_uid_of(pid: i64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace()
        .nth(2)
        .expect("effective uid")
        .parse()
        .expect("uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_a_user_namespace_runs_as_mapped_root() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let runtime_status =
        e.rt.status(cri::StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner();
    assert!(
        runtime_status
            .runtime_handlers
            .iter()
            .all(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces)),
        "user_namespaces advertised: {:?}",
        runtime_status.runtime_handlers
    );

    let base = host_base();
    let mut c = config("userns");
    ns_options(&mut c).pid = cri::NamespaceMode::Pod.into();
    ns_options(&mut c).userns_options = Some(userns(cri::NamespaceMode::Pod, &[(base, 0, 65536)]));
    sysctls(&mut c).insert("kernel.shm_rmid_forced".into(), "1".into());
    sysctls(&mut c).insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
    let pod = run_pod(&mut e, c.clone()).await.expect("RunPodSandbox");
    let pod_status = status(&mut e.rt, &pod).await.expect("PodSandboxStatus");
    let opts = pod_status
        .status
        .as_ref()
        .and_then(|s| s.linux.as_ref())
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .and_then(|o| o.userns_options.clone());
    assert_eq!(opts, ns_options(&mut c).userns_options.clone());

    let mut ctr = e.container("sleeper", &["sleep", "600"], &[]);
    ctr.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(ns_options(&mut c).clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    // A volume as kubelet makes them: root's on the host, 0700.
    let volume = tempfile::tempdir().expect("volume");
    std::fs::write(volume.path().join("from-host"), "h\n").expect("volume file");
    ctr.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: volume.path().display().to_string(),
        ..Default::default()
    }];
    let id = e.create(&pod, ctr).await.expect("CreateContainer");
    e.start(&id).await;

    assert_eq!(sh(&mut e, &id, "id -u; id -g").await, "0\n0");
    // The volume is idmapped: root's on disk is root's inside, and what
    // the container writes is stored with the ids it sees.
    assert_eq!(
        sh(
            &mut e,
            &id,
            "cat /vol/from-host && echo c >/vol/from-ctr && stat -c %u /vol /vol/from-host /vol/from-ctr"
        )
        .await,
        "h\n0\n0\n0"
    );
    let written = std::fs::metadata(volume.path().join("from-ctr")).expect("written");
    assert_eq!((written.uid(), written.gid()), (0, 0));
    let map = sh(&mut e, &id, "cat /proc/self/uid_map /proc/self/gid_map").await;
    let fields: Vec<&str> = map.split_whitespace().collect();
    let want = ["0", &base.to_string(), "65536"];
    assert_eq!(fields, [want, want].concat(), "{map}");
    // The image's files and the container's /dev are root's inside.
    assert_eq!(
        sh(
            &mut e,
            &id,
            "stat -c %u:%g / /bin /bin/busybox /etc /dev /dev/null"
        )
        .await,
        ["0:0"; 6].join("\n")
    );
    // The pod's files are readable; /dev/null is usable.
    sh(
        &mut e,
        &id,
        "cat /etc/hosts /etc/resolv.conf /etc/hostname >/dev/null && echo x >/dev/null",
    )
    .await;
    assert_eq!(sh(&mut e, &id, "hostname").await, "userns");
    // The pod's sysctls, IPC and net, were written in its namespaces.
    assert_eq!(
        sh(
            &mut e,
            &id,
            "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_unprivileged_port_start"
        )
        .await,
        "1\n0"
    );
    // Writes to the rootfs work, over image files too, and land owned by
    // the mapped root on the host.
    assert_eq!(
        sh(
            &mut e,
            &id,
            "echo hello >/written && echo more >>/etc/passwd && mkdir /made && stat -c %u /written /made"
        )
        .await,
        "0\n0"
    );
    let upper = upper_dir(&e, &id);
    for name in ["written", "made", "etc/passwd"] {
        let meta = std::fs::metadata(upper.join(name)).expect("written file in the upper dir");
        assert_eq!((meta.uid(), meta.gid()), (base, base), "{name}");
    }
    // A host process sees the container's process as the mapped uid.
    let st = e.status(&id).await;
    let pid = ctr_info(&st)["pid"].as_i64().expect("pid");
    assert_eq!(host_uid_of(pid), base);
    e.stop(&id, 0).await;
    e.remove(&id).await;
    e.assert_gone(&id, &[pid]);

    // A pod whose containers each have their own PID namespace.
    let base2 = host_base();
    let mut c2 = config("userns-pidc");
    ns_options(&mut c2).userns_options =
        Some(userns(cri::NamespaceMode::Pod, &[(base2, 0, 65536)]));
    let pod2 = run_pod(&mut e, c2).await.expect("RunPodSandbox");
    let (st, lines) = e
        .run_to_end(
            &pod2,
            e.container(
                "once",
                &["sh", "-c", "id -u; cat /proc/self/uid_map; echo $$"],
                &[],
            ),
        )
        .await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    let out: Vec<String> = lines.iter().map(|l| l.content.trim().to_string()).collect();
    assert_eq!(out[0], "0");
    assert_eq!(
        out[1].split_whitespace().collect::<Vec<_>>(),
        ["0", &base2.to_string(), "65536"]
    );
    assert_eq!(out[2], "1", "pid 1 of its own pid namespace");

    // A tty container's console is a pty of its own devpts, allocated in
    // the user namespace and given to the process's user (the group stays
    // devpts's gid=5, tty).
    let mut console = e.container(
        "console",
        &["sh", "-c", "t=$(tty) && echo $t && stat -c %u:%g $t"],
        &[],
    );
    console.tty = true;
    console.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (st, lines) = e.run_to_end(&pod2, console).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    let out: Vec<&str> = lines.iter().map(|l| l.content.trim()).collect();
    assert_eq!(out, ["/dev/pts/0", "1000:5"]);

    for p in [&pod, &pod2] {
        stop(&mut e.rt, p).await;
        remove(&mut e.rt, p).await;
        assert_gone(&e.daemon, p, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_user_namespaces_are_refused_and_leave_nothing() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let base = host_base();
    let good = (base, 0, 65536);
    let cases: Vec<(&str, cri::UserNamespace, bool)> = vec![
        (
            "two-ranges",
            userns(cri::NamespaceMode::Pod, &[good, (base + 65536, 65536, 10)]),
            false,
        ),
        ("no-ranges", userns(cri::NamespaceMode::Pod, &[]), false),
        (
            "no-root",
            userns(cri::NamespaceMode::Pod, &[(base, 1, 65536)]),
            false,
        ),
        (
            "host-root",
            userns(cri::NamespaceMode::Pod, &[(0, 0, 65536)]),
            false,
        ),
        (
            "container-mode",
            userns(cri::NamespaceMode::Container, &[good]),
            false,
        ),
        (
            "target-mode",
            userns(cri::NamespaceMode::Target, &[good]),
            false,
        ),
        (
            "host-network",
            userns(cri::NamespaceMode::Pod, &[good]),
            true,
        ),
    ];
    for (name, opts, host_network) in cases {
        let mut c = config(name);
        ns_options(&mut c).userns_options = Some(opts);
        if host_network {
            ns_options(&mut c).network = cri::NamespaceMode::Node.into();
        }
        let err = run_pod(&mut e, c).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
    }
    assert_eq!(list(&mut e.rt, None).await, Vec::new());
    let pods = pods_dir(&e.daemon);
    assert_eq!(std::fs::read_dir(&pods).map(|d| d.count()).unwrap_or(0), 0);

    // A container's own userns_options must be its pod's.
    let mut c = config("userns-ok");
    ns_options(&mut c).userns_options = Some(userns(cri::NamespaceMode::Pod, &[good]));
    let pod = run_pod(&mut e, c).await.expect("RunPodSandbox");
    let plain = run_pod(&mut e, config("plain"))
        .await
        .expect("RunPodSandbox");
    let other = (base + 65536, 0, 65536);
    for (name, target, opts) in [
        (
            "other-range",
            &pod,
            userns(cri::NamespaceMode::Pod, &[other]),
        ),
        (
            "node-in-userns-pod",
            &pod,
            userns(cri::NamespaceMode::Node, &[]),
        ),
        (
            "container-mode",
            &pod,
            userns(cri::NamespaceMode::Container, &[good]),
        ),
        (
            "pod-in-plain-pod",
            &plain,
            userns(cri::NamespaceMode::Pod, &[good]),
        ),
    ] {
        let mut ctr = e.container(name, &["true"], &[]);
        ctr.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: Some(opts),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = e.create(target, ctr).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
    }
    for p in [&pod, &plain] {
        stop(&mut e.rt, p).await;
        remove(&mut e.rt, p).await;
        assert_gone(&e.daemon, p, None);
    }
    let left: Vec<_> = std::fs::read_dir(&pods)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        mountinfo_mentions(&e.daemon.dir.path().display().to_string()),
        Vec::<String>::new()
    );
}
