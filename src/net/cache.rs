//! The attachment cache: for each pod, the exact network config, arguments
//! and result of its ADD, so DEL runs from what ADD used even after the conf
//! dir changed or the daemon restarted (as libcni's result cache does).
//!
//! One JSON file per pod under `<root>/net/cache/`, in the persistent root
//! because IPAM reservations (host-local's files) persist too: after a
//! reboot, DEL from this cache is what releases them. An entry is written
//! before ADD starts (no result yet) so a crash mid-ADD still leaves enough
//! to clean up, and rewritten with the result once ADD succeeds.
//!
//! Entries are replaced atomically (temp file + rename) but not fsynced:
//! fsync of file and directory measured ~12 ms here, as much as the whole
//! bridge ADD. A daemon crash loses nothing (the page cache survives it);
//! a machine crash destroys every pod netns anyway, and what an entry is
//! then needed for, releasing host-local's reservations, is itself written
//! by host-local without fsync. A rename-replace leaves the old or the new
//! entry, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::conf::NetworkList;
use super::{NetError, PodNetwork};

/// Bumped when an entry could no longer be read by older code.
const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attachment {
    pub(crate) version: u32,
    pub(crate) id: String,
    pub(crate) ifname: String,
    pub(crate) netns: PathBuf,
    pub(crate) cni_args: String,
    pub(crate) network: NetworkList,
    pub(crate) runtime_config: Map<String, Value>,
    /// Indexes of plugins not run for this pod (see `Service::setup`); DEL
    /// skips them too.
    #[serde(default)]
    pub(crate) skipped: Vec<usize>,
    /// The final plugin's ADD result; `None` while ADD has not finished.
    pub(crate) result: Option<Value>,
    pub(crate) pod_network: Option<PodNetwork>,
}

impl Attachment {
    pub(crate) fn new(
        id: &str,
        ifname: &str,
        netns: &Path,
        cni_args: String,
        network: NetworkList,
        runtime_config: Map<String, Value>,
    ) -> Attachment {
        Attachment {
            version: VERSION,
            id: id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            cni_args,
            network,
            runtime_config,
            skipped: Vec::new(),
            result: None,
            pod_network: None,
        }
    }
}

pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub(crate) fn open(dir: PathBuf) -> Result<Cache, NetError> {
        std::fs::create_dir_all(&dir).map_err(|source| NetError::Cache {
            path: dir.clone(),
            source,
        })?;
        Ok(Cache { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<Attachment>, NetError> {
        let path = self.path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(NetError::Cache { path, source }),
        };
        let entry: Attachment =
            serde_json::from_slice(&bytes).map_err(|e| NetError::CacheCorrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if entry.version > VERSION {
            return Err(NetError::CacheCorrupt {
                path,
                message: format!("written by a newer yonggi (version {})", entry.version),
            });
        }
        Ok(Some(entry))
    }

    /// Replaces the entry atomically (temp file + rename).
    pub(crate) fn put(&self, entry: &Attachment) -> Result<(), NetError> {
        let path = self.path(&entry.id);
        let tmp = self.dir.join(format!(".{}.tmp", entry.id));
        let err = |source| NetError::Cache {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(entry).map_err(|e| err(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(err)
    }

    pub(crate) fn remove(&self, id: &str) -> Result<(), NetError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetError::Cache { path, source }),
        }
    }

    /// Ids of all cached attachments, for recovery after a restart.
    pub(crate) fn ids(&self) -> Result<Vec<String>, NetError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| NetError::Cache {
            path: self.dir.clone(),
            source,
        })?;
        let mut ids = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".json")
                && !id.starts_with('.')
            {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path().join("cache")).expect("open");
        assert!(cache.get("abc").expect("get").is_none());
        let network = super::super::conf::default_network("b0", "10.9.0.0/24", Path::new("/i"))
            .expect("network");
        let mut entry = Attachment::new(
            "abc",
            "eth0",
            Path::new("/run/netns/x"),
            "IgnoreUnknown=1".to_string(),
            network.clone(),
            Map::new(),
        );
        cache.put(&entry).expect("put");
        entry.result = Some(serde_json::json!({"cniVersion": "1.0.0"}));
        cache.put(&entry).expect("put again");
        let back = cache.get("abc").expect("get").expect("present");
        assert_eq!(back.network, network);
        assert_eq!(back.result, entry.result);
        assert_eq!(cache.ids().expect("ids"), vec!["abc".to_string()]);
        cache.remove("abc").expect("remove");
        cache.remove("abc").expect("remove again");
        assert!(cache.get("abc").expect("get").is_none());
    }

    #[test]
    fn corrupt_entry_is_reported_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path().to_path_buf()).expect("open");
        std::fs::write(dir.path().join("bad.json"), "{").expect("write");
        let err = cache.get("bad").expect_err("corrupt");
        assert!(err.to_string().contains("bad.json"), "{err}");
    }
}
