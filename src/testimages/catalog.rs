//! The named test images, and publishing them.
//!
//! [`Set::All`] is what the integration tests pull (repositories under
//! `yonggi-test/`); [`Set::Critest`] the same content under the repository
//! paths critest asks for; [`Set::Bench`] the large pull-benchmark image,
//! built only when asked for; [`Set::Hostile`] images whose last layer tries
//! to escape the rootfs.

use std::sync::Mutex;

use super::Error;
use super::image::{Artifact, Image, ImageBuilder, ImageConfig, Index, ManifestFormat, Platform};
use super::layer::{Compression, Entry, Kind, Layer, LayerBuilder};
use super::push::Pusher;
use super::rootfs::busybox_layer;

/// Repository names of [`Set::All`], each tagged `latest` unless said.
pub mod names {
    /// The busybox base: Cmd `sh`, User empty, WorkingDir `/`.
    pub const BUSYBOX: &str = "yonggi-test/busybox";
    /// The same rootfs with Docker schema 2 media types.
    pub const BUSYBOX_DOCKER: &str = "yonggi-test/busybox-docker";
    /// The same rootfs as a zstd layer.
    pub const BUSYBOX_ZSTD: &str = "yonggi-test/busybox-zstd";
    /// The same rootfs as an uncompressed layer.
    pub const BUSYBOX_UNCOMPRESSED: &str = "yonggi-test/busybox-uncompressed";
    /// USER `1002`.
    pub const USER_UID: &str = "yonggi-test/user-uid";
    /// USER `www-data`.
    pub const USER_USERNAME: &str = "yonggi-test/user-username";
    /// USER `1003:1004`.
    pub const USER_UID_GROUP: &str = "yonggi-test/user-uid-group";
    /// USER `www-data:1004`.
    pub const USER_USERNAME_GROUP: &str = "yonggi-test/user-username-group";
    /// USER `1000`: `default-user` (uid 1000, gid 1000), also a member of
    /// `group-defined-in-image` (gid 50000).
    pub const PREDEFINED_GROUP: &str = "yonggi-test/predefined-group";
    /// Three distinct images; each adds an empty file `/<name>` (`/image-1`...).
    pub const IMAGE_1: &str = "yonggi-test/image-1";
    pub const IMAGE_2: &str = "yonggi-test/image-2";
    pub const IMAGE_3: &str = "yonggi-test/image-3";
    /// One image (with the file `/same-image`) under the tags `1`, `2`, `3`.
    pub const TAGS: &str = "yonggi-test/tags";
    /// busybox httpd on port 80 serving `/www/index.html` ([`super::WEB_INDEX`]).
    pub const HTTPD: &str = "yonggi-test/httpd";
    /// An OCI index: linux/amd64 and linux/arm64/v8. `/etc/yonggi-arch`
    /// holds `amd64\n` or `arm64\n`; the arm64 image reuses the amd64
    /// binaries, so only its config and marker tell them apart.
    pub const MULTIARCH: &str = "yonggi-test/multiarch";
    /// The same as a Docker manifest list.
    pub const MULTIARCH_DOCKER: &str = "yonggi-test/multiarch-docker";
    /// Whiteouts, an opaque directory and hard links; see [`super::layers_image`]
    /// for the resulting tree.
    pub const LAYERS: &str = "yonggi-test/layers";
    /// Mount targets that are symlinks out of the rootfs (`escape-root ->
    /// /`, `escape-up -> ../../../../../../../..`, `escape-tmp ->
    /// ../../../../../../../../tmp`): a bind onto them must stay inside.
    pub const SYMLINKED_MOUNTS: &str = "yonggi-test/symlinked-mounts";
    /// [`super::Set::Bench`] only: ~100 MB of incompressible data in 5
    /// layers on top of busybox.
    pub const BIG: &str = "yonggi-test/big";
    /// [`super::Set::Hostile`]: busybox plus a last layer with `../escape`.
    pub const HOSTILE_DOTDOT: &str = "yonggi-test/hostile-dotdot";
    /// An entry with the absolute path `/abs-escape`.
    pub const HOSTILE_ABSOLUTE: &str = "yonggi-test/hostile-absolute";
    /// A symlink `evil -> /tmp`, then a file `evil/symlink-escape` through it.
    pub const HOSTILE_SYMLINK: &str = "yonggi-test/hostile-symlink";
    /// A hard link `passwd-link` to `/etc/passwd` (absolute target).
    pub const HOSTILE_HARDLINK: &str = "yonggi-test/hostile-hardlink";
}

