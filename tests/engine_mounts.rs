//! What the container sees: its own mounts, volumes (read-only, recursive
//! read-only, propagation), the CVE-2021-30465 class, pod namespaces,
//! cgroups and OOM.

mod support;

use std::fs;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxCapabilitiesBuilder, LinuxNamespaceType};
use support::daemon::yonggi_bin;
use support::engine::*;
use yonggi::monitor;

#[test]
fn the_container_has_its_own_mounts_proc_dev_and_hostname() {
    let mut case = Case::new();
    let script = "echo pid=$$; hostname; \
        test -c /dev/null && echo devnull; test -L /dev/fd && echo devfd; \
        test -e /proc/self/status && echo proc; \
        touch /sys/x 2>/dev/null || echo sys-ro; \
        touch /sys/fs/cgroup/x 2>/dev/null || echo cgroup-ro; \
        ls /sys/fs/cgroup | head -1 | grep -q . && echo cgroup-listed; \
        test -e /dev/pts/ptmx && echo pts; \
        cat /etc/layer; cat /proc/sys/kernel/shm_rmid_forced; \
        (echo 0 > /proc/sys/kernel/shm_rmid_forced) 2>/dev/null || echo proc-sys-ro; \
        cat /proc/self/mountinfo";
    let mut spec = case.spec(&["sh", "-c", script]);
    // A namespaced sysctl (own IPC namespace), set before /proc/sys goes
    // read-only.
    let sysctl = [("kernel.shm_rmid_forced".to_string(), "1".to_string())];
    let linux = spec.linux_mut().as_mut().expect("linux");
    linux.set_sysctl(Some(sysctl.into_iter().collect()));
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(
        &out[..12],
        &[
            "pid=1",
            "yonggi-test",
            "devnull",
            "devfd",
            "proc",
            "sys-ro",
            "cgroup-ro",
            "cgroup-listed",
            "pts",
            "top",
            "1",
            "proc-sys-ro",
        ]
    );
    // Its mount table: mount point -> (fs type, per-mount options).
    let mounts: std::collections::HashMap<&str, (&str, &str)> = out[12..]
        .iter()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<_> = left.split(' ').collect();
            Some((f[4], (right.split(' ').next()?, f[5])))
        })
        .collect();
    assert_eq!(mounts.get("/").map(|m| m.0), Some("overlay"), "{mounts:?}");
    assert_eq!(mounts.get("/proc").map(|m| m.0), Some("proc"));
    assert_eq!(mounts.get("/dev").map(|m| m.0), Some("tmpfs"));
    let sys = mounts.get("/sys").expect("/sys mounted");
    assert!(
        sys.0 == "sysfs" && sys.1.split(',').any(|o| o == "ro"),
        "{sys:?}"
    );
    // Nothing of the host's tree is visible: no mount point outside the
    // container's own, e.g. the host's test dir.
    let host_dir = case.dir.path().to_string_lossy().into_owned();
    assert!(
        mounts.keys().all(|m| !m.starts_with(&host_dir)),
        "{mounts:?}"
    );
    // The host's hostname is untouched.
    assert_ne!(nix::unistd::gethostname().expect("hostname"), "yonggi-test");
    case.finish();
}

#[test]
fn bind_mounts_honour_read_only_and_writes_reach_the_host() {
    let mut case = Case::new();
    let ro = case.dir.path().join("ro");
    let rw = case.dir.path().join("rw");
    fs::create_dir_all(&ro).expect("dir");
    fs::create_dir_all(&rw).expect("dir");
    fs::write(ro.join("f"), "from-host\n").expect("file");
    // A host path that is a symlink is resolved on the host.
    let link = case.dir.path().join("rw-link");
    std::os::unix::fs::symlink(&rw, &link).expect("symlink");
    // A file bind onto a dangling symlink of the image, as many images
    // ship /etc/resolv.conf: its target is made inside the rootfs.
    let resolv = case.dir.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 127.0.0.53\n").expect("resolv.conf");
    std::os::unix::fs::symlink(
        "../run/resolve/stub.conf",
        case.rootfs.join("etc/resolv.conf"),
    )
    .expect("symlink");
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "cat /data/f; touch /data/x 2>/dev/null || echo ro-refused; \
         touch /rro/x 2>/dev/null || echo rro-refused; echo written > /rw/out; \
         cat /etc/resolv.conf",
    ]);
    Case::add_bind(&mut spec, &resolv, "/etc/resolv.conf", &["rbind", "ro"]);
    Case::add_bind(&mut spec, &ro, "/data", &["rbind", "ro", "rprivate"]);
    Case::add_bind(&mut spec, &ro, "/rro", &["rbind", "rro", "rslave"]);
    Case::add_bind(&mut spec, &link, "/rw", &["rbind", "rw"]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(
        out,
        vec![
            "from-host",
            "ro-refused",
            "rro-refused",
            "nameserver 127.0.0.53"
        ]
    );
    assert!(case.rootfs.join("run/resolve/stub.conf").exists());
    assert_eq!(
        fs::read_to_string(rw.join("out")).expect("written"),
        "written\n"
    );
    assert!(!ro.join("x").exists());
    case.finish();
}

