//! The registry fixture serves every test image: each manifest fetched
//! through the distribution API by tag and by digest, with the media type,
//! config and blob digests and sizes the images were built with.

mod support;

use std::collections::HashSet;
use std::io::Read;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::Registry;
use yonggi::testimages::catalog::{self, names};
use yonggi::testimages::critest;
use yonggi::testimages::{Set, media};

/// Every manifest type a puller would accept.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Fetcher {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
    /// Blobs already checked, so shared base layers are read once.
    verified: HashSet<String>,
}

impl Fetcher {
    fn new(registry: &Registry) -> Fetcher {
        Fetcher {
            http: reqwest::Client::new(),
            base: registry.url(),
            auth: registry
                .credentials()
                .map(|(u, p)| (u.to_string(), p.to_string())),
            verified: HashSet::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Accept", ACCEPT);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.expect("GET from the registry")
    }

    async fn head(&self, path: &str) -> reqwest::Response {
        let mut request = self.http.head(format!("{}{path}", self.base));
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.expect("HEAD from the registry")
    }

    /// GET a manifest; checks status, digest header and that the bytes hash
    /// to the digest. Returns (content type, digest, body).
    async fn manifest(&self, repository: &str, reference: &str) -> (String, String, Vec<u8>) {
        let response = self
            .get(&format!("/v2/{repository}/manifests/{reference}"))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{repository}:{reference}"
        );
        let content_type = header(&response, "content-type");
        let digest = header(&response, "docker-content-digest");
        let body = response.bytes().await.expect("manifest body").to_vec();
        assert_eq!(
            sha256(&body),
            digest,
            "{repository}:{reference} digest header"
        );
        (content_type, digest, body)
    }

    /// GET a blob and check it against its descriptor.
    async fn blob(&mut self, repository: &str, descriptor: &Value) -> Vec<u8> {
        let digest = descriptor["digest"].as_str().expect("descriptor digest");
        let response = self.get(&format!("/v2/{repository}/blobs/{digest}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{repository}@{digest}");
        let body = response.bytes().await.expect("blob body").to_vec();
        assert_eq!(sha256(&body), digest, "{repository} blob digest");
        assert_eq!(
            Some(body.len() as u64),
            descriptor["size"].as_u64(),
            "{repository}@{digest} size"
        );
        body
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} header"))
        .to_str()
        .expect("ascii header")
        .to_string()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn uncompressed(media_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match media_type {
        media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => {
            flate2::read::GzDecoder::new(blob)
                .read_to_end(&mut out)
                .expect("gunzip layer");
        }
        media::OCI_LAYER_ZSTD => out = zstd::decode_all(blob).expect("unzstd layer"),
        media::OCI_LAYER_TAR | media::DOCKER_LAYER_TAR => out = blob.to_vec(),
        other => panic!("unexpected layer media type {other}"),
    }
    out
}

/// What the config must say, written out here rather than taken from the
/// builder, so a builder bug cannot hide.
fn expected_user(repository: &str) -> &'static str {
    match repository {
        names::USER_UID => "1002",
        names::USER_USERNAME => "www-data",
        names::USER_UID_GROUP => "1003:1004",
        names::USER_USERNAME_GROUP => "www-data:1004",
        names::PREDEFINED_GROUP => "1000",
        r if r.ends_with("test-image-user-uid") => "1002",
        r if r.ends_with("test-image-user-username") => "www-data",
        r if r.ends_with("test-image-user-uid-group") => "1003:1004",
        r if r.ends_with("test-image-user-username-group") => "www-data:1004",
        r if r.ends_with("test-image-predefined-group") => "1000",
        _ => "",
    }
}

/// Checks one image manifest and everything it points at; returns the
/// config JSON.
async fn check_image(
    fetcher: &mut Fetcher,
    repository: &str,
    manifest: &[u8],
    content_type: &str,
) -> Value {
    let manifest: Value = serde_json::from_slice(manifest).expect("manifest json");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], content_type);
    let docker = content_type == media::DOCKER_MANIFEST;
    let config_type = if docker {
        media::DOCKER_CONFIG
    } else {
        media::OCI_CONFIG
    };
    assert_eq!(manifest["config"]["mediaType"], config_type, "{repository}");
    let config_bytes = fetcher.blob(repository, &manifest["config"]).await;
    let config: Value = serde_json::from_slice(&config_bytes).expect("config json");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Env"], json!([PATH]), "{repository} Env");
    assert_eq!(
        config["config"]["WorkingDir"], "/",
        "{repository} WorkingDir"
    );
    assert_eq!(
        config["config"]["User"],
        expected_user(repository),
        "{repository} User"
    );
    assert!(
        config["config"]["Cmd"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{repository} Cmd"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(
        layers.len(),
        diff_ids.len(),
        "{repository}: one diff_id per layer"
    );
    assert_eq!(
        config["history"].as_array().map(Vec::len),
        Some(layers.len()),
        "{repository} history"
    );
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let media_type = layer["mediaType"].as_str().expect("layer media type");
        if docker {
            assert!(
                media_type.starts_with("application/vnd.docker."),
                "{media_type}"
            );
        } else {
            assert!(
                media_type.starts_with("application/vnd.oci.image.layer.v1.tar"),
                "{media_type}"
            );
        }
        let digest = layer["digest"].as_str().expect("digest").to_string();
        if fetcher.verified.contains(&digest) {
            // Still served from this repository? A HEAD is enough.
            let response = fetcher
                .head(&format!("/v2/{repository}/blobs/{digest}"))
                .await;
            assert_eq!(response.status(), StatusCode::OK, "{repository}@{digest}");
            assert_eq!(
                header(&response, "content-length"),
                layer["size"].to_string()
            );
            continue;
        }
        let blob = fetcher.blob(repository, layer).await;
        let tar = uncompressed(media_type, &blob);
        assert_eq!(
            Some(sha256(&tar).as_str()),
            diff_id.as_str(),
            "{repository} diff_id"
        );
        fetcher.verified.insert(digest);
    }
    config
}