/// The body of the web server's `/index.html`.
pub const WEB_INDEX: &str = "yonggi test web server\n";

/// Which images to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    All,
    Critest,
    Bench,
    Hostile,
}

/// An artifact and where it goes.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub repository: String,
    pub tags: Vec<String>,
    pub artifact: Artifact,
}

/// What was pushed: the digest the tags point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub repository: String,
    pub tags: Vec<String>,
    pub digest: String,
}

/// The images of a set, built once per process (the bench set is not
/// cached: it is large and built only when asked for).
pub fn images(set: Set) -> Result<Vec<TestImage>, Error> {
    static CACHE: Mutex<Vec<(Set, Vec<TestImage>)>> = Mutex::new(Vec::new());
    let build: fn() -> Result<Vec<TestImage>, Error> = match set {
        Set::Bench => return bench_images(),
        Set::All => all_images,
        Set::Critest => super::critest::images,
        Set::Hostile => hostile_images,
    };
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, images)) = cache.iter().find(|(s, _)| *s == set) {
        return Ok(images.clone());
    }
    let images = build()?;
    cache.push((set, images.clone()));
    Ok(images)
}

/// The image of `set` published as `repository` (with `tag` among its
/// tags), e.g. to compare what a test pulled with what was pushed:
/// `find(Set::All, names::BUSYBOX, "latest")?.artifact.images()[0].id()`.
pub fn find(set: Set, repository: &str, tag: &str) -> Result<Option<TestImage>, Error> {
    Ok(images(set)?
        .into_iter()
        .find(|i| i.repository == repository && i.tags.iter().any(|t| t == tag)))
}

/// Pushes each image with its tags.
pub async fn publish(pusher: &Pusher, images: &[TestImage]) -> Result<Vec<Published>, Error> {
    let mut published = Vec::new();
    for image in images {
        let tags: Vec<&str> = image.tags.iter().map(String::as_str).collect();
        let digest = pusher
            .push(&image.repository, &tags, &image.artifact)
            .await?;
        published.push(Published {
            repository: image.repository.clone(),
            tags: image.tags.clone(),
            digest,
        });
    }
    Ok(published)
}

/// busybox (gzip, OCI) with `config` and `extra` layers on top.
pub fn busybox_image(config: ImageConfig, extra: Vec<(Layer, &str)>) -> Result<Image, Error> {
    let mut builder = ImageBuilder::new(config).layer(
        busybox_layer(Compression::Gzip)?,
        "yonggi-testimages: busybox base from the host",
    );
    for (layer, created_by) in extra {
        builder = builder.layer(layer, created_by);
    }
    builder.build()
}

/// A layer with one file, `path`, holding `contents`.
pub fn file_layer(path: &str, contents: &[u8]) -> Result<Layer, Error> {
    let mut layer = LayerBuilder::new();
    layer.file(path, 0o644, contents.to_vec());
    layer.build(Compression::Gzip)
}

pub(crate) fn user(user: &str) -> ImageConfig {
    ImageConfig {
        user: user.into(),
        ..ImageConfig::default()
    }
}

pub(crate) fn test_image(repository: &str, tags: &[&str], image: Image) -> TestImage {
    TestImage {
        repository: repository.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        artifact: Artifact::Image(image),
    }
}