/// CVE-2021-30465 class: a symlink in the image at a mount target must be
/// resolved inside the rootfs, never on the host.
#[test]
fn a_symlinked_mount_target_stays_inside_the_rootfs() {
    let mut case = Case::new();
    let outside = case.dir.path().join("outside");
    fs::create_dir_all(&outside).expect("dir");
    // In the image: /escape -> <host path of `outside`>.
    std::os::unix::fs::symlink(&outside, case.rootfs.join("escape")).expect("symlink");
    let volume = case.dir.path().join("volume");
    fs::create_dir_all(&volume).expect("dir");
    fs::write(volume.join("f"), "volume\n").expect("file");
    let inside = format!("{}/landing/f", outside.display());
    let mut spec = case.spec(&["cat", inside.as_str()]);
    Case::add_bind(&mut spec, &volume, "/escape/landing", &["rbind"]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    assert_eq!(lines, vec![line("stdout", "F", "volume")]);
    assert!(
        !outside.join("landing").exists(),
        "the bind target was created on the host"
    );
    case.finish();
}

/// A pod's namespaces are joined by path: the second container shares the
/// first one's network, IPC and UTS namespaces (its hostname too).
#[test]
fn namespaces_given_by_path_are_joined() {
    let mut pod = Case::new();
    let mut spec = pod.spec(&["sleep", "1000"]);
    spec.set_hostname(Some("pod-host".to_string()));
    let holder = pod.launch(&spec);
    monitor::start(&pod.state).expect("start the holder");

    let mut case = Case::new();
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "hostname; for n in net ipc pid; do readlink /proc/self/ns/$n; done",
    ]);
    spec.set_hostname(Some("ignored".to_string()));
    let linux = spec.linux_mut().as_mut().expect("linux");
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in namespaces.iter_mut() {
        let name = match ns.typ() {
            LinuxNamespaceType::Network => "net",
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Uts => "uts",
            _ => continue,
        };
        ns.set_path(Some(PathBuf::from(format!(
            "/proc/{}/ns/{name}",
            holder.init_pid
        ))));
    }
    linux.set_namespaces(Some(namespaces));
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let ns = |name: &str| {
        fs::read_link(format!("/proc/{}/ns/{name}", holder.init_pid))
            .expect("holder ns")
            .display()
            .to_string()
    };
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(
        out[..3],
        ["pod-host", ns("net").as_str(), ns("ipc").as_str()]
    );
    // Its PID namespace is its own.
    assert_ne!(out[3], ns("pid"));
    case.finish();
    monitor::kill(&pod.state, 9).expect("kill the holder");
    monitor::wait(&pod.state).expect("wait the holder");
    pod.finish();
}

/// The init joins the container's cgroup (made by the cgroup manager) in
/// every hierarchy, sees it as the root of its /sys/fs/cgroup (cgroup
/// namespace), and an OOM kill is recorded.
#[test]
fn the_cgroup_is_joined_and_an_oom_kill_is_recorded() {
    let mut case = Case::new();
    let cgroup = TestCgroup::new(32 << 20);
    let spec = case.spec(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    let mut config = case.config();
    config.cgroup_dirs = cgroup.cgroups.dirs(&cgroup.cg);
    config.oom_events = Some(
        cgroup
            .cgroups
            .oom_events_file(&cgroup.cg)
            .expect("oom file"),
    );
    let launched = monitor::launch(&yonggi_bin(), &case.state, &spec, &config, LAUNCH_TIMEOUT)
        .expect("launch");
    case.pids.extend([launched.monitor_pid, launched.init_pid]);
    for dir in &config.cgroup_dirs {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).expect("procs");
        assert!(
            procs.lines().any(|p| p == launched.init_pid.to_string()),
            "{}: {procs}",
            dir.display()
        );
    }
    monitor::start(&case.state).expect("start");
    let status = monitor::wait(&case.state).expect("wait");
    let lines = log_lines(&case.log);
    assert_eq!(lines.first().map(|l| l.content.as_str()), Some("33554432"));
    assert!(status.oom_killed, "{status:?} {lines:?}");
    assert_ne!(status.exit_code, 0);
    assert!(!lines.iter().any(|l| l.content == "survived"));
    case.finish();
}

