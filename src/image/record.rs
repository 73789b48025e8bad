//! Image metadata as stored (`images` bucket, keyed by image ID) and the
//! lookup of an image by any reference form kubelet and crictl use.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::manifest::RunConfig;
use super::reference::{Digest, Reference, is_sha256_hex};

/// One image: the ID is the config digest; several tags may point at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// `registry/repo:tag`, by the names the image was pulled as (mirrors keep them).
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:<manifest or index digest>`.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Bytes of the manifest, config and compressed layers.
    pub size: u64,
    /// What a container of this image runs (USER, ENV, CMD, ...).
    #[serde(default)]
    pub config: RunConfig,
    /// Chain IDs of the layers, lowest first; each names a directory under `layers/`.
    pub chain_ids: Vec<String>,
    /// Every blob this image keeps: manifests, config, layers.
    pub blobs: Vec<String>,
    /// `<root>/images/layers`, filled in when the record is loaded.
    #[serde(skip)]
    pub(crate) layers_root: PathBuf,
}

impl Image {
    /// The unpacked layer directories, lowest first: the overlayfs lowerdirs
    /// of a container's rootfs (overlay lists them highest first).
    pub fn layer_dirs(&self) -> Vec<PathBuf> {
        self.chain_ids
            .iter()
            .filter_map(|c| Digest::parse(c))
            .map(|c| self.layers_root.join(c.hex()))
            .collect()
    }

    /// uid (numeric USER) or user name, as `ImageStatus` reports them.
    pub fn user(&self) -> (Option<i64>, String) {
        user_of(&self.config.user)
    }
}

/// Finds the image `query` names: a full ID (with or without `sha256:`), a
/// name with tag or digest (normalised: `busybox` means
/// `docker.io/library/busybox:latest`), or a unique ID prefix.
pub(crate) fn find<'a>(records: &'a [Image], query: &str) -> Option<&'a Image> {
    let query = query.trim();
    if query.is_empty() {
        return None;
    }
    let bare = query.strip_prefix("sha256:").unwrap_or(query);
    if is_sha256_hex(bare) {
        let id = format!("sha256:{bare}");
        if let Some(found) = records.iter().find(|r| r.id == id) {
            return Some(found);
        }
    }
    if let Ok(reference) = Reference::parse(query) {
        let found = match &reference.digest {
            Some(digest) => {
                let wanted = reference.with_digest(digest);
                records.iter().find(|r| r.repo_digests.contains(&wanted))
            }
            None => reference
                .tagged()
                .and_then(|tag| records.iter().find(|r| r.repo_tags.contains(&tag))),
        };
        if found.is_some() {
            return found;
        }
    }
    if !bare.is_empty()
        && bare.len() < 64
        && bare.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        let mut matches = records
            .iter()
            .filter(|r| r.id["sha256:".len().min(r.id.len())..].starts_with(bare));
        let first = matches.next();
        if matches.next().is_none() {
            return first;
        }
    }
    None
}

/// The user an image runs as, split as CRI reports it: a numeric USER (or
/// `uid:gid`) gives the uid, a name gives the username, an empty USER neither
/// (kubelet then treats it as the default, root), as containerd reports it.
pub(crate) fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: char, tags: &[&str], digests: &[&str]) -> Image {
        Image {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
            size: 1,
            config: RunConfig::default(),
            chain_ids: vec![],
            blobs: vec![],
            layers_root: PathBuf::new(),
        }
    }

    #[test]
    fn finds_by_every_reference_form() {
        let d = format!("sha256:{}", "d".repeat(64));
        let records = vec![
            record(
                'a',
                &[
                    "docker.io/library/busybox:latest",
                    "docker.io/library/busybox:1",
                ],
                &[&format!("docker.io/library/busybox@{d}")],
            ),
            record('b', &["127.0.0.1:5000/app:v1"], &[]),
            record('c', &[], &[]),
        ];
        let id_of = |q: &str| find(&records, q).map(|r| r.id.chars().nth(7).unwrap_or('?'));
        assert_eq!(id_of("busybox"), Some('a'));
        assert_eq!(id_of("busybox:1"), Some('a'));
        assert_eq!(id_of("docker.io/library/busybox:latest"), Some('a'));
        assert_eq!(id_of(&format!("busybox@{d}")), Some('a'));
        assert_eq!(id_of(&format!("sha256:{}", "b".repeat(64))), Some('b'));
        assert_eq!(id_of(&"c".repeat(64)), Some('c'));
        assert_eq!(id_of("ccc"), Some('c'), "unique ID prefix");
        assert_eq!(id_of("sha256:bb"), Some('b'), "prefix with algorithm");
        assert_eq!(id_of("127.0.0.1:5000/app:v1"), Some('b'));
        assert_eq!(id_of("127.0.0.1:5000/app"), None, "latest was never pulled");
        assert_eq!(id_of("busybox:2"), None);
        assert_eq!(id_of(""), None);
        assert_eq!(id_of("e"), None);
    }

    #[test]
    fn ambiguous_prefix_finds_nothing() {
        let mut one = record('a', &[], &[]);
        one.id = format!("sha256:ab{}", "0".repeat(62));
        let mut two = record('a', &[], &[]);
        two.id = format!("sha256:ac{}", "0".repeat(62));
        assert!(find(&[one, two], "a").is_none());
    }

    #[test]
    fn user_is_split_like_cri_wants() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:50"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".to_string()));
        assert_eq!(user_of("www-data:www-data"), (None, "www-data".to_string()));
    }
}
