//! What the daemon reports about containers, through the socket: image and
//! image_ref, ListContainers and ListContainerStats filters, writable layer
//! usage, hugepage limits in the cgroup, the CRI log (long lines, reopen
//! after a rename), and the default cgroup parent of pods without one.

mod container_support;
mod pod_support;
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use container_support::*;
use k8s_cri::v1 as cri;
use pod_support::*;
use support::engine::{log_lines, wait_for};
use tonic::Code;

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The 2 MiB hugetlb limit file of process `pid`, or why there is none.
fn hugetlb_limit_file(pid: i64) -> Result<PathBuf, String> {
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir() {
        return Err("the kernel has no 2 MiB huge pages".into());
    }
    let (dir, v1) = cgroup_dir(pid, "hugetlb")
        .ok_or("no hugetlb controller in a v1 hierarchy or the unified one")?;
    Ok(dir.join(if v1 {
        "hugetlb.2MB.limit_in_bytes"
    } else {
        "hugetlb.2MB.max"
    }))
}

async fn list_stats(e: &mut Env, filter: cri::ContainerStatsFilter) -> Vec<String> {
    let mut ids: Vec<String> =
        e.rt.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(filter),
        })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.expect("attributes").id)
        .collect();
    ids.sort();
    ids
}

async fn list(e: &mut Env, filter: cri::ContainerFilter) -> Vec<String> {
    let mut ids: Vec<String> =
        e.rt.list_containers(cri::ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_stats_hugepages_and_logs() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("stats").await;
    let other_pod = e.pod("other").await;
    let sync = tempfile::tempdir().expect("sync dir");

    let mut one = e.container(
        "one",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/big bs=1M count=2 2>/dev/null; echo before; \
             while [ ! -e /sync/go ]; do sleep 0.05; done; echo after; sleep 600",
        ],
        &[],
    );
    one.labels = labels(&[("app", "one"), ("tier", "x")]);
    one.mounts = vec![cri::Mount {
        container_path: "/sync".into(),
        host_path: sync.path().display().to_string(),
        ..Default::default()
    }];
    let huge_2m = 2u64 << 20;
    one.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 2 * huge_2m,
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    let one_id = e.create(&pod, one).await.expect("create one");
    e.start(&one_id).await;
    let mut two = e.container("two", &["sleep", "600"], &[]);
    two.labels = labels(&[("app", "two"), ("tier", "x")]);
    let two_id = e.create(&pod, two).await.expect("create two");
    e.start(&two_id).await;
    let three = e.container("three", &["sleep", "600"], &[]);
    let three_id = e.create(&other_pod, three).await.expect("create three");

    // ListContainers: id prefix, pod, state, labels.
    let f = |id: &str, pod: &str, labels: HashMap<String, String>| cri::ContainerFilter {
        id: id.to_string(),
        pod_sandbox_id: pod.to_string(),
        label_selector: labels,
        ..Default::default()
    };
    let all = sorted(vec![one_id.clone(), two_id.clone(), three_id.clone()]);
    assert_eq!(list(&mut e, f("", "", HashMap::new())).await, all);
    assert_eq!(
        list(&mut e, f(&one_id[..10], "", HashMap::new())).await,
        vec![one_id.clone()]
    );
    assert_eq!(
        list(&mut e, f("", &pod, HashMap::new())).await,
        sorted(vec![one_id.clone(), two_id.clone()])
    );
    assert_eq!(
        list(&mut e, f("", "", labels(&[("tier", "x")]))).await,
        sorted(vec![one_id.clone(), two_id.clone()])
    );
    assert_eq!(
        list(&mut e, f("", "", labels(&[("tier", "x"), ("app", "two")]))).await,
        vec![two_id.clone()]
    );
    assert!(
        list(&mut e, f(&one_id, &other_pod, HashMap::new()))
            .await
            .is_empty()
    );
    let mut created = f("", "", HashMap::new());
    created.state = Some(cri::ContainerStateValue {
        state: cri::ContainerState::ContainerCreated.into(),
    });
    assert_eq!(list(&mut e, created).await, vec![three_id.clone()]);

    // ListContainerStats: the same filters (no state).
    let sf = |id: &str, pod: &str, labels: HashMap<String, String>| cri::ContainerStatsFilter {
        id: id.to_string(),
        pod_sandbox_id: pod.to_string(),
        label_selector: labels,
    };
    assert_eq!(list_stats(&mut e, sf("", "", HashMap::new())).await, all);
    assert_eq!(
        list_stats(&mut e, sf(&two_id, "", HashMap::new())).await,
        vec![two_id.clone()]
    );
    assert_eq!(
        list_stats(&mut e, sf("", &other_pod, HashMap::new())).await,
        vec![three_id.clone()]
    );
    assert_eq!(
        list_stats(&mut e, sf("", "", labels(&[("app", "one")]))).await,
        vec![one_id.clone()]
    );
    assert!(
        list_stats(&mut e, sf("", "", labels(&[("app", "none")])))
            .await
            .is_empty()
    );

    // The writable layer holds what the container wrote.
    let log = e.log_file("stats", "one");
    wait_for(&log, "before");
    let stats =
        e.rt.container_stats(cri::ContainerStatsRequest {
            container_id: one_id.clone(),
        })
        .await
        .expect("stats")
        .into_inner()
        .stats
        .expect("stats");
    let layer = stats.writable_layer.expect("writable layer");
    assert!(layer.timestamp > 0);
    assert!(
        !layer.fs_id.expect("fs id").mountpoint.is_empty(),
        "the filesystem of writable layers is named"
    );
    let used = layer.used_bytes.expect("used").value;
    assert!(used >= 2 << 20, "writable layer usage {used}");
    assert!(layer.inodes_used.expect("inodes").value >= 1);

    // Hugepage limits reach the cgroup, and UpdateContainerResources
    // changes them.
    let pid = ctr_info(&e.status(&one_id).await)["pid"]
        .as_i64()
        .expect("pid");
    match hugetlb_limit_file(pid) {
        Ok(file) => {
            let read = || std::fs::read_to_string(&file).expect("hugetlb limit");
            assert_eq!(read().trim(), (2 * huge_2m).to_string(), "{file:?}");
            e.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: one_id.clone(),
                linux: Some(cri::LinuxContainerResources {
                    hugepage_limits: vec![cri::HugepageLimit {
                        page_size: "2MB".into(),
                        limit: 4 * huge_2m,
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("update");
            assert_eq!(read().trim(), (4 * huge_2m).to_string(), "{file:?}");
        }
        Err(why) => eprintln!("SKIPPED the hugepage limit check: {why}"),
    }

    // Log rotation as kubelet does it: rename, then ReopenContainerLog.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    e.rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: one_id.clone(),
    })
    .await
    .expect("ReopenContainerLog");
    std::fs::write(sync.path().join("go"), "").expect("go");
    wait_for(&log, "after");
    let contents =
        |p: &Path| -> Vec<String> { log_lines(p).into_iter().map(|l| l.content).collect() };
    assert_eq!(contents(&rotated), vec!["before".to_string()]);
    assert_eq!(contents(&log), vec!["after".to_string()]);
    // A container that does not run has no log to reopen.
    let err =
        e.rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: three_id.clone(),
        })
        .await
        .expect_err("not running");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A long line reaches the log in 16 KiB partial chunks.
    let long = e.container(
        "long",
        &[
            "sh",
            "-c",
            "head -c 40000 /dev/zero | tr '\\0' a; echo; echo short",
        ],
        &[],
    );
    let (st, lines) = e.run_to_end(&pod, long).await;
    assert_eq!(st.exit_code, 0);
    let shape: Vec<(&str, usize)> = lines
        .iter()
        .map(|l| (l.tag.as_str(), l.content.len()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("P", 16384),
            ("P", 16384),
            ("F", 40000 - 2 * 16384),
            ("F", 5)
        ]
    );
    assert!(lines.iter().all(|l| l.stream == "stdout"));

    for p in [&pod, &other_pod] {
        stop(&mut e.rt, p).await;
        remove(&mut e.rt, p).await;
    }
    for id in [&one_id, &two_id, &three_id] {
        e.assert_gone(id, &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_ref_and_the_default_cgroup_parent() {
    let parent = format!("yonggi-test-default-{:08x}", rand::random::<u32>());
    let mut e = env_with(&format!("[cgroup]\ndefault_parent = \"/{parent}\"\n")).await;
    let _leftovers = Leftovers::of(&e.daemon);
    // A pod with no cgroup parent: its containers go under the default.
    let mut config = config("noparent");
    config.log_directory = e.logs.path().join("noparent").display().to_string();
    e.pod_names.push("noparent".into());
    let pod = run(&mut e.rt, config).await.expect("RunPodSandbox");

    let image = e
        .daemon
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: e.image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("image");
    let digest = image.repo_digests.first().expect("a repo digest").clone();
    let repo = e.image.rsplit_once(':').expect("tag").0.to_string();
    assert!(digest.starts_with(&format!("{repo}@sha256:")), "{digest}");

    // By tag, with the name the user wrote.
    let mut a = e.container("a", &["sleep", "600"], &[]);
    a.image.as_mut().expect("image").user_specified_image = "busybox-as-written".into();
    let a_id = e.create(&pod, a).await.expect("create a");
    e.start(&a_id).await;
    // By image ID.
    let mut b = e.container("b", &["sleep", "600"], &[]);
    b.image.as_mut().expect("image").image = image.id.clone();
    let b_id = e.create(&pod, b).await.expect("create b");
    e.start(&b_id).await;

    let st = e.status(&a_id).await.status.expect("status");
    let spec = st.image.as_ref().expect("image spec");
    assert_eq!(spec.image, e.image);
    assert_eq!(spec.user_specified_image, "busybox-as-written");
    assert_eq!(st.image_ref, digest);
    assert_eq!(st.image_id, image.id);
    let st = e.status(&b_id).await.status.expect("status");
    assert_eq!(st.image.as_ref().expect("image spec").image, image.id);
    assert_eq!(st.image_ref, digest);
    let listed =
        e.rt.list_containers(cri::ListContainersRequest { filter: None })
            .await
            .expect("list")
            .into_inner()
            .containers;
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|c| c.image_ref == digest && c.image_id == image.id)
    );

    // Both live under the configured default parent, which goes with the
    // last of them.
    let pid = ctr_info(&e.status(&a_id).await)["pid"]
        .as_i64()
        .expect("pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        cgroups
            .lines()
            .all(|l| l.contains(&format!(":/{parent}/{a_id}")) || l.contains("systemd")),
        "{cgroups}"
    );
    let cgroup_root = Path::new("/sys/fs/cgroup");
    e.remove(&a_id).await;
    assert!(
        find_dir(cgroup_root, &parent, 3),
        "the parent is still used"
    );
    e.remove(&b_id).await;
    assert!(
        !find_dir(cgroup_root, &parent, 3),
        "the default cgroup parent {parent} is left after its last container"
    );
    e.assert_gone(&a_id, &[pid]);
    e.assert_gone(&b_id, &[]);

    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
    assert!(!find_dir(cgroup_root, &parent, 3));
}
