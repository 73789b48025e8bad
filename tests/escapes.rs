//! Known container-escape classes, each tried through the real daemon from
//! inside an unprivileged container; each test fails if the hole is open.
//! - the runtime binary out of reach (runc CVE-2019-5736);
//! - no descriptor of the daemon or monitor inside, and no working dir
//!   outside the root through `/proc/self/fd` (runc CVE-2024-21626);
//! - mount targets resolved inside the rootfs, symlinks never followed out
//!   of it (runc CVE-2021-30465);
//! - no kernel module, no mount, no host hostname.

mod container_support;
mod pod_support;
mod support;

use std::path::{Path, PathBuf};

use container_support::*;
use k8s_cri::v1 as cri;
use pod_support::*;
use support::Registry;
use support::net::TestNetwork;
use yonggi::testimages::Set;
use yonggi::testimages::catalog::{self, names};

/// The container env with the symlinked-mounts image pulled as well.
async fn escapes_env() -> (Env, String) {
    let net = TestNetwork::new();
    let registry = Registry::start();
    let mut images = Vec::new();
    for name in [names::BUSYBOX, names::SYMLINKED_MOUNTS] {
        images.push(
            catalog::find(Set::All, name, "latest")
                .expect("catalog")
                .expect("image"),
        );
    }
    registry.push(&images).await;
    let daemon = pod_daemon(&net, "");
    let mut client = daemon.images().await;
    let mut refs = Vec::new();
    for name in [names::BUSYBOX, names::SYMLINKED_MOUNTS] {
        let image = registry.reference(name, "latest");
        client
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("PullImage");
        refs.push(image);
    }
    let rt = daemon.runtime().await;
    let logs = tempfile::Builder::new()
        .prefix("yonggi-escape-logs-")
        .tempdir()
        .expect("log dir");
    let env = Env {
        _registry: registry,
        daemon,
        rt,
        image: refs[0].clone(),
        logs,
        pod_names: Vec::new(),
        _net: net,
    };
    (env, refs[1].clone())
}

async fn pod_with_pid(e: &mut Env, name: &str, pid: cri::NamespaceMode) -> String {
    let mut c = config(name);
    ns_options(&mut c).pid = pid.into();
    c.log_directory = e.logs.path().join(name).display().to_string();
    e.pod_names.push(name.to_string());
    run(&mut e.rt, c).await.expect("RunPodSandbox")
}

async fn sh(e: &mut Env, id: &str, script: &str) -> (i32, String, String) {
    let r = e
        .exec(id, &["sh", "-c", script], 20)
        .await
        .expect("ExecSync");
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
        String::from_utf8_lossy(&r.stderr).trim().to_string(),
    )
}

async fn sleeper(e: &mut Env, pod: &str, name: &str) -> String {
    let id = e
        .create(pod, e.container(name, &["sleep", "600"], &[]))
        .await
        .expect("CreateContainer");
    e.start(&id).await;
    id
}

/// Size, mtime and a checksum of the daemon's binary.
fn fingerprint(path: &Path) -> (u64, i64, u64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("stat yonggi");
    let bytes = std::fs::read(path).expect("read yonggi");
    let sum = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    (meta.size(), meta.mtime(), sum)
}

