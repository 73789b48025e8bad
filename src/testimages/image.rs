//! Image configs, manifests and indexes, as the bytes a registry serves.
//!
//! JSON objects are serialized with sorted keys (serde_json's default map)
//! and carry a fixed creation time, so a manifest's digest depends only on
//! what went into it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::layer::{Compression, Layer};
use super::{Blob, Error, media};

/// The creation time written into every config and history entry.
pub const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// Which family of media types the manifest and its descriptors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2 (and manifest list for indexes).
    Docker,
}

/// The platform an image is for, as written in its config and in an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    pub fn linux_amd64() -> Platform {
        Platform::linux("amd64")
    }

    /// `linux/arm64/v8`, as multi-arch images usually name it.
    pub fn linux_arm64() -> Platform {
        Platform {
            variant: Some("v8".into()),
            ..Platform::linux("arm64")
        }
    }

    fn to_json(&self) -> Value {
        let mut platform = json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
}

/// The PATH every test image sets.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Default for ImageConfig {
    fn default() -> ImageConfig {
        ImageConfig {
            user: String::new(),
            env: vec![DEFAULT_PATH.into()],
            entrypoint: Vec::new(),
            cmd: vec!["sh".into()],
            working_dir: "/".into(),
            labels: BTreeMap::new(),
            exposed_ports: Vec::new(),
            stop_signal: None,
        }
    }
}

impl ImageConfig {
    fn to_json(&self) -> Value {
        let mut config = json!({
            "User": self.user,
            "Env": self.env,
            "Cmd": self.cmd,
            "WorkingDir": self.working_dir,
        });
        if !self.entrypoint.is_empty() {
            config["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.labels.is_empty() {
            config["Labels"] = json!(self.labels);
        }
        if !self.exposed_ports.is_empty() {
            let ports: BTreeMap<&str, Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.as_str(), json!({})))
                .collect();
            config["ExposedPorts"] = json!(ports);
        }
        if let Some(signal) = &self.stop_signal {
            config["StopSignal"] = json!(signal);
        }
        config
    }
}

/// Layers plus a config, turned into an [`Image`] by [`ImageBuilder::build`].
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    pub config: ImageConfig,
    pub platform: Platform,
    pub format: ManifestFormat,
    /// Each layer with the `created_by` text of its history entry.
    pub layers: Vec<(Layer, String)>,
    pub annotations: BTreeMap<String, String>,
}

impl ImageBuilder {
    pub fn new(config: ImageConfig) -> ImageBuilder {
        ImageBuilder {
            config,
            platform: Platform::linux_amd64(),
            format: ManifestFormat::Oci,
            layers: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    pub fn layer(mut self, layer: Layer, created_by: &str) -> ImageBuilder {
        self.layers.push((layer, created_by.into()));
        self
    }

    pub fn platform(mut self, platform: Platform) -> ImageBuilder {
        self.platform = platform;
        self
    }

    pub fn format(mut self, format: ManifestFormat) -> ImageBuilder {
        self.format = format;
        self
    }

    pub fn build(&self) -> Result<Image, Error> {
        let (config_type, manifest_type) = match self.format {
            ManifestFormat::Oci => (media::OCI_CONFIG, media::OCI_MANIFEST),
            ManifestFormat::Docker => (media::DOCKER_CONFIG, media::DOCKER_MANIFEST),
        };
        let mut config = json!({
            "created": FIXED_CREATED,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": self.config.to_json(),
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|(l, _)| l.diff_id.as_str()).collect::<Vec<_>>(),
            },
            "history": self.layers.iter().map(|(_, by)| json!({
                "created": FIXED_CREATED,
                "created_by": by,
            })).collect::<Vec<_>>(),
        });
        if let Some(variant) = &self.platform.variant {
            config["variant"] = json!(variant);
        }
        let config = Blob::new(config_type, to_vec(&config, "an image config")?);

        let mut layer_descriptors = Vec::new();
        for (layer, _) in &self.layers {
            let media_type = match self.format {
                ManifestFormat::Oci => layer.blob.media_type,
                ManifestFormat::Docker => match layer.compression {
                    Compression::Gzip => media::DOCKER_LAYER_GZIP,
                    Compression::None => media::DOCKER_LAYER_TAR,
                    Compression::Zstd => return Err(Error::NoDockerMediaType(layer.compression)),
                },
            };
            layer_descriptors.push(descriptor(media_type, &layer.blob));
        }
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": descriptor(config_type, &config),
            "layers": layer_descriptors,
        });
        if !self.annotations.is_empty() {
            manifest["annotations"] = json!(self.annotations);
        }
        let manifest = Blob::new(manifest_type, to_vec(&manifest, "a manifest")?);
        Ok(Image {
            manifest,
            config,
            layers: self.layers.iter().map(|(l, _)| l.clone()).collect(),
            platform: self.platform.clone(),
        })
    }
}

/// A built image: every blob a registry needs to serve it.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
    pub platform: Platform,
}

impl Image {
    /// The image ID as CRI reports it: the digest of the config.
    pub fn id(&self) -> &str {
        &self.config.digest
    }