fn all_images() -> Result<Vec<TestImage>, Error> {
    use names::*;
    let mut out = vec![
        test_image(
            BUSYBOX,
            &["latest"],
            busybox_image(ImageConfig::default(), vec![])?,
        ),
        test_image(
            BUSYBOX_DOCKER,
            &["latest"],
            ImageBuilder::new(ImageConfig::default())
                .layer(busybox_layer(Compression::Gzip)?, "busybox base")
                .format(ManifestFormat::Docker)
                .build()?,
        ),
        test_image(
            BUSYBOX_ZSTD,
            &["latest"],
            ImageBuilder::new(ImageConfig::default())
                .layer(busybox_layer(Compression::Zstd)?, "busybox base, zstd")
                .build()?,
        ),
        test_image(
            BUSYBOX_UNCOMPRESSED,
            &["latest"],
            ImageBuilder::new(ImageConfig::default())
                .layer(
                    busybox_layer(Compression::None)?,
                    "busybox base, uncompressed",
                )
                .build()?,
        ),
        test_image(USER_UID, &["latest"], busybox_image(user("1002"), vec![])?),
        test_image(
            USER_USERNAME,
            &["latest"],
            busybox_image(user("www-data"), vec![])?,
        ),
        test_image(
            USER_UID_GROUP,
            &["latest"],
            busybox_image(user("1003:1004"), vec![])?,
        ),
        test_image(
            USER_USERNAME_GROUP,
            &["latest"],
            busybox_image(user("www-data:1004"), vec![])?,
        ),
        test_image(PREDEFINED_GROUP, &["latest"], predefined_group_image()?),
    ];
    for (repository, file) in [
        (IMAGE_1, "image-1"),
        (IMAGE_2, "image-2"),
        (IMAGE_3, "image-3"),
    ] {
        out.push(test_image(repository, &["latest"], marker_image(file)?));
    }
    out.push(test_image(
        TAGS,
        &["1", "2", "3"],
        marker_image("same-image")?,
    ));
    out.push(test_image(HTTPD, &["latest"], web_server_image(80)?));
    out.push(TestImage {
        repository: MULTIARCH.into(),
        tags: vec!["latest".into()],
        artifact: Artifact::Index(multiarch_index(ManifestFormat::Oci)?),
    });
    out.push(TestImage {
        repository: MULTIARCH_DOCKER.into(),
        tags: vec!["latest".into()],
        artifact: Artifact::Index(multiarch_index(ManifestFormat::Docker)?),
    });
    out.push(test_image(LAYERS, &["latest"], layers_image()?));
    out.push(test_image(
        SYMLINKED_MOUNTS,
        &["latest"],
        symlinked_mounts_image()?,
    ));
    Ok(out)
}

/// busybox plus the symlinks of [`names::SYMLINKED_MOUNTS`].
pub fn symlinked_mounts_image() -> Result<Image, Error> {
    let mut layer = LayerBuilder::new();
    layer
        .symlink("escape-root", "/")
        .symlink("escape-up", "../../../../../../../..")
        .symlink("escape-tmp", "../../../../../../../../tmp");
    busybox_image(
        ImageConfig::default(),
        vec![(
            layer.build(Compression::Gzip)?,
            "yonggi-testimages: symlinks out of the rootfs",
        )],
    )
}

/// busybox plus an empty file `/<name>`, like critest's test-image-*.
pub fn marker_image(name: &str) -> Result<Image, Error> {
    busybox_image(
        ImageConfig::default(),
        vec![(
            file_layer(name, b"")?,
            "yonggi-testimages: add the marker file",
        )],
    )
}

/// critest's test-image-predefined-group: `adduser -u 1000 -D default-user`,
/// `addgroup -g 50000 group-defined-in-image`, `addgroup default-user
/// group-defined-in-image`, `USER 1000`.
pub fn predefined_group_image() -> Result<Image, Error> {
    let passwd = format!(
        "{}default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n",
        super::rootfs::PASSWD
    );
    let group = format!(
        "{}default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
        super::rootfs::GROUP
    );
    let mut layer = LayerBuilder::new();
    layer
        .file("etc/passwd", 0o644, passwd)
        .file("etc/group", 0o644, group)
        .entry(Entry::new("home/default-user", Kind::Dir, 0o755).owned(1000, 1000));
    busybox_image(
        user("1000"),
        vec![(
            layer.build(Compression::Gzip)?,
            "yonggi-testimages: add default-user",
        )],
    )
}

