//! Pull safety against a real registry: hostile layers, tampered blobs,
//! deadlines, killed pulls, concurrent pulls, and the overlayfs view of
//! whiteouts and opaque directories.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use support::proxy::{Proxy, ProxyOptions};
use support::{Daemon, Registry};
use tonic::transport::Channel;
use yonggi::testimages::Set;
use yonggi::testimages::catalog::names;

type Client = ImageServiceClient<Channel>;

fn request(image: &str) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    }
}

async fn pull(client: &mut Client, image: &str) -> Result<String, tonic::Status> {
    client
        .pull_image(request(image))
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn list_len(client: &mut Client) -> usize {
    client
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .expect("ListImages")
        .into_inner()
        .images
        .len()
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn store(daemon: &Daemon) -> PathBuf {
    daemon.dir.path().join("root/images")
}

/// Waits (bounded) until the store holds no blob, layer or temp file.
async fn assert_store_empty(daemon: &Daemon) {
    let root = store(daemon);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<String> = ["blobs/sha256", "layers", "ingest", "trash"]
            .iter()
            .flat_map(|d| {
                entries(&root.join(d))
                    .into_iter()
                    .map(move |e| format!("{d}/{e}"))
            })
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_fail_and_leave_nothing() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_set(Set::Hostile).await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let outside = ["/tmp/symlink-escape", "/abs-escape"];
    for path in outside {
        assert!(!Path::new(path).exists(), "{path} exists before the test");
    }
    for (repository, entry) in [
        (names::HOSTILE_DOTDOT, "../escape"),
        (names::HOSTILE_ABSOLUTE, "/abs-escape"),
        (names::HOSTILE_SYMLINK, "evil/symlink-escape"),
        (names::HOSTILE_HARDLINK, "passwd-link"),
    ] {
        let err = pull(&mut client, &registry.reference(repository, "latest"))
            .await
            .expect_err(repository);
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{repository}: {err:?}"
        );
        assert!(
            err.message().contains(entry),
            "{repository}: names {entry}: {}",
            err.message()
        );
        assert_store_empty(&daemon).await;
    }
    for path in outside {
        assert!(!Path::new(path).exists(), "{path} was written");
    }
    let root = daemon.dir.path();
    for escaped in [
        root.join("root/images/escape"),
        root.join("root/images/ingest/escape"),
        root.join("root/escape"),
    ] {
        assert!(!escaped.exists(), "{} was written", escaped.display());
    }
    assert_eq!(list_len(&mut client).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blob_is_rejected() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let proxy = Proxy::start(
        &registry.host(),
        ProxyOptions {
            tamper_blobs: true,
            ..Default::default()
        },
    )
    .await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let err = pull(
        &mut client,
        &format!("{}/{}:latest", proxy.host(), names::BUSYBOX),
    )
    .await
    .expect_err("tampered content");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains("sha256:"),
        "names the blob: {}",
        err.message()
    );
    assert!(
        !proxy.blob_gets().is_empty(),
        "blobs went through the proxy"
    );
    assert_store_empty(&daemon).await;
    assert_eq!(list_len(&mut client).await, 0);
    pull(&mut client, &registry.reference(names::BUSYBOX, "latest"))
        .await
        .expect("the untampered registry works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_cancels_the_pull_and_commits_nothing() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let proxy = Proxy::start(
        &registry.host(),
        ProxyOptions {
            blob_delay: Some(Duration::from_millis(100)),
            ..Default::default()
        },
    )
    .await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let mut slow = tonic::Request::new(request(&format!(
        "{}/{}:latest",
        proxy.host(),
        names::BUSYBOX
    )));
    slow.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let err = client.pull_image(slow).await.expect_err("deadline");
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_store_empty(&daemon).await;
    assert_eq!(list_len(&mut client).await, 0);
    let id = pull(&mut client, &registry.reference(names::BUSYBOX, "latest"))
        .await
        .expect("the next pull succeeds");
    assert!(id.starts_with("sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pull_is_cleaned_at_start() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let proxy = Proxy::start(
        &registry.host(),
        ProxyOptions {
            blob_delay: Some(Duration::from_millis(50)),
            ..Default::default()
        },
    )
    .await;
    let mut daemon = Daemon::start();
    let reference = format!("{}/{}:latest", proxy.host(), names::BUSYBOX);
    let mut client = daemon.images().await;
    let pulling = tokio::spawn(async move { pull(&mut client, &reference).await });
    // Kill it while blob bytes are on their way into ingest/.
    let ingest = store(&daemon).join("ingest");
    let deadline = Instant::now() + Duration::from_secs(20);
    while entries(&ingest).is_empty() {
        assert!(Instant::now() < deadline, "the pull never started writing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    let _ = pulling.await;
    assert!(
        !entries(&ingest).is_empty(),
        "a killed pull leaves its temp files"
    );
    daemon.spawn();
    assert_store_empty(&daemon).await;
    let mut client = daemon.images().await;
    assert_eq!(list_len(&mut client).await, 0);
    pull(&mut client, &registry.reference(names::BUSYBOX, "latest"))
        .await
        .expect("pull after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let proxy = Proxy::start(&registry.host(), ProxyOptions::default()).await;
    let daemon = Daemon::start();
    let reference = format!("{}/{}:latest", proxy.host(), names::LAYERS);
    let mut pulls = Vec::new();
    for _ in 0..4 {
        let mut client = daemon.images().await;
        let reference = reference.clone();
        pulls.push(tokio::spawn(
            async move { pull(&mut client, &reference).await },
        ));
    }
    let mut ids = Vec::new();
    for p in pulls {
        ids.push(p.await.expect("join").expect("pull"));
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let gets = proxy.blob_gets();
    assert!(gets.len() >= 5, "config and 4 layers: {gets:?}");
    for (digest, count) in &gets {
        assert_eq!(*count, 1, "{digest} fetched {count} times: {gets:?}");
    }
    let mut client = daemon.images().await;
    assert_eq!(list_len(&mut client).await, 1);
}

/// Unmounts on drop, so a failed assertion does not leak a mount.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_and_opaque_dirs_give_the_merged_view_in_overlayfs() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let id = pull(&mut client, &registry.reference(names::LAYERS, "latest"))
        .await
        .expect("pull");
    let reply = client
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: id,
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&reply.info["info"]).expect("info");
    let mut lower: Vec<String> = info["layerDirs"]
        .as_array()
        .expect("dirs")
        .iter()
        .map(|d| d.as_str().expect("dir").to_string())
        .collect();
    assert_eq!(lower.len(), 4);
    lower.reverse(); // overlayfs lists the top layer first
    let target = tempfile::tempdir().expect("mount point");
    nix::mount::mount(
        Some("overlay"),
        target.path(),
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}", lower.join(":")).as_str()),
    )
    .expect("mount overlay");
    let _mounted = Mounted(target.path().to_path_buf());
    let data = target.path().join("data");
    let read = |name: &str| {
        std::fs::read_to_string(data.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(read("keep"), "keep\n");
    assert_eq!(read("hard-1"), "hard\n");
    assert_eq!(read("added"), "added\n");
    assert_eq!(read("recreated"), "second\n");
    assert_eq!(read("opaque-dir/new"), "new\n");
    use std::os::unix::fs::MetadataExt;
    let ino = |name: &str| std::fs::metadata(data.join(name)).expect(name).ino();
    assert_eq!(ino("hard-1"), ino("hard-2"));
    assert_eq!(ino("added"), ino("added-link"));
    let mut opaque = entries(&data.join("opaque-dir"));
    opaque.sort();
    assert_eq!(opaque, vec!["new"]);
    let mut top = entries(&data);
    top.sort();
    assert_eq!(
        top,
        vec![
            "added",
            "added-link",
            "hard-1",
            "hard-2",
            "keep",
            "opaque-dir",
            "recreated"
        ]
    );
    assert!(
        target.path().join("bin/busybox").exists(),
        "the base layer shows through"
    );
}