    /// The parsed config JSON, for tests that check what they pulled.
    pub fn config_json(&self) -> Value {
        serde_json::from_slice(&self.config.bytes).unwrap_or(Value::Null)
    }
}

/// A multi-platform index over images built separately.
#[derive(Debug, Clone)]
pub struct Index {
    pub manifest: Blob,
    pub images: Vec<Image>,
}

impl Index {
    pub fn build(images: Vec<Image>, format: ManifestFormat) -> Result<Index, Error> {
        let media_type = match format {
            ManifestFormat::Oci => media::OCI_INDEX,
            ManifestFormat::Docker => media::DOCKER_MANIFEST_LIST,
        };
        let manifests: Vec<Value> = images
            .iter()
            .map(|image| {
                let mut d = descriptor(image.manifest.media_type, &image.manifest);
                d["platform"] = image.platform.to_json();
                d
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        });
        Ok(Index {
            manifest: Blob::new(media_type, to_vec(&index, "an index")?),
            images,
        })
    }
}

/// What a tag points at.
#[derive(Debug, Clone)]
pub enum Artifact {
    Image(Image),
    Index(Index),
}

impl Artifact {
    /// The manifest (or index) the tag resolves to.
    pub fn manifest(&self) -> &Blob {
        match self {
            Artifact::Image(image) => &image.manifest,
            Artifact::Index(index) => &index.manifest,
        }
    }

    /// Every image in it: one for an image, one per platform for an index.
    pub fn images(&self) -> Vec<&Image> {
        match self {
            Artifact::Image(image) => vec![image],
            Artifact::Index(index) => index.images.iter().collect(),
        }
    }
}

fn descriptor(media_type: &str, blob: &Blob) -> Value {
    json!({"mediaType": media_type, "digest": blob.digest, "size": blob.size()})
}

fn to_vec(value: &Value, what: &'static str) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|source| Error::Json { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testimages::layer::LayerBuilder;

    fn small_layer() -> Layer {
        let mut b = LayerBuilder::new();
        b.file("hello", 0o644, b"hi".to_vec());
        b.build(Compression::Gzip).expect("layer")
    }

    #[test]
    fn manifest_points_at_config_and_layers() {
        let config = ImageConfig {
            user: "1003:1004".into(),
            ..ImageConfig::default()
        };
        let layer = small_layer();
        let image = ImageBuilder::new(config)
            .layer(layer.clone(), "add hello")
            .build()
            .expect("image");
        let manifest: Value = serde_json::from_slice(&image.manifest.bytes).expect("json");
        assert_eq!(manifest["mediaType"], media::OCI_MANIFEST);
        assert_eq!(manifest["config"]["digest"], image.config.digest.as_str());
        assert_eq!(manifest["config"]["size"], image.config.size());
        assert_eq!(manifest["layers"][0]["digest"], layer.blob.digest.as_str());
        assert_eq!(manifest["layers"][0]["mediaType"], media::OCI_LAYER_GZIP);
        let config = image.config_json();
        assert_eq!(config["config"]["User"], "1003:1004");
        assert_eq!(config["config"]["Cmd"], json!(["sh"]));
        assert_eq!(config["rootfs"]["diff_ids"][0], layer.diff_id.as_str());
        assert_eq!(config["architecture"], "amd64");
    }

    #[test]
    fn docker_format_uses_docker_media_types_and_refuses_zstd() {
        let image = ImageBuilder::new(ImageConfig::default())
            .layer(small_layer(), "add hello")
            .format(ManifestFormat::Docker)
            .build()
            .expect("image");
        let manifest: Value = serde_json::from_slice(&image.manifest.bytes).expect("json");
        assert_eq!(manifest["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], media::DOCKER_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);

        let mut b = LayerBuilder::new();
        b.file("z", 0o644, b"z".to_vec());
        let zstd = b.build(Compression::Zstd).expect("layer");
        let err = ImageBuilder::new(ImageConfig::default())
            .layer(zstd, "zstd")
            .format(ManifestFormat::Docker)
            .build();
        assert!(matches!(
            err,
            Err(Error::NoDockerMediaType(Compression::Zstd))
        ));
    }

    #[test]
    fn index_lists_each_platform() {
        let amd = ImageBuilder::new(ImageConfig::default())
            .layer(small_layer(), "l")
            .build()
            .expect("amd64");
        let arm = ImageBuilder::new(ImageConfig::default())
            .layer(small_layer(), "l")
            .platform(Platform::linux_arm64())
            .build()
            .expect("arm64");
        assert_ne!(amd.manifest.digest, arm.manifest.digest);
        let index =
            Index::build(vec![amd.clone(), arm.clone()], ManifestFormat::Oci).expect("index");
        let json: Value = serde_json::from_slice(&index.manifest.bytes).expect("json");
        assert_eq!(json["manifests"][0]["digest"], amd.manifest.digest.as_str());
        assert_eq!(json["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(json["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(json["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(arm.config_json()["architecture"], "arm64");
    }
}