/// busybox `httpd` in the foreground on `port`, serving `/www`. It first
/// says so on stderr: critest looks for `httpd` in the log.
pub fn web_server_image(port: u16) -> Result<Image, Error> {
    let mut layer = LayerBuilder::new();
    layer
        .dir("www", 0o755)
        .file("www/index.html", 0o644, WEB_INDEX);
    let config = ImageConfig {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo 'httpd: serving /www on port {port}' >&2; exec httpd -f -p {port} -h /www"
            ),
        ],
        exposed_ports: vec![format!("{port}/tcp")],
        ..ImageConfig::default()
    };
    busybox_image(
        config,
        vec![(
            layer.build(Compression::Gzip)?,
            "yonggi-testimages: add /www",
        )],
    )
}

/// amd64 and arm64 images in one index. Both carry the host's (amd64)
/// busybox; they differ in their config's platform and `/etc/yonggi-arch`.
pub fn multiarch_index(format: ManifestFormat) -> Result<Index, Error> {
    let mut images = Vec::new();
    for platform in [Platform::linux_amd64(), Platform::linux_arm64()] {
        let marker = file_layer(
            "etc/yonggi-arch",
            format!("{}\n", platform.architecture).as_bytes(),
        )?;
        let image = ImageBuilder::new(ImageConfig::default())
            .layer(busybox_layer(Compression::Gzip)?, "busybox base")
            .layer(marker, "yonggi-testimages: architecture marker")
            .platform(platform)
            .format(format)
            .build()?;
        images.push(image);
    }
    Index::build(images, format)
}

/// Three layers over busybox exercising deletions and hard links. The tree
/// under `/data` after unpacking all of them:
///
/// | path | content |
/// |---|---|
/// | `/data/keep` | `keep\n` |
/// | `/data/hard-1`, `/data/hard-2` | `hard\n`, one inode (same layer) |
/// | `/data/added`, `/data/added-link` | `added\n`, one inode (same layer) |
/// | `/data/opaque-dir/new` | `new\n`, the only entry of that dir |
/// | `/data/recreated` | `second\n` (deleted in layer 3, re-added in 4) |
///
/// Gone: `/data/remove-me` (whiteout), `/data/dir-to-remove` and its
/// content (whiteout of a directory), `/data/opaque-dir/old-1` and `old-2`
/// (opaque marker). No `.wh.` file may remain.
pub fn layers_image() -> Result<Image, Error> {
    let mut second = LayerBuilder::new();
    second
        .dir("data", 0o755)
        .file("data/keep", 0o644, "keep\n")
        .file("data/remove-me", 0o644, "bye\n")
        .dir("data/dir-to-remove", 0o755)
        .file("data/dir-to-remove/inner", 0o644, "inner\n")
        .dir("data/opaque-dir", 0o755)
        .file("data/opaque-dir/old-1", 0o644, "old\n")
        .file("data/opaque-dir/old-2", 0o644, "old\n")
        .file("data/hard-1", 0o644, "hard\n")
        .hard_link("data/hard-2", "data/hard-1")
        .file("data/recreated", 0o644, "first\n");
    let mut third = LayerBuilder::new();
    third
        .dir("data", 0o755)
        .whiteout("data/remove-me")
        .whiteout("data/dir-to-remove")
        .whiteout("data/recreated")
        .dir("data/opaque-dir", 0o755)
        .opaque("data/opaque-dir")
        .file("data/opaque-dir/new", 0o644, "new\n")
        .file("data/added", 0o644, "added\n")
        .hard_link("data/added-link", "data/added");
    let mut fourth = LayerBuilder::new();
    fourth
        .dir("data", 0o755)
        .file("data/recreated", 0o644, "second\n");
    busybox_image(
        ImageConfig::default(),
        vec![
            (second.build(Compression::Gzip)?, "add /data"),
            (
                third.build(Compression::Gzip)?,
                "delete and hard-link in /data",
            ),
            (
                fourth.build(Compression::Gzip)?,
                "re-create /data/recreated",
            ),
        ],
    )
}

