//! The registry documents a pull reads: OCI image indexes and Docker manifest
//! lists, OCI and Docker schema-2 manifests, and the image config. Only the
//! fields a runtime uses are decoded; unknown ones are ignored, as the specs
//! require. Platform selection from an index lives here too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::ImageError;
use super::reference::Digest;

/// Manifests and configs larger than this are refused before they are read
/// into memory (real ones are a few KiB).
pub(crate) const MAX_DOCUMENT: u64 = 4 << 20;

pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// What a manifest endpoint returned.
#[derive(Debug)]
pub(crate) enum Fetched {
    Index(Vec<Descriptor>),
    Manifest(Manifest),
}

#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// A descriptor whose digest has been validated.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub digest: Digest,
    pub size: u64,
}

fn bad(what: &str, reason: impl Into<String>) -> ImageError {
    ImageError::BadManifest {
        what: what.to_string(),
        reason: reason.into(),
    }
}

impl Blob {
    fn of(descriptor: &Descriptor, what: &str) -> Result<Blob, ImageError> {
        let digest = Digest::parse(&descriptor.digest).ok_or_else(|| {
            bad(
                what,
                format!("descriptor digest {:?} is not sha256", descriptor.digest),
            )
        })?;
        Ok(Blob {
            digest,
            size: descriptor.size,
        })
    }
}

pub(crate) fn parse(body: &[u8], what: &str) -> Result<Fetched, ImageError> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| bad(what, format!("not a manifest: {e}")))?;
    if doc.schema_version != Some(2) {
        return Err(bad(
            what,
            format!(
                "schemaVersion {:?} is not supported (only 2)",
                doc.schema_version
            ),
        ));
    }
    match (doc.manifests, doc.config, doc.layers) {
        (Some(manifests), None, _) => Ok(Fetched::Index(manifests)),
        (None, Some(config), layers) => {
            let config = Blob::of(&config, what)?;
            if config.size > MAX_DOCUMENT {
                return Err(bad(what, "config is larger than 4 MiB"));
            }
            let layers = layers
                .unwrap_or_default()
                .iter()
                .map(|l| Blob::of(l, what))
                .collect::<Result<_, _>>()?;
            Ok(Fetched::Manifest(Manifest { config, layers }))
        }
        _ => Err(bad(what, "neither an index nor an image manifest")),
    }
}

/// `os/arch[/variant]` as configured.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Wanted {
    pub(crate) fn parse(text: &str) -> Wanted {
        let mut parts = text.split('/');
        Wanted {
            os: parts.next().unwrap_or("linux").to_string(),
            arch: parts.next().unwrap_or("amd64").to_string(),
            variant: parts.next().map(str::to_string),
        }
    }
}

/// The index entry for `wanted`: os and architecture must match; among those,
/// the configured variant wins, else an entry without a variant, else the first.
pub(crate) fn select<'a>(entries: &'a [Descriptor], wanted: &Wanted) -> Option<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == wanted.os && p.architecture == wanted.arch)
        })
        .collect();
    let variant = |d: &&Descriptor| d.platform.as_ref().and_then(|p| p.variant.clone());
    candidates
        .iter()
        .find(|d| wanted.variant.is_some() && variant(d) == wanted.variant)
        .or_else(|| candidates.iter().find(|d| variant(d).is_none()))
        .or_else(|| candidates.first())
        .copied()
}

/// The image config, with what containers need from it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The `config` object of an image config: what a container of the image runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default)]
    pub user: String,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: String,
    #[serde(rename = "ExposedPorts", default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Volumes", default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: String,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

pub(crate) fn parse_config(
    body: &[u8],
    digest: &Digest,
) -> Result<(RunConfig, Vec<Digest>), ImageError> {
    let what = digest.to_string();
    let file: ConfigFile = serde_json::from_slice(body)
        .map_err(|e| bad(&what, format!("not an image config: {e}")))?;
    let diff_ids = file
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).ok_or_else(|| bad(&what, format!("diff ID {d:?} is not sha256"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((file.config.unwrap_or_default(), diff_ids))
}

/// chain(0) = diff(0); chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub(crate) fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, n: char) -> Descriptor {
        Descriptor {
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.to_string(),
                os: os.to_string(),
                variant: variant.map(str::to_string),
            }),
        }
    }

    #[test]
    fn selects_the_configured_platform() {
        let entries = vec![
            entry("linux", "arm", Some("v7"), '1'),
            entry("linux", "arm64", Some("v8"), '2'),
            entry("linux", "amd64", None, '3'),
            entry("unknown", "unknown", None, '4'),
        ];
        let pick = |w: &str| select(&entries, &Wanted::parse(w)).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(entries[2].digest.clone()));
        assert_eq!(pick("linux/arm64"), Some(entries[1].digest.clone()));
        assert_eq!(pick("linux/arm/v7"), Some(entries[0].digest.clone()));
        assert_eq!(pick("linux/s390x"), None);
    }

    #[test]
    fn parses_index_manifest_and_refuses_schema1() {
        let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":3,"platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert!(matches!(parse(index, "x"), Ok(Fetched::Index(m)) if m.len() == 1));
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":5},"layers":[]}"#;
        assert!(matches!(parse(manifest, "x"), Ok(Fetched::Manifest(m)) if m.config.size == 5));
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, "x").is_err());
        assert!(parse(b"not json", "x").is_err());
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"digest":"md5:00","size":5},"layers":[]}"#;
        assert!(parse(bad_digest, "x").is_err());
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn config_keeps_what_containers_need() {
        let body = br#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000","Env":["PATH=/bin"],"Entrypoint":["/bin/sh"],"Cmd":["-c","true"],"WorkingDir":"/w","ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}},"StopSignal":"SIGINT","Labels":{"a":"b"}},"rootfs":{"type":"layers","diff_ids":["sha256:3333333333333333333333333333333333333333333333333333333333333333"]}}"#;
        let (run, diffs) = parse_config(body, &Digest::of(body)).expect("config");
        assert_eq!(run.user, "1000:1000");
        assert_eq!(run.stop_signal, "SIGINT");
        assert_eq!(run.working_dir, "/w");
        assert_eq!(diffs.len(), 1);
    }
}
