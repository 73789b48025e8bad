//! The sandbox cgroup under kubelet's cgroup parent, with cgroupfs and
//! systemd naming, and nothing of it left after removal.

mod pod_support;
mod support;

use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use pod_support::*;

/// The cgroup directories (under every mounted hierarchy) whose path ends
/// with `suffix`.
fn cgroup_dirs(suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = entry.path().join(suffix.trim_start_matches('/'));
        if dir.is_dir() {
            found.push(dir);
        }
    }
    let unified = Path::new("/sys/fs/cgroup").join(suffix.trim_start_matches('/'));
    if unified.join("cgroup.procs").exists() {
        found.push(unified);
    }
    found
}

async fn holder_lands_in_sandbox_cgroup(driver: &str, parent: &str, leaf: impl Fn(&str) -> String) {
    let net = TestNetwork::new();
    let daemon = pod_daemon(&net, &format!("[cgroup]\ndriver = \"{driver}\"\n"));
    let _leftovers = Leftovers::of(&daemon);
    let mut rt = daemon.runtime().await;
    let mut c = config("grouped");
    c.linux.as_mut().expect("linux").cgroup_parent = parent.to_string();
    ns_options(&mut c).pid = cri::NamespaceMode::Pod.into();
    let id = run(&mut rt, c).await.expect("run");
    let st = status(&mut rt, &id).await.expect("status");
    let pid = info(&st)["pid"].as_i64().expect("holder pid");
    let expected = leaf(&id);
    assert_eq!(info(&st)["cgroup"].as_str(), Some(expected.as_str()));
    let membership =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("holder cgroups");
    assert!(
        membership
            .lines()
            .any(|l| l.ends_with(&format!(":{expected}"))),
        "holder not in {expected}:\n{membership}"
    );
    assert!(!cgroup_dirs(&expected).is_empty());
    stop(&mut rt, &id).await;
    remove(&mut rt, &id).await;
    remove(&mut rt, &id).await;
    assert_gone(&daemon, &id, i32::try_from(pid).ok());
    assert_eq!(
        cgroup_dirs(&expected),
        Vec::<PathBuf>::new(),
        "sandbox cgroup left"
    );
    // The parent did not exist before: yonggi made it and removed it again.
    let top = expected
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    assert_eq!(
        cgroup_dirs(top),
        Vec::<PathBuf>::new(),
        "parent cgroup left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_cgroup_with_cgroupfs_naming() {
    let parent = format!("/yonggi-test-{:08x}/pod1", rand::random::<u32>());
    let expected_parent = parent.clone();
    holder_lands_in_sandbox_cgroup("cgroupfs", &parent, |id| format!("{expected_parent}/{id}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_cgroup_with_systemd_naming() {
    let tag = format!("{:08x}", rand::random::<u32>());
    let slice = format!("ygtest{tag}-pod1.slice");
    holder_lands_in_sandbox_cgroup("systemd", &slice, |id| {
        format!("/ygtest{tag}.slice/ygtest{tag}-pod1.slice/yonggi-{id}.scope")
    })
    .await;
}
