//! ImageService against a real registry: pulls by every reference form,
//! platform selection, tags, status, list, remove, auth, mirrors, fs info.

mod support;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use support::{Daemon, DaemonOptions, Registry};
use tonic::transport::Channel;
use yonggi::testimages::catalog::names;

type Client = ImageServiceClient<Channel>;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(client: &mut Client, image: &str) -> Result<String, tonic::Status> {
    pull_with(client, image, None).await
}

async fn pull_with(
    client: &mut Client,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    client
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(client: &mut Client, image: &str) -> Option<cri::Image> {
    client
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
}

async fn verbose_info(client: &mut Client, image: &str) -> serde_json::Value {
    let reply = client
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .expect("ImageStatus verbose")
        .into_inner();
    serde_json::from_str(reply.info.get("info").expect("verbose info")).expect("info is JSON")
}

async fn list(client: &mut Client) -> Vec<cri::Image> {
    client
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn remove(client: &mut Client, image: &str) {
    client
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .expect("RemoveImage");
}

fn digest_of(published: &[yonggi::testimages::Published], repository: &str) -> String {
    published
        .iter()
        .find(|p| p.repository == repository)
        .unwrap_or_else(|| panic!("{repository} was published"))
        .digest
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_digest_and_without_tag() {
    support::daemon::require_root();
    let registry = Registry::start();
    let published = registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let name = format!("{}/{}", registry.host(), names::BUSYBOX);
    let manifest = digest_of(&published, names::BUSYBOX);

    let id = pull(&mut client, &name).await.expect("pull without a tag");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let by_tag = pull(&mut client, &format!("{name}:latest"))
        .await
        .expect("pull by tag");
    assert_eq!(by_tag, id);
    let by_digest = pull(&mut client, &format!("{name}@{manifest}"))
        .await
        .expect("pull by digest");
    assert_eq!(by_digest, id);

    let image = status(&mut client, &id)
        .await
        .expect("pulled image has a status");
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, vec![format!("{name}:latest")]);
    assert_eq!(image.repo_digests, vec![format!("{name}@{manifest}")]);
    assert!(image.size > 0);
    // The config is the image ID's preimage.
    let info = verbose_info(&mut client, &id).await;
    assert_eq!(info["imageSpec"]["os"], "linux");
    let dirs = info["layerDirs"].as_array().expect("layer dirs");
    assert!(!dirs.is_empty());
    let base = std::path::Path::new(dirs[0].as_str().expect("dir"));
    assert!(
        base.join("bin/busybox").is_file(),
        "layer unpacked into {}",
        base.display()
    );
    assert!(
        base.starts_with(daemon.dir.path()),
        "layers live under the root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_and_compression_format_pulls() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    for repository in [
        names::BUSYBOX_DOCKER,
        names::BUSYBOX_ZSTD,
        names::BUSYBOX_UNCOMPRESSED,
    ] {
        // A fresh root each time: the layers share a diff ID and would be reused.
        let daemon = Daemon::start();
        let mut client = daemon.images().await;
        let id = pull(&mut client, &registry.reference(repository, "latest"))
            .await
            .unwrap_or_else(|e| panic!("pull {repository}: {e}"));
        let info = verbose_info(&mut client, &id).await;
        let dirs = info["layerDirs"].as_array().expect("layer dirs");
        let base = std::path::Path::new(dirs[0].as_str().expect("dir"));
        assert!(base.join("bin/busybox").is_file(), "{repository} unpacked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_picks_amd64() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    for repository in [names::MULTIARCH, names::MULTIARCH_DOCKER] {
        let id = pull(&mut client, &registry.reference(repository, "latest"))
            .await
            .expect("pull index");
        let info = verbose_info(&mut client, &id).await;
        assert_eq!(info["imageSpec"]["architecture"], "amd64", "{repository}");
        let dirs: Vec<String> = info["layerDirs"]
            .as_array()
            .expect("dirs")
            .iter()
            .map(|d| d.as_str().expect("dir").to_string())
            .collect();
        let marker = dirs
            .iter()
            .rev()
            .map(|d| std::path::Path::new(d).join("etc/yonggi-arch"))
            .find(|p| p.exists())
            .expect("the arch marker is in a layer");
        assert_eq!(std::fs::read_to_string(marker).expect("marker"), "amd64\n");
        // The repo digest is the index's: what the reference pointed at.
        let image = status(&mut client, &id).await.expect("status");
        assert!(
            image.repo_digests[0].starts_with(&format!("{}/{repository}@sha256:", registry.host())),
            "{:?}",
            image.repo_digests
        );
    }

    let arm = Daemon::start_with(DaemonOptions {
        extra_config: "[image]\nplatform = \"linux/arm64/v8\"\n".to_string(),
    });
    let mut client = arm.images().await;
    let id = pull(&mut client, &registry.reference(names::MULTIARCH, "latest"))
        .await
        .expect("pull arm64");
    let info = verbose_info(&mut client, &id).await;
    assert_eq!(info["imageSpec"]["architecture"], "arm64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tags_are_one_image_and_three_images_are_three() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let mut ids = Vec::new();
    for tag in ["1", "2", "3"] {
        ids.push(
            pull(&mut client, &registry.reference(names::TAGS, tag))
                .await
                .expect("pull tag"),
        );
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let images = list(&mut client).await;
    assert_eq!(images.len(), 1);
    let mut tags = images[0].repo_tags.clone();
    tags.sort();
    let name = format!("{}/{}", registry.host(), names::TAGS);
    assert_eq!(
        tags,
        vec![
            format!("{name}:1"),
            format!("{name}:2"),
            format!("{name}:3")
        ]
    );

    for repository in [names::IMAGE_1, names::IMAGE_2, names::IMAGE_3] {
        pull(&mut client, &registry.reference(repository, "latest"))
            .await
            .expect("pull");
    }
    assert_eq!(list(&mut client).await.len(), 4);

    // The filter names one image by any reference form.
    let filtered = client
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: spec(&registry.reference(names::IMAGE_2, "latest")),
            }),
        })
        .await
        .expect("ListImages filtered")
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    assert_eq!(
        filtered[0].repo_tags,
        vec![registry.reference(names::IMAGE_2, "latest")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_by_every_reference_form() {
    support::daemon::require_root();
    let registry = Registry::start();
    let published = registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let name = format!("{}/{}", registry.host(), names::USER_UID);
    let id = pull(&mut client, &format!("{name}:latest"))
        .await
        .expect("pull");
    let hex = id.trim_start_matches("sha256:").to_string();
    let manifest = digest_of(&published, names::USER_UID);
    for form in [
        name.clone(),
        format!("{name}:latest"),
        format!("{name}@{manifest}"),
        id.clone(),
        hex.clone(),
        hex[..12].to_string(),
    ] {
        let image = status(&mut client, &form)
            .await
            .unwrap_or_else(|| panic!("status of {form}"));
        assert_eq!(image.id, id, "{form}");
        assert_eq!(image.uid.as_ref().map(|u| u.value), Some(1002), "USER 1002");
        assert!(image.username.is_empty());
    }
    assert!(
        status(&mut client, &format!("{name}:other"))
            .await
            .is_none()
    );
    assert!(status(&mut client, "never/pulled").await.is_none());
    assert!(status(&mut client, &"f".repeat(64)).await.is_none());

    let id = pull(
        &mut client,
        &registry.reference(names::USER_USERNAME, "latest"),
    )
    .await
    .expect("pull");
    let image = status(&mut client, &id).await.expect("status");
    assert_eq!(image.username, "www-data");
    assert!(image.uid.is_none());
    let id = pull(
        &mut client,
        &registry.reference(names::USER_UID_GROUP, "latest"),
    )
    .await
    .expect("pull");
    assert_eq!(
        status(&mut client, &id)
            .await
            .expect("status")
            .uid
            .map(|u| u.value),
        Some(1003)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_by_tag_then_again() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let reference = registry.reference(names::IMAGE_1, "latest");
    let id = pull(&mut client, &reference).await.expect("pull");
    let layers = daemon.dir.path().join("root/images/layers");
    assert!(std::fs::read_dir(&layers).expect("layers").count() > 0);

    remove(&mut client, &reference).await;
    assert!(
        status(&mut client, &id).await.is_none(),
        "removed by tag, gone by ID"
    );
    assert!(list(&mut client).await.is_empty());
    assert_eq!(
        std::fs::read_dir(&layers).expect("layers").count(),
        0,
        "layers collected"
    );
    let blobs = daemon.dir.path().join("root/images/blobs/sha256");
    assert_eq!(
        std::fs::read_dir(&blobs).expect("blobs").count(),
        0,
        "blobs collected"
    );
    remove(&mut client, &reference).await;
    remove(&mut client, &id).await;

    // Removing one image keeps the layers another still uses.
    let a = pull(&mut client, &registry.reference(names::IMAGE_1, "latest"))
        .await
        .expect("pull");
    let b = pull(&mut client, &registry.reference(names::IMAGE_2, "latest"))
        .await
        .expect("pull");
    remove(&mut client, &a).await;
    let info = verbose_info(&mut client, &b).await;
    for dir in info["layerDirs"].as_array().expect("dirs") {
        assert!(
            std::path::Path::new(dir.as_str().expect("dir")).is_dir(),
            "{dir} kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_needs_the_auth_config() {
    support::daemon::require_root();
    let registry = Registry::start_with_htpasswd("kubelet", "s3cret");
    registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let reference = registry.reference(names::BUSYBOX, "latest");

    let err = pull(&mut client, &reference)
        .await
        .expect_err("no credentials");
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ),
        "{err:?}"
    );
    let err = pull_with(
        &mut client,
        &reference,
        Some(cri::AuthConfig {
            username: "kubelet".to_string(),
            password: "wrong".to_string(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("wrong password");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(list(&mut client).await.is_empty());

    let id = pull_with(
        &mut client,
        &reference,
        Some(cri::AuthConfig {
            username: "kubelet".to_string(),
            password: "s3cret".to_string(),
            ..Default::default()
        }),
    )
    .await
    .expect("pull with username/password");
    remove(&mut client, &id).await;
    use base64::Engine as _;
    pull_with(
        &mut client,
        &reference,
        Some(cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("kubelet:s3cret"),
            ..Default::default()
        }),
    )
    .await
    .expect("pull with the auth field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_serve_upstream_names() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    // A dead mirror first: the next one is tried. Upstream is never contacted.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let daemon = Daemon::start_with(DaemonOptions {
        extra_config: format!(
            "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:{dead_port}\", \"{}\"]\nmirrors_replace_upstream = true\n",
            registry.url()
        ),
    });
    let mut client = daemon.images().await;
    let upstream = format!("registry.k8s.io/{}:latest", names::BUSYBOX);
    let id = pull(&mut client, &upstream)
        .await
        .expect("pull through the mirror");
    let image = status(&mut client, &upstream)
        .await
        .expect("status by upstream name");
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, vec![upstream.clone()]);
    assert!(
        image.repo_digests[0].starts_with("registry.k8s.io/"),
        "{:?}",
        image.repo_digests
    );

    let err = pull(&mut client, "registry.k8s.io/not/there:1")
        .await
        .expect_err("absent");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        !err.message().contains("https://registry.k8s.io"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reference_is_invalid_argument() {
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    for bad in ["UPPER/case", "busybox@sha256:nothex", "a b", ""] {
        let err = pull(&mut client, bad).await.expect_err(bad);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        if !bad.is_empty() {
            assert!(err.message().contains(bad), "{}", err.message());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_fs_info_counts_the_store() {
    support::daemon::require_root();
    let registry = Registry::start();
    registry.push_test_images().await;
    let daemon = Daemon::start();
    let mut client = daemon.images().await;
    let usage = |reply: cri::ImageFsInfoResponse| -> (String, u64, u64) {
        let fs = &reply.image_filesystems[0];
        (
            fs.fs_id.as_ref().expect("fs id").mountpoint.clone(),
            fs.used_bytes.as_ref().expect("bytes").value,
            fs.inodes_used.as_ref().expect("inodes").value,
        )
    };
    let before = usage(
        client
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .expect("fs info")
            .into_inner(),
    );
    pull(&mut client, &registry.reference(names::BUSYBOX, "latest"))
        .await
        .expect("pull");
    let after = usage(
        client
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .expect("fs info")
            .into_inner(),
    );
    assert_eq!(
        before.0,
        daemon.dir.path().join("root/images").display().to_string()
    );
    assert!(
        after.1 > before.1 + 500_000,
        "busybox adds bytes: {before:?} → {after:?}"
    );
    assert!(after.2 > before.2 + 3, "and inodes: {before:?} → {after:?}");
}