/// `<pid> <exe> <cmdline>` of every process the container sees.
const LIST_PROCESSES: &str = r#"for p in /proc/[0-9]*; do echo "${p#/proc/} $(readlink $p/exe 2>/dev/null) $(tr '\0' ' ' < $p/cmdline)"; done"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_binary_is_out_of_reach() {
    let (mut e, _) = escapes_env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let binary = support::daemon::yonggi_bin();
    let before = fingerprint(&binary);

    // Its own PID namespace: PID 1 is the container's program, and no
    // process of the runtime (daemon, monitor, exec helper) is in sight.
    let pod = pod_with_pid(&mut e, "own-pid", cri::NamespaceMode::Container).await;
    let id = sleeper(&mut e, &pod, "sleeper").await;
    let (code, exe, _) = sh(&mut e, &id, "readlink /proc/1/exe; readlink -f /bin/sleep").await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = exe.lines().collect();
    assert_eq!(lines.len(), 2, "{exe}");
    assert_eq!(lines[0], lines[1], "/proc/1/exe is the container's binary");
    let (code, list, _) = sh(&mut e, &id, LIST_PROCESSES).await;
    assert_eq!(code, 0);
    assert!(
        !list.contains("yonggi"),
        "runtime processes visible:\n{list}"
    );
    // Writing through /proc/self/exe reaches the container's own file at
    // most, and that is busy while it runs.
    let (code, _, _) = sh(&mut e, &id, "echo pwned >> /proc/1/exe").await;
    assert_ne!(code, 0, "the running binary was opened for writing");

    // A pod PID namespace: PID 1 is the pod's holder, the yonggi binary.
    // The container may see that it exists, never reach its binary.
    let pod2 = pod_with_pid(&mut e, "pod-pid", cri::NamespaceMode::Pod).await;
    let id2 = sleeper(&mut e, &pod2, "sleeper").await;
    let (code, list, _) = sh(&mut e, &id2, LIST_PROCESSES).await;
    assert_eq!(code, 0);
    for line in list.lines() {
        let pid = line.split(' ').next().unwrap_or("");
        if pid == "1" {
            assert!(
                !line.contains("/yonggi "),
                "the holder's binary path is readable: {line}"
            );
        } else {
            assert!(!line.contains("yonggi"), "runtime process visible: {line}");
        }
    }
    for attempt in [
        "readlink /proc/1/exe",
        "cat /proc/1/exe > /dev/null",
        "echo pwned >> /proc/1/exe",
        "readlink /proc/1/fd/0",
        "ls /proc/1/root/",
        "cat /proc/1/environ",
    ] {
        let (code, out, _) = sh(&mut e, &id2, attempt).await;
        assert_ne!(code, 0, "{attempt} succeeded: {out}");
    }
    // The holder itself keeps no descriptor of the daemon's.
    let holder = info(&status(&mut e.rt, &pod2).await.expect("PodSandboxStatus"))["pid"]
        .as_i64()
        .expect("holder pid");
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{holder}/fd"))
        .expect("holder fds")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "descriptors of the pod's holder");
    assert_eq!(fingerprint(&binary), before, "the yonggi binary changed");

    for (c, p) in [(&id, &pod), (&id2, &pod2)] {
        e.stop(c, 0).await;
        e.remove(c).await;
        stop(&mut e.rt, p).await;
        remove(&mut e.rt, p).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_descriptor_leaks_and_no_working_dir_outside() {
    let (mut e, _) = escapes_env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = pod_with_pid(&mut e, "fds", cri::NamespaceMode::Container).await;
    let id = sleeper(&mut e, &pod, "sleeper").await;
    // The init, a process started by ExecSync, and one started by it.
    let (_, init_fds, _) = sh(&mut e, &id, "ls /proc/1/fd").await;
    assert_eq!(init_fds, "0\n1\n2");
    // A tty container's init holds its console's replica, never the master
    // (the monitor has that).
    let mut console = e.container("console", &["sleep", "600"], &[]);
    console.tty = true;
    let tty_id = e.create(&pod, console).await.expect("CreateContainer");
    e.start(&tty_id).await;
    let (_, tty_fds, _) = sh(
        &mut e,
        &tty_id,
        "for f in /proc/1/fd/*; do echo ${f##*/} $(readlink $f); done",
    )
    .await;
    assert_eq!(tty_fds, "0 /dev/pts/0\n1 /dev/pts/0\n2 /dev/pts/0");
    e.stop(&tty_id, 0).await;
    e.remove(&tty_id).await;
    let (_, exec_fds, _) = sh(
        &mut e,
        &id,
        "sleep 30 & p=$!; ls /proc/$p/fd; ls /proc/$$/fd | grep -v '^[0-9][0-9]*$'; kill $p",
    )
    .await;
    assert_eq!(exec_fds, "0\n1\n2");
    let (_, self_fds, _) = sh(&mut e, &id, "ls -l /proc/$$/fd").await;
    for line in self_fds.lines().filter(|l| l.contains("->")) {
        let target = line.rsplit("-> ").next().unwrap_or("");
        assert!(
            target.starts_with("pipe:") || target.starts_with("/dev/"),
            "the exec'd shell holds {line}"
        );
    }

    // A working dir through a descriptor the init holds before its exec:
    // refused, or inside the root. A marker on the host tells whether `..`
    // climbs out.
    let marker = PathBuf::from(format!(
        "/tmp/yonggi-escape-marker-{:08x}",
        rand::random::<u32>()
    ));
    std::fs::write(&marker, "host").expect("marker");
    let name = marker
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let script = format!(
        "test -e ../../../../../../../../../../tmp/{name} && echo ESCAPED; readlink /proc/self/cwd; true"
    );
    let mut outcomes = Vec::new();
    for fd in 3..=20 {
        let mut c = e.container(&format!("cwd-{fd}"), &["sh", "-c", &script], &[]);
        c.working_dir = format!("/proc/self/fd/{fd}");
        let created = e.create(&pod, c).await;
        let Ok(ctr) = created else {
            outcomes.push(format!("{fd}: refused"));
            continue;
        };
        let started =
            e.rt.start_container(cri::StartContainerRequest {
                container_id: ctr.clone(),
            })
            .await;
        if started.is_ok() {
            let st = e.wait_exited(&ctr).await;
            let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
            assert!(
                !log.contains("ESCAPED"),
                "fd {fd}: cwd outside the root: {log}"
            );
            assert!(
                !log.contains("unreachable"),
                "fd {fd}: cwd outside the root: {log}"
            );
            outcomes.push(format!("{fd}: ran"));
        }
        e.remove(&ctr).await;
    }
    let _ = std::fs::remove_file(&marker);
    eprintln!("working dirs through descriptors: {outcomes:?}");

    e.stop(&id, 0).await;
    e.remove(&id).await;
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_targets_never_follow_symlinks_out_of_the_rootfs() {
    let (mut e, image) = escapes_env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let volume = tempfile::tempdir().expect("volume");
    std::fs::write(volume.path().join("volume-marker"), "v").expect("marker");
    let name = format!("yonggi-escape-target-{:08x}", rand::random::<u32>());
    // Exists on the host, empty: a bind landing here would show.
    let host_target = Path::new("/tmp").join(&name);
    std::fs::create_dir(&host_target).expect("host target");
    let host_root_before: Vec<_> = std::fs::read_dir("/")
        .expect("ls /")
        .flatten()
        .map(|e| e.file_name())
        .collect();

    let pod = pod_with_pid(&mut e, "mounts", cri::NamespaceMode::Container).await;
    let targets = [
        format!("/escape-tmp/{name}"),
        format!("/escape-up/tmp/{name}-up"),
        format!("/escape-root/{name}-root"),
    ];
    let mut c = e.container(
        "symlinked",
        &[
            "sh",
            "-c",
            &format!("ls /tmp/{name} /tmp/{name}-up /{name}-root"),
        ],
        &[],
    );
    c.image = Some(cri::ImageSpec {
        image: image.clone(),
        ..Default::default()
    });
    c.mounts = targets
        .iter()
        .map(|t| cri::Mount {
            container_path: t.clone(),
            host_path: volume.path().display().to_string(),
            ..Default::default()
        })
        .collect();
    let (st, lines) = e.run_to_end(&pod, c).await;
    // Each bind landed at the in-root resolution of its target.
    assert_eq!(st.exit_code, 0, "{lines:?}");
    let markers = lines
        .iter()
        .filter(|l| l.content.trim() == "volume-marker")
        .count();
    assert_eq!(markers, 3, "{lines:?}");
    // The host: nothing in the target, nothing new under / or /tmp.
    assert_eq!(
        std::fs::read_dir(&host_target).expect("ls").count(),
        0,
        "the host target got content"
    );
    assert!(!Path::new(&format!("/tmp/{name}-up")).exists());
    assert!(!Path::new(&format!("/{name}-root")).exists());
    let host_root_after: Vec<_> = std::fs::read_dir("/")
        .expect("ls /")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(host_root_before, host_root_after);
    assert_eq!(
        mountinfo_mentions(&name),
        Vec::<String>::new(),
        "host mounts"
    );

    // A volume on the symlink to / itself covers the container's root
    // at most; the host's / is untouched either way.
    let mut c = e.container("on-root", &["true"], &[]);
    c.image = Some(cri::ImageSpec {
        image,
        ..Default::default()
    });
    c.mounts = vec![cri::Mount {
        container_path: "/escape-root".into(),
        host_path: volume.path().display().to_string(),
        ..Default::default()
    }];
    if let Ok(id) = e.create(&pod, c).await {
        let _ =
            e.rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await;
        let _ = e.wait_exited(&id).await;
        e.remove(&id).await;
    }
    let host_root_after: Vec<_> = std::fs::read_dir("/")
        .expect("ls /")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(host_root_before, host_root_after);
    assert_eq!(
        std::fs::read_dir(volume.path()).expect("ls").count(),
        1,
        "the volume gained entries"
    );
    let _ = std::fs::remove_dir(&host_target);
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_container_cannot_touch_the_kernel_or_the_host() {
    let (mut e, _) = escapes_env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let host_name = nix::unistd::gethostname().expect("hostname");
    let pod = pod_with_pid(&mut e, "kernel", cri::NamespaceMode::Container).await;
    let id = sleeper(&mut e, &pod, "sleeper").await;
    for (what, script) in [
        (
            "load a kernel module",
            "printf junk > /tmp/m.ko && insmod /tmp/m.ko",
        ),
        (
            "mount a filesystem",
            "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t",
        ),
        ("remount the root", "mount -o remount,ro /"),
        ("set the hostname", "hostname escaped-host"),
        (
            "write the hostname through /proc",
            "echo escaped-host > /proc/sys/kernel/hostname",
        ),
    ] {
        let (code, out, err) = sh(&mut e, &id, script).await;
        assert_ne!(code, 0, "could {what}: {out} {err}");
    }
    let (_, name, _) = sh(&mut e, &id, "hostname").await;
    assert_eq!(name, "kernel", "the pod's hostname changed");
    assert_eq!(
        nix::unistd::gethostname().expect("hostname"),
        host_name,
        "the host's hostname changed"
    );
    let (_, mounts, _) = sh(&mut e, &id, "grep ' /mnt/t ' /proc/self/mountinfo; true").await;
    assert_eq!(mounts, "");
    e.stop(&id, 0).await;
    e.remove(&id).await;
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}
