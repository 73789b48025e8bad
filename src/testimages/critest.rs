//! critest's images (cri-tools v1.32.0), under the repository paths it
//! asks for once registry mirrors map `registry.k8s.io` and `gcr.io` to the
//! local registry; see /work/critest-images.md for what each spec checks.

use super::Error;
use super::catalog::{
    TestImage, WEB_INDEX, busybox_image, marker_image, predefined_group_image, test_image, user,
    web_server_image,
};
use super::image::{Image, ImageConfig};
use super::layer::{Compression, LayerBuilder};

/// `registry.k8s.io/e2e-test-images/busybox:1.29-2`: our busybox.
pub const BUSYBOX: &str = "e2e-test-images/busybox";
pub const BUSYBOX_TAG: &str = "1.29-2";
/// busybox httpd on port 80 that logs `httpd` first.
pub const HTTPD: &str = "e2e-test-images/httpd";
pub const HTTPD_TAG: &str = "2.4.39-4";
/// [`nginx_image`].
pub const NGINX: &str = "e2e-test-images/nginx";
pub const NGINX_TAG: &str = "1.14-2";
/// [`nonewprivs_image`].
pub const NONEWPRIVS: &str = "e2e-test-images/nonewprivs";
pub const NONEWPRIVS_TAG: &str = "1.3";
/// `gcr.io/k8s-staging-cri-tools/...`: test-image-*, hostnet-nginx-amd64.
pub const CRI_TOOLS: &str = "k8s-staging-cri-tools";

/// critest's hard-coded `nginx:1.14-2`, played by busybox httpd behind
/// [`super::programs::NGINX`]; CMD `nginx -g 'daemon off;'` as upstream.
pub fn nginx_image() -> Result<Image, Error> {
    let mut layer = LayerBuilder::new();
    layer
        .file("usr/sbin/nginx", 0o755, super::programs::NGINX)
        .dir("usr/share", 0o755)
        .dir("usr/share/nginx", 0o755)
        .dir("usr/share/nginx/html", 0o755)
        .file("usr/share/nginx/html/index.html", 0o644, WEB_INDEX);
    let config = ImageConfig {
        cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
        exposed_ports: vec!["80/tcp".into()],
        stop_signal: Some("SIGTERM".into()),
        ..ImageConfig::default()
    };
    busybox_image(
        config,
        vec![(
            layer.build(Compression::Gzip)?,
            "yonggi-testimages: nginx stand-in",
        )],
    )
}

/// critest's `nonewprivs:1.3`: `/usr/local/bin/nnp`, setuid root, printing
/// `Effective uid: N`; CMD `nnp`.
pub fn nonewprivs_image() -> Result<Image, Error> {
    let mut layer = LayerBuilder::new();
    layer
        .dir("usr/local", 0o755)
        .dir("usr/local/bin", 0o755)
        .file("usr/local/bin/nnp", 0o4755, super::programs::nnp_binary()?);
    let config = ImageConfig {
        cmd: vec!["nnp".into()],
        ..ImageConfig::default()
    };
    busybox_image(
        config,
        vec![(
            layer.build(Compression::Gzip)?,
            "yonggi-testimages: setuid nnp",
        )],
    )
}

