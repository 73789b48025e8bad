//! Volumes and devices through the real daemon: mount propagation private / rslave /
//! rshared between the host and a container, the host-side precondition of
//! each, recursive read-only mounts and their rejected combinations, and a
//! symlinked host path; CRI devices and the device cgroup.

mod container_support;
mod pod_support;
mod support;

use std::path::{Path, PathBuf};

use container_support::*;
use k8s_cri::v1 as cri;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use pod_support::*;
use tonic::Code;

/// A host directory `mnt` bound onto itself with the given propagation (as
/// critest prepares it), a source directory with a flag file, and the
/// mounts the test makes below `mnt`, all unmounted on drop.
struct HostVolume {
    dir: tempfile::TempDir,
}

impl HostVolume {
    fn new(propagation: MsFlags) -> HostVolume {
        let dir = tempfile::Builder::new()
            .prefix("yonggi-prop-")
            .tempdir()
            .expect("temp dir");
        let v = HostVolume { dir };
        std::fs::create_dir_all(v.mnt().join("from-host")).expect("mount point");
        std::fs::create_dir_all(v.src()).expect("src");
        std::fs::write(v.src().join("flag"), "flag\n").expect("flag");
        let mnt = v.mnt();
        mount(
            Some(&mnt),
            &mnt,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("bind mnt");
        mount(
            None::<&str>,
            &mnt,
            None::<&str>,
            propagation | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("propagation of mnt");
        v
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }
}

impl Drop for HostVolume {
    fn drop(&mut self) {
        for sub in ["from-container", "from-host", ""] {
            let _ = umount2(&self.mnt().join(sub), MntFlags::MNT_DETACH);
        }
    }
}

/// Runs `script` with `sh` in the mount namespace and root of process `pid`
/// (the container's init): a mount made there is the container's own, with
/// no need for the container to hold CAP_SYS_ADMIN.
fn in_container_mount_ns(pid: i64, script: &str) {
    let pid = pid.to_string();
    nsenter(&["-t", &pid, "-m", "-r", "--", "/bin/sh", "-c", script]);
}

fn volume(host: &Path, container: &str, propagation: cri::MountPropagation) -> cri::Mount {
    cri::Mount {
        container_path: container.into(),
        host_path: host.display().to_string(),
        propagation: propagation.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rslave_and_rshared_propagation() {
    use cri::MountPropagation::*;
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("prop").await;

    for (propagation, host_side) in [
        (PropagationPrivate, MsFlags::MS_PRIVATE),
        (PropagationHostToContainer, MsFlags::MS_SHARED),
        (PropagationBidirectional, MsFlags::MS_SHARED),
    ] {
        let what = format!("{propagation:?}");
        let host = HostVolume::new(host_side);
        let mut c = e.container(
            &format!("prop-{}", propagation as i32),
            &["sleep", "600"],
            &[],
        );
        c.mounts = vec![volume(&host.mnt(), "/vol", propagation)];
        let id = e.create(&pod, c).await.expect("create");
        let st = e.status(&id).await;
        let mounts = &st.status.as_ref().expect("status").mounts;
        assert_eq!(mounts.len(), 1, "{what}");
        assert_eq!(mounts[0].propagation(), propagation, "{what}");
        assert_eq!(mounts[0].host_path, host.mnt().display().to_string());
        assert!(!mounts[0].readonly);
        e.start(&id).await;
        let pid = ctr_info(&e.status(&id).await)["pid"].as_i64().expect("pid");

        // Host → container: a mount made on the host after the start.
        mount(
            Some(&host.src()),
            &host.mnt().join("from-host"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("host mount");
        let out = e
            .exec(&id, &["ls", "-A", "/vol/from-host"], 0)
            .await
            .expect("ls");
        let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match propagation {
            PropagationPrivate => assert_eq!(seen, "", "{what}"),
            _ => assert_eq!(seen, "flag", "{what}"),
        }

        // Container → host: a mount made in the container's namespace.
        in_container_mount_ns(
            pid,
            "mkdir -p /vol/from-container && mount -t tmpfs tmpfs /vol/from-container \
             && echo inside > /vol/from-container/marker",
        );
        let on_host = std::fs::read_to_string(host.mnt().join("from-container/marker")).ok();
        match propagation {
            PropagationBidirectional => assert_eq!(on_host.as_deref(), Some("inside\n"), "{what}"),
            _ => assert_eq!(on_host, None, "{what}"),
        }
        // The container's own view has it in every mode.
        let out = e
            .exec(&id, &["cat", "/vol/from-container/marker"], 0)
            .await
            .expect("cat");
        assert_eq!(out.stdout, b"inside\n", "{what}");

        e.remove(&id).await;
        e.assert_gone(&id, &[pid]);
        drop(host);
    }

    // The host side must allow what is asked: bidirectional needs a shared
    // host mount, host-to-container a shared or slave one. A refused
    // create leaves nothing, and the name stays free.
    let private = HostVolume::new(MsFlags::MS_PRIVATE);
    for propagation in [PropagationBidirectional, PropagationHostToContainer] {
        let mut c = e.container("refused", &["sleep", "600"], &[]);
        c.mounts = vec![volume(&private.mnt(), "/vol", propagation)];
        let err = e.create(&pod, c).await.expect_err("private host mount");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
    let mut c = e.container("refused", &["true"], &[]);
    c.mounts = vec![volume(&private.mnt(), "/vol", PropagationPrivate)];
    let id = e.create(&pod, c).await.expect("the name is free");
    e.remove(&id).await;
    drop(private);

    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_and_symlinked_host_paths() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("rro").await;

    // kubelet only sends recursive read-only mounts to a runtime that says
    // it has them.
    let status =
        e.rt.status(cri::StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner();
    let default_handler = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .expect("default handler");
    assert!(
        default_handler
            .features
            .as_ref()
            .expect("features")
            .recursive_read_only_mounts
    );

    // A host directory with a tmpfs mounted below it.
    let dir = tempfile::Builder::new()
        .prefix("yonggi-rro-")
        .tempdir()
        .expect("dir");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("sub");
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
    let _sub = Unmount(sub.clone());
    // Reached through a symlink: the target is bound.
    let link = dir.path().with_extension("link");
    std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");

    for rro in [false, true] {
        let name = format!("ro-{rro}");
        let mut c = e.container(&name, &["sleep", "600"], &[]);
        c.mounts = vec![cri::Mount {
            container_path: "/vol".into(),
            host_path: link.display().to_string(),
            readonly: true,
            recursive_read_only: rro,
            ..Default::default()
        }];
        let id = e.create(&pod, c).await.expect("create");
        e.start(&id).await;
        let st = e.status(&id).await.status.expect("status");
        assert_eq!(st.mounts[0].host_path, link.display().to_string());
        assert_eq!(st.mounts[0].recursive_read_only, rro);
        let top = e
            .exec(&id, &["sh", "-c", "touch /vol/top 2>&1"], 0)
            .await
            .expect("exec");
        assert_ne!(top.exit_code, 0);
        assert!(String::from_utf8_lossy(&top.stdout).contains("Read-only file system"));
        let below = e
            .exec(&id, &["sh", "-c", "touch /vol/sub/below 2>&1"], 0)
            .await
            .expect("exec");
        if rro {
            assert_ne!(below.exit_code, 0, "rro leaves a submount writable");
            assert!(String::from_utf8_lossy(&below.stdout).contains("Read-only file system"));
        } else {
            // A plain read-only bind leaves submounts as they are.
            assert_eq!(
                below.exit_code,
                0,
                "{:?}",
                String::from_utf8_lossy(&below.stdout)
            );
            assert!(sub.join("below").exists());
        }
        e.remove(&id).await;
        e.assert_gone(&id, &[]);
    }

    // Recursive read-only needs readonly and private propagation.
    for (readonly, propagation) in [
        (false, cri::MountPropagation::PropagationPrivate),
        (true, cri::MountPropagation::PropagationHostToContainer),
        (true, cri::MountPropagation::PropagationBidirectional),
    ] {
        let mut c = e.container("bad-rro", &["sleep", "600"], &[]);
        c.mounts = vec![cri::Mount {
            container_path: "/vol".into(),
            host_path: dir.path().display().to_string(),
            readonly,
            recursive_read_only: true,
            propagation: propagation.into(),
            ..Default::default()
        }];
        let err = e.create(&pod, c).await.expect_err("rejected");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{readonly} {propagation:?}"
        );
    }
    std::fs::remove_file(&link).expect("unlink");
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

/// CRI devices: the host node appears at the asked path and may be used;
/// a container that did not ask cannot use it, even by making the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_given_and_others_are_refused() {
    let host = Path::new("/dev/loop-control");
    assert!(host.exists(), "the test needs {}", host.display());
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("dev").await;

    let mut with = e.container("with-device", &["sleep", "600"], &[]);
    with.devices = vec![cri::Device {
        container_path: "/dev/lc".into(),
        host_path: host.display().to_string(),
        permissions: "rw".into(),
    }];
    let with = e.create(&pod, with).await.expect("create");
    e.start(&with).await;
    let out = e
        .exec(
            &with,
            &[
                "sh",
                "-c",
                "stat -c '%F %t:%T' /dev/lc; exec 3<>/dev/lc && echo opened",
            ],
            0,
        )
        .await
        .expect("exec");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "character special file a:ed\nopened\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let without = e.container("without-device", &["sleep", "600"], &[]);
    let without = e.create(&pod, without).await.expect("create");
    e.start(&without).await;
    let out = e
        .exec(
            &without,
            &[
                "sh",
                "-c",
                "mknod /dev/lc c 10 237 && exec 3<>/dev/lc && echo opened",
            ],
            0,
        )
        .await
        .expect("exec");
    assert_ne!(out.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The standard pseudo-devices stay usable.
    let out = e
        .exec(
            &without,
            &[
                "sh",
                "-c",
                "echo x > /dev/null && head -c 3 /dev/zero | wc -c",
            ],
            0,
        )
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    // A path that is no device is refused at create.
    let mut bad = e.container("bad-device", &["sleep", "600"], &[]);
    bad.devices = vec![cri::Device {
        container_path: "/dev/x".into(),
        host_path: "/etc/hostname".into(),
        permissions: "r".into(),
    }];
    let err = e.create(&pod, bad).await.expect_err("not a device");
    assert_eq!(err.code(), Code::InvalidArgument);

    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
    e.assert_gone(&with, &[]);
    e.assert_gone(&without, &[]);
}