/// busybox plus five layers of ~20 MB of incompressible, deterministic
/// bytes each: the pull benchmark's image.
pub fn big_image() -> Result<Image, Error> {
    const LAYER_BYTES: usize = 20 * 1024 * 1024;
    let mut extra = Vec::new();
    for n in 0..5u64 {
        let mut data = vec![0u8; LAYER_BYTES];
        fill_pseudo_random(&mut data, n + 1);
        let mut layer = LayerBuilder::new();
        layer
            .dir("bench", 0o755)
            .file(&format!("bench/blob-{n}"), 0o644, data);
        extra.push((
            layer.build(Compression::Gzip)?,
            "yonggi-testimages: bench data",
        ));
    }
    busybox_image(ImageConfig::default(), extra)
}

/// splitmix64: fast and the same everywhere, which a seeded crate RNG does
/// not promise across versions.
fn fill_pseudo_random(buf: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in buf.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

fn bench_images() -> Result<Vec<TestImage>, Error> {
    Ok(vec![test_image(names::BIG, &["latest"], big_image()?)])
}

/// busybox plus one hostile layer.
pub fn hostile_image(layer: &LayerBuilder) -> Result<Image, Error> {
    busybox_image(
        ImageConfig::default(),
        vec![(
            layer.build(Compression::Gzip)?,
            "yonggi-testimages: hostile layer",
        )],
    )
}

fn hostile_images() -> Result<Vec<TestImage>, Error> {
    use names::*;
    let mut dotdot = LayerBuilder::new();
    dotdot.file("../escape", 0o644, "escaped\n");
    let mut absolute = LayerBuilder::new();
    absolute.file("/abs-escape", 0o644, "escaped\n");
    let mut symlink = LayerBuilder::new();
    symlink
        .symlink("evil", "/tmp")
        .file("evil/symlink-escape", 0o644, "escaped\n");
    let mut hardlink = LayerBuilder::new();
    hardlink.hard_link("passwd-link", "/etc/passwd");
    Ok(vec![
        test_image(HOSTILE_DOTDOT, &["latest"], hostile_image(&dotdot)?),
        test_image(HOSTILE_ABSOLUTE, &["latest"], hostile_image(&absolute)?),
        test_image(HOSTILE_SYMLINK, &["latest"], hostile_image(&symlink)?),
        test_image(HOSTILE_HARDLINK, &["latest"], hostile_image(&hardlink)?),
    ])
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn bench_data_is_deterministic_and_incompressible() {
        let mut one = vec![0u8; 64 * 1024];
        let mut again = vec![0u8; 64 * 1024];
        let mut other = vec![0u8; 64 * 1024];
        fill_pseudo_random(&mut one, 1);
        fill_pseudo_random(&mut again, 1);
        fill_pseudo_random(&mut other, 2);
        assert_eq!(one, again);
        assert_ne!(one, other);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&one).expect("gzip");
        let compressed = gz.finish().expect("gzip");
        assert!(
            compressed.len() >= one.len(),
            "{} < {}",
            compressed.len(),
            one.len()
        );
    }

    #[test]
    fn repository_and_tag_pairs_are_unique_in_each_set() {
        for set in [Set::All, Set::Critest, Set::Hostile] {
            let mut seen = std::collections::BTreeSet::new();
            for image in images(set).expect("set") {
                for tag in &image.tags {
                    assert!(
                        seen.insert(format!("{}:{tag}", image.repository)),
                        "{}:{tag} twice in {set:?}",
                        image.repository
                    );
                }
            }
        }
        let busybox = find(Set::All, names::BUSYBOX, "latest")
            .expect("set")
            .expect("busybox");
        assert_eq!(busybox.artifact.images()[0].layers.len(), 1);
        assert!(
            find(Set::All, names::BUSYBOX, "no-such-tag")
                .expect("set")
                .is_none()
        );
    }

    #[test]
    fn multiarch_images_differ_in_config_and_marker_only() {
        let index = multiarch_index(ManifestFormat::Oci).expect("index");
        let [amd, arm] = [&index.images[0], &index.images[1]];
        assert_eq!(
            amd.layers[0].blob.digest, arm.layers[0].blob.digest,
            "shared base"
        );
        assert_ne!(
            amd.layers[1].blob.digest, arm.layers[1].blob.digest,
            "marker"
        );
        assert_eq!(amd.config_json()["architecture"], "amd64");
        assert_eq!(arm.config_json()["architecture"], "arm64");
        assert_eq!(arm.config_json()["variant"], "v8");
    }
}