/// rslave: a mount the host makes under the volume after start shows up
/// inside; rshared: one the container makes shows up on the host.
#[test]
fn rslave_and_rshared_propagation() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    for mode in ["rslave", "rshared"] {
        let mut case = Case::new();
        let volume = SharedMount::new(&case.dir.path().join("volume"));
        let sync = case.dir.path().join("sync");
        fs::create_dir_all(&sync).expect("dir");
        fs::create_dir_all(volume.0.join("sub")).expect("dir");
        let script = match mode {
            "rslave" => {
                "echo ready > /sync/state; \
                while [ ! -e /sync/go ]; do sleep 0.05; done; cat /vol/sub/marker"
            }
            _ => {
                "mount -t tmpfs tmpfs /vol/sub && echo from-container > /vol/sub/marker; \
                echo ready > /sync/state; while [ ! -e /sync/go ]; do sleep 0.05; done"
            }
        };
        let mut spec = case.spec(&["sh", "-c", script]);
        Case::add_bind(&mut spec, &volume.0, "/vol", &["rbind", mode]);
        Case::add_bind(&mut spec, &sync, "/sync", &["rbind"]);
        if mode == "rshared" {
            let linux = spec.linux_mut().as_mut().expect("linux");
            linux.set_rootfs_propagation(Some("rshared".to_string()));
            let process = spec.process_mut().as_mut().expect("process");
            let mut caps: oci_spec::runtime::Capabilities = yonggi::security::capabilities::DEFAULT
                .into_iter()
                .collect();
            caps.insert(oci_spec::runtime::Capability::SysAdmin);
            process.set_capabilities(Some(
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .effective(caps.clone())
                    .permitted(caps)
                    .build()
                    .expect("caps"),
            ));
        }
        case.launch(&spec);
        monitor::start(&case.state).expect("start");
        wait_for(&sync.join("state"), "ready");
        if mode == "rslave" {
            let sub = volume.0.join("sub");
            mount(
                Some("tmpfs"),
                &sub,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .expect("host mount");
            fs::write(sub.join("marker"), "from-host\n").expect("marker");
        } else {
            let marker = fs::read_to_string(volume.0.join("sub/marker"));
            assert_eq!(marker.ok().as_deref(), Some("from-container\n"), "{mode}");
        }
        fs::write(sync.join("go"), "").expect("go");
        let status = monitor::wait(&case.state).expect("wait");
        assert_eq!(status.exit_code, 0, "{mode}: {:?}", log_lines(&case.log));
        if mode == "rslave" {
            assert_eq!(log_lines(&case.log), vec![line("stdout", "F", "from-host")]);
        }
        let _ = umount2(&volume.0.join("sub"), MntFlags::MNT_DETACH);
        drop(volume);
        case.finish();
    }
}

/// With `clone_into_cgroup` the init starts inside its cgroup v2
/// directory (`clone3` with `CLONE_INTO_CGROUP`); the other hierarchies are
/// joined through `cgroup.procs` as before.
#[test]
fn the_init_can_be_cloned_into_its_v2_cgroup() {
    let mut case = Case::new();
    let cgroup = TestCgroup::new(64 << 20);
    let dirs = cgroup.cgroups.dirs(&cgroup.cg);
    let is_v2 = |d: &PathBuf| {
        nix::sys::statfs::statfs(d.as_path())
            .expect("statfs")
            .filesystem_type()
            == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    };
    let v2 = dirs
        .iter()
        .find(|d| is_v2(d))
        .expect("a cgroup v2 hierarchy")
        .clone();
    let mut config = case.config();
    config.clone_into_cgroup = Some(v2.clone());
    config.cgroup_dirs = dirs.iter().filter(|d| !is_v2(d)).cloned().collect();
    let spec = case.spec(&["sh", "-c", "echo in"]);
    let launched = monitor::launch(&yonggi_bin(), &case.state, &spec, &config, LAUNCH_TIMEOUT)
        .expect("launch");
    case.pids.extend([launched.monitor_pid, launched.init_pid]);
    for dir in &dirs {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).expect("procs");
        assert!(
            procs.lines().any(|p| p == launched.init_pid.to_string()),
            "{}: {procs}",
            dir.display()
        );
    }
    monitor::start(&case.state).expect("start");
    assert_eq!(monitor::wait(&case.state).expect("wait").exit_code, 0);
    assert_eq!(log_lines(&case.log), vec![line("stdout", "F", "in")]);
    case.finish();
}

/// A read-only root, the spec's masked paths (the default set hides
/// /proc/keys behind /dev/null and /proc/acpi under an empty read-only
/// tmpfs) and extra device nodes.
#[test]
fn read_only_root_masked_paths_and_devices() {
    let mut case = Case::new();
    let script = "touch /x 2>/dev/null || echo root-ro; \
        test -c /proc/keys && echo keys-masked; \
        ls -A /proc/acpi | wc -l; touch /proc/acpi/x 2>/dev/null || echo acpi-ro; \
        test -c /dev/fuse && echo fuse; ls -ln /dev/fuse | cut -c1-10";
    let mut spec = case.spec(&["sh", "-c", script]);
    spec.root_mut()
        .as_mut()
        .expect("root")
        .set_readonly(Some(true));
    let fuse = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path("/dev/fuse")
        .typ(oci_spec::runtime::LinuxDeviceType::C)
        .major(10)
        .minor(229)
        .file_mode(0o620u32)
        .build()
        .expect("device");
    let linux = spec.linux_mut().as_mut().expect("linux");
    linux.set_devices(Some(vec![fuse]));
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(
        out,
        [
            "root-ro",
            "keys-masked",
            "0",
            "acpi-ro",
            "fuse",
            "crw--w----"
        ]
    );
    case.finish();
}