async fn check_published(fetcher: &mut Fetcher, images: &[yonggi::testimages::TestImage]) {
    for image in images {
        let expected = image.artifact.manifest();
        for tag in &image.tags {
            let (content_type, digest, body) = fetcher.manifest(&image.repository, tag).await;
            assert_eq!(digest, expected.digest, "{}:{tag}", image.repository);
            assert_eq!(
                content_type, expected.media_type,
                "{}:{tag}",
                image.repository
            );
            assert_eq!(body, expected.bytes.as_ref());
        }
        let (content_type, digest, body) =
            fetcher.manifest(&image.repository, &expected.digest).await;
        assert_eq!(digest, expected.digest);
        match content_type.as_str() {
            media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => {
                let index: Value = serde_json::from_slice(&body).expect("index json");
                assert_eq!(index["mediaType"], content_type.as_str());
                let mut arches = Vec::new();
                for entry in index["manifests"].as_array().expect("manifests") {
                    let child = entry["digest"].as_str().expect("digest");
                    let (child_type, _, child_body) =
                        fetcher.manifest(&image.repository, child).await;
                    assert_eq!(entry["mediaType"], child_type.as_str());
                    assert_eq!(entry["size"].as_u64(), Some(child_body.len() as u64));
                    let config =
                        check_image(fetcher, &image.repository, &child_body, &child_type).await;
                    let arch = entry["platform"]["architecture"].as_str().expect("arch");
                    assert_eq!(config["architecture"], arch);
                    assert_eq!(entry["platform"]["os"], "linux");
                    arches.push(arch.to_string());
                }
                assert_eq!(arches, ["amd64", "arm64"], "{}", image.repository);
            }
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => {
                let config = check_image(fetcher, &image.repository, &body, &content_type).await;
                assert_eq!(config["architecture"], "amd64");
            }
            other => panic!("{}: unexpected manifest type {other}", image.repository),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_serves_every_test_image() {
    let registry = Registry::start();
    let mut images = catalog::images(Set::All).expect("build the test images");
    images.extend(catalog::images(Set::Critest).expect("build the critest images"));
    images.extend(catalog::images(Set::Hostile).expect("build the hostile images"));
    let published = registry.push(&images).await;
    assert_eq!(published.len(), images.len());

    let mut fetcher = Fetcher::new(&registry);
    check_published(&mut fetcher, &images).await;

    // The variants the tests rely on, fetched by name.
    let (t, _, _) = fetcher.manifest(names::BUSYBOX_DOCKER, "latest").await;
    assert_eq!(t, media::DOCKER_MANIFEST);
    let (t, _, _) = fetcher.manifest(names::MULTIARCH, "latest").await;
    assert_eq!(t, media::OCI_INDEX);
    let (t, _, _) = fetcher.manifest(names::MULTIARCH_DOCKER, "latest").await;
    assert_eq!(t, media::DOCKER_MANIFEST_LIST);
    let (_, busybox, _) = fetcher
        .manifest(critest::BUSYBOX, critest::BUSYBOX_TAG)
        .await;
    let (_, ours, _) = fetcher.manifest(names::BUSYBOX, "latest").await;
    assert_eq!(busybox, ours, "critest's busybox is our busybox");

    // Three distinct images, one image under three tags.
    let mut distinct = HashSet::new();
    for repo in [names::IMAGE_1, names::IMAGE_2, names::IMAGE_3] {
        distinct.insert(fetcher.manifest(repo, "latest").await.1);
    }
    assert_eq!(distinct.len(), 3);
    let mut same = HashSet::new();
    for tag in ["1", "2", "3"] {
        same.insert(fetcher.manifest(names::TAGS, tag).await.1);
    }
    assert_eq!(same.len(), 1);

    // Unknown names are 404, as pullers expect.
    let missing = fetcher
        .get("/v2/yonggi-test/no-such-image/manifests/latest")
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_twice_is_idempotent() {
    let registry = Registry::start();
    let first = registry.push_test_images().await;
    let second = registry.push_test_images().await;
    assert_eq!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_needs_credentials() {
    let registry = Registry::start_with_htpasswd("tester", "s3cret");
    let anonymous = reqwest::Client::new();
    let v2 = format!("{}/v2/", registry.url());
    let response = anonymous.get(&v2).send().await.expect("GET /v2/");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&response, "www-authenticate").starts_with("Basic "),
        "a Basic challenge"
    );
    let wrong = anonymous
        .get(&v2)
        .basic_auth("tester", Some("wrong"))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = anonymous
        .get(&v2)
        .basic_auth("tester", Some("s3cret"))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(right.status(), StatusCode::OK);

    // Pushing without credentials fails; with them it works.
    let busybox: Vec<_> = catalog::images(Set::All)
        .expect("images")
        .into_iter()
        .filter(|i| i.repository == names::BUSYBOX)
        .collect();
    let open =
        yonggi::testimages::Pusher::new(&registry.host(), yonggi::testimages::Auth::Anonymous);
    assert!(catalog::publish(&open, &busybox).await.is_err());
    registry.push(&busybox).await;

    let manifest = format!("{}/v2/{}/manifests/latest", registry.url(), names::BUSYBOX);
    let denied = anonymous
        .get(&manifest)
        .header("Accept", ACCEPT)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let mut fetcher = Fetcher::new(&registry);
    check_published(&mut fetcher, &busybox).await;
}

#[test]
fn mirror_config_is_valid_yonggi_config() {
    let registry = Registry::start();
    let text = format!(
        "{}{}",
        registry.mirror_config("registry.k8s.io"),
        registry.mirror_config("gcr.io")
    );
    let config = yonggi::config::Config::parse(&text, std::path::Path::new("mirrors.toml"))
        .expect("the mirror snippet parses");
    for host in ["registry.k8s.io", "gcr.io"] {
        let entry = &config.registries[host];
        assert_eq!(entry.mirrors, vec![registry.url()]);
        assert!(entry.mirrors_replace_upstream);
    }
}