pub(crate) fn images() -> Result<Vec<TestImage>, Error> {
    let tools = |name: &str| format!("{CRI_TOOLS}/{name}");
    let mut out = vec![
        test_image(
            BUSYBOX,
            &[BUSYBOX_TAG],
            busybox_image(ImageConfig::default(), vec![])?,
        ),
        test_image(HTTPD, &[HTTPD_TAG], web_server_image(80)?),
        test_image(NGINX, &[NGINX_TAG], nginx_image()?),
        test_image(NONEWPRIVS, &[NONEWPRIVS_TAG], nonewprivs_image()?),
        test_image(
            &tools("hostnet-nginx-amd64"),
            &["latest"],
            web_server_image(12003)?,
        ),
        test_image(
            &tools("test-image-predefined-group"),
            &["latest"],
            predefined_group_image()?,
        ),
        test_image(&tools("test-image-tag"), &["test"], marker_image("test")?),
        test_image(&tools("test-image-tag"), &["all"], marker_image("all")?),
        test_image(
            &tools("test-image-latest"),
            &["latest"],
            marker_image("test-image-latest")?,
        ),
        // critest pulls this one by the upstream digest, which cannot be
        // rebuilt here (skip "with digest"); pushed by tag for completeness.
        test_image(
            &tools("test-image-digest"),
            &["latest"],
            marker_image("test-image-digest")?,
        ),
        test_image(
            &tools("test-image-tags"),
            &["1", "2", "3"],
            marker_image("same-image")?,
        ),
        test_image(
            &tools("test-image-user-uid"),
            &["latest"],
            busybox_image(user("1002"), vec![])?,
        ),
        test_image(
            &tools("test-image-user-username"),
            &["latest"],
            busybox_image(user("www-data"), vec![])?,
        ),
        test_image(
            &tools("test-image-user-uid-group"),
            &["latest"],
            busybox_image(user("1003:1004"), vec![])?,
        ),
        test_image(
            &tools("test-image-user-username-group"),
            &["latest"],
            busybox_image(user("www-data:1004"), vec![])?,
        ),
    ];
    for n in 1..=3 {
        let name = format!("test-image-{n}");
        out.push(test_image(&tools(&name), &["latest"], marker_image(&name)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Read;

    use super::*;
    use crate::testimages::catalog::{Set, images as set_images};
    use crate::testimages::image::Artifact;

    fn by_name(name: &str) -> TestImage {
        let (repository, tag) = name.rsplit_once(':').expect("name:tag");
        set_images(Set::Critest)
            .expect("critest set")
            .into_iter()
            .find(|i| i.repository == repository && i.tags.iter().any(|t| t == tag))
            .unwrap_or_else(|| panic!("{name} in the critest set"))
    }

    fn image(name: &str) -> Image {
        match by_name(name).artifact {
            Artifact::Image(image) => image,
            Artifact::Index(_) => panic!("{name} is an index"),
        }
    }

    /// (path, mode, uid, content) of every entry in the image's last layer.
    fn last_layer(image: &Image) -> Vec<(String, u32, u64, Vec<u8>)> {
        let layer = image.layers.last().expect("a layer");
        let gz = flate2::read::GzDecoder::new(layer.blob.bytes.as_ref());
        let mut archive = tar::Archive::new(gz);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mode = entry.header().mode().expect("mode");
            let uid = entry.header().uid().expect("uid");
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            out.push((path, mode, uid, data));
        }
        out
    }

    #[test]
    fn every_name_critest_pulls_is_there() {
        // From cri-tools v1.32.0 (critest-images.md, table 1); test-image-digest
        // is pulled by an upstream digest and cannot match.
        let wanted = [
            "e2e-test-images/busybox:1.29-2",
            "e2e-test-images/httpd:2.4.39-4",
            "e2e-test-images/nginx:1.14-2",
            "e2e-test-images/nonewprivs:1.3",
            "k8s-staging-cri-tools/hostnet-nginx-amd64:latest",
            "k8s-staging-cri-tools/test-image-predefined-group:latest",
            "k8s-staging-cri-tools/test-image-tag:test",
            "k8s-staging-cri-tools/test-image-latest:latest",
            "k8s-staging-cri-tools/test-image-tag:all",
            "k8s-staging-cri-tools/test-image-1:latest",
            "k8s-staging-cri-tools/test-image-2:latest",
            "k8s-staging-cri-tools/test-image-3:latest",
            "k8s-staging-cri-tools/test-image-tags:1",
            "k8s-staging-cri-tools/test-image-tags:2",
            "k8s-staging-cri-tools/test-image-tags:3",
            "k8s-staging-cri-tools/test-image-user-uid:latest",
            "k8s-staging-cri-tools/test-image-user-username:latest",
            "k8s-staging-cri-tools/test-image-user-uid-group:latest",
            "k8s-staging-cri-tools/test-image-user-username-group:latest",
        ];
        for name in wanted {
            by_name(name);
        }
        let ids: BTreeSet<String> = ["1", "2", "3"]
            .iter()
            .map(|n| {
                image(&format!("k8s-staging-cri-tools/test-image-{n}:latest"))
                    .id()
                    .to_string()
            })
            .collect();
        assert_eq!(ids.len(), 3, "three distinct image ids");
        let tags = by_name("k8s-staging-cri-tools/test-image-tags:1");
        assert_eq!(tags.tags, ["1", "2", "3"], "one image under three tags");
    }

    #[test]
    fn users_are_as_critest_expects() {
        for (name, user) in [
            ("test-image-user-uid", "1002"),
            ("test-image-user-username", "www-data"),
            ("test-image-user-uid-group", "1003:1004"),
            ("test-image-user-username-group", "www-data:1004"),
            ("test-image-predefined-group", "1000"),
        ] {
            let config = image(&format!("{CRI_TOOLS}/{name}:latest")).config_json();
            assert_eq!(config["config"]["User"], user, "{name}");
        }
        let files = last_layer(&image(&format!(
            "{CRI_TOOLS}/test-image-predefined-group:latest"
        )));
        let group = files
            .iter()
            .find(|f| f.0 == "etc/group")
            .expect("etc/group");
        let group = String::from_utf8_lossy(&group.3);
        assert!(
            group.contains("\ngroup-defined-in-image:x:50000:default-user\n"),
            "{group}"
        );
        assert!(group.contains("\ndefault-user:x:1000:\n"), "{group}");
        let passwd = files
            .iter()
            .find(|f| f.0 == "etc/passwd")
            .expect("etc/passwd");
        assert!(String::from_utf8_lossy(&passwd.3).contains("\ndefault-user:x:1000:1000:"));
    }

    #[test]
    fn nonewprivs_has_a_setuid_root_nnp() {
        let image = image("e2e-test-images/nonewprivs:1.3");
        assert_eq!(
            image.config_json()["config"]["Cmd"],
            serde_json::json!(["nnp"])
        );
        let files = last_layer(&image);
        let nnp = files
            .iter()
            .find(|f| f.0 == "usr/local/bin/nnp")
            .expect("nnp");
        assert_eq!((nnp.1, nnp.2), (0o4755, 0), "setuid root");
        assert!(nnp.3.starts_with(b"\x7fELF"));
    }

    #[test]
    fn web_servers_run_busybox_httpd() {
        let nginx = image("e2e-test-images/nginx:1.14-2");
        assert_eq!(
            nginx.config_json()["config"]["Cmd"],
            serde_json::json!(["nginx", "-g", "daemon off;"])
        );
        let files = last_layer(&nginx);
        assert!(
            files
                .iter()
                .any(|f| f.0 == "usr/sbin/nginx" && f.1 == 0o755)
        );
        for (name, port) in [
            ("e2e-test-images/httpd:2.4.39-4", "80"),
            ("k8s-staging-cri-tools/hostnet-nginx-amd64:latest", "12003"),
        ] {
            let cmd = image(name).config_json()["config"]["Cmd"].to_string();
            assert!(
                cmd.contains(&format!("httpd -f -p {port}")),
                "{name}: {cmd}"
            );
            assert!(cmd.contains("echo 'httpd:"), "{name} logs httpd: {cmd}");
        }
    }
}
