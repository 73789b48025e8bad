//! The durable metadata store: one redb file under the persistent root.
//!
//! redb was chosen over sled and SQLite: it is pure Rust (no C build, no
//! runtime dependency), every write transaction is atomic and fsynced before
//! `commit` returns (the daemon answers an RPC only after its state is on
//! disk), a torn write after a crash is rolled back to the last commit, and
//! its file format is stable. sled is unmaintained and has no stable format.
//!
//! # Schema (version [`SCHEMA_VERSION`])
//! Every bucket maps a string key to a JSON document; the owning module
//! defines the document's type. JSON keeps documents readable with `yonggi`
//! tooling and lets a field be added without a migration (serde `default`).
//!
//! | bucket     | key            | value                                  |
//! |------------|----------------|----------------------------------------|
//! | `meta`     | `schema`       | the schema version, a JSON number      |
//! | `runtime`  | setting name   | runtime settings (`pod_cidr`, ...)     |
//! | `images`   | image id       | image metadata (image module)          |
//! | `pods`     | sandbox id     | sandbox metadata (pod module)          |
//! | `containers` | container id | container metadata (container module)  |
//! | `image_leases` | holder id    | layers a holder (a container) keeps alive (image module) |
//!
//! A change that old code could not read bumps [`SCHEMA_VERSION`] and adds a
//! migration to [`migrate`], with a test that opens a store of the old version.
//!
//! Versions: 1, the first; 2, a container's `spec` keeps its identity and
//! privilege fields (`run_as_user`, `run_as_username`, `run_as_group`,
//! `supplemental_groups`, `privileged`, `readonly_rootfs`) inside
//! `spec.security`, the whole security context.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema";

/// A named bucket of JSON documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Runtime,
    Images,
    Pods,
    Containers,
    ImageLeases,
}

impl Bucket {
    const ALL: [Bucket; 5] = [
        Bucket::Runtime,
        Bucket::Images,
        Bucket::Pods,
        Bucket::Containers,
        Bucket::ImageLeases,
    ];

    fn name(self) -> &'static str {
        match self {
            Bucket::Runtime => "runtime",
            Bucket::Images => "images",
            Bucket::Pods => "pods",
            Bucket::Containers => "containers",
            Bucket::ImageLeases => "image_leases",
        }
    }

    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open metadata store {path} (corrupt, or not a yonggi store?)")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "metadata store {path} has schema version {found}; this yonggi understands up to {SCHEMA_VERSION} (written by a newer yonggi?)"
    )]
    NewerSchema { path: PathBuf, found: u64 },
    #[error("metadata store {path} has an unreadable schema version")]
    BadSchema { path: PathBuf },
    #[error("cannot create directory {path} for the metadata store")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any redb failure past opening; boxed because redb's errors are large
    /// and every store call returns this type.
    #[error("metadata store operation failed")]
    Db(#[source] Box<redb::Error>),
    #[error("cannot encode or decode the document {key:?} in bucket {bucket}")]
    Codec {
        bucket: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(e: $ty) -> StoreError {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The open store. Cheap to share behind an `Arc`; redb serialises writers.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `<root>/metadata.redb`, checks its schema
    /// version and creates every bucket, so readers never meet a missing table.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::CreateDir {
            path: root.to_path_buf(),
            source,
        })?;
        let path = root.join("metadata.redb");
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let store = Store { db, path };
        store.check_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = match meta.get(SCHEMA_KEY)? {
                Some(raw) => Some(serde_json::from_slice::<u64>(raw.value()).map_err(|_| {
                    StoreError::BadSchema {
                        path: self.path.clone(),
                    }
                })?),
                None => None,
            };
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found: v,
                    });
                }
                Some(v) => migrate(&txn, v)?,
                None => {}
            }
            let version = SCHEMA_VERSION.to_string();
            meta.insert(SCHEMA_KEY, version.as_bytes())?;
            for bucket in Bucket::ALL {
                txn.open_table(bucket.table())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Writes one document; durable when this returns.
    pub fn put<T: Serialize>(
        &self,
        bucket: Bucket,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.write(|w| w.put(bucket, key, value))
    }

    /// Deletes one document; deleting what is absent succeeds.
    pub fn delete(&self, bucket: Bucket, key: &str) -> Result<(), StoreError> {
        self.write(|w| w.delete(bucket, key))
    }

    /// Runs several writes in one transaction: all of them are committed, or none.
    pub fn write<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&mut Writer<'_>) -> Result<(), StoreError>,
    {
        let txn = self.db.begin_write()?;
        {
            let mut writer = Writer { txn: &txn };
            f(&mut writer)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(bucket.table())?;
        let Some(raw) = table.get(key)? else {
            return Ok(None);
        };
        decode(bucket, key, raw.value()).map(Some)
    }

    /// Every document of a bucket, in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(bucket.table())?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let key = key.value().to_string();
            let value = decode(bucket, &key, value.value())?;
            out.push((key, value));
        }
        Ok(out)
    }
}

impl Store {
    /// The keys of `bucket` starting with `prefix`, in order, without
    /// decoding a document: id-prefix resolution on every RPC stays cheap
    /// with hundreds of pods.
    /// The one key that `id_or_prefix` names in `bucket`: the key itself,
    /// or the only key it is a prefix of (crictl and kubelet pass
    /// truncated ids); an empty prefix names nothing.
    pub fn resolve_id(&self, bucket: Bucket, id_or_prefix: &str) -> Result<IdMatch, StoreError> {
        if id_or_prefix.is_empty() {
            return Ok(IdMatch::None);
        }
        let mut keys = self.keys_with_prefix(bucket, id_or_prefix)?;
        Ok(match keys.len() {
            0 => IdMatch::None,
            1 => IdMatch::One(keys.remove(0)),
            _ if keys.iter().any(|k| k == id_or_prefix) => IdMatch::One(id_or_prefix.to_string()),
            n => IdMatch::Ambiguous(n),
        })
    }

    pub fn keys_with_prefix(
        &self,
        bucket: Bucket,
        prefix: &str,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(bucket.table())?;
        let mut out = Vec::new();
        for entry in table.range(prefix..)? {
            let (key, _) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(key.to_string());
        }
        Ok(out)
    }
}

/// What an id or id prefix names, see [`Store::resolve_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMatch {
    One(String),
    None,
    /// That many keys start with the prefix.
    Ambiguous(usize),
}

/// The write half of one transaction, handed to [`Store::write`]'s closure.
pub struct Writer<'a> {
    txn: &'a redb::WriteTransaction,
}

impl Writer<'_> {
    pub fn put<T: Serialize>(
        &mut self,
        bucket: Bucket,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(value).map_err(|source| StoreError::Codec {
            bucket: bucket.name(),
            key: key.to_string(),
            source,
        })?;
        let mut table = self.txn.open_table(bucket.table())?;
        table.insert(key, raw.as_slice())?;
        Ok(())
    }

    pub fn delete(&mut self, bucket: Bucket, key: &str) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(bucket.table())?;
        table.remove(key)?;
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(bucket: Bucket, key: &str, raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|source| StoreError::Codec {
        bucket: bucket.name(),
        key: key.to_string(),
        source,
    })
}

/// Upgrades a store written with schema `from` to [`SCHEMA_VERSION`], inside
/// the open transaction.
fn migrate(txn: &redb::WriteTransaction, from: u64) -> Result<(), StoreError> {
    debug_assert!(from <= SCHEMA_VERSION);
    if from < 2 {
        container_security_v2(txn)?;
    }
    Ok(())
}

/// The container fields that version 2 moved into `spec.security`.
const V2_SECURITY_FIELDS: [&str; 6] = [
    "run_as_user",
    "run_as_username",
    "run_as_group",
    "supplemental_groups",
    "privileged",
    "readonly_rootfs",
];

/// 1 → 2: moves each container's identity and privilege fields into
/// `spec.security` (worked on as JSON: the types of version 1 are gone).
fn container_security_v2(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let bucket = Bucket::Containers;
    let mut table = txn.open_table(bucket.table())?;
    let mut moved = Vec::new();
    for entry in table.iter()? {
        let (key, raw) = entry?;
        let key = key.value().to_string();
        let mut doc: serde_json::Value = decode(bucket, &key, raw.value())?;
        let Some(spec) = doc.get_mut("spec").and_then(|s| s.as_object_mut()) else {
            continue;
        };
        if spec.contains_key("security") {
            continue;
        }
        let security: serde_json::Map<String, serde_json::Value> = V2_SECURITY_FIELDS
            .iter()
            .filter_map(|f| spec.remove(*f).map(|v| (f.to_string(), v)))
            .collect();
        spec.insert("security".into(), serde_json::Value::Object(security));
        moved.push((key, doc));
    }
    for (key, doc) in moved {
        let raw = serde_json::to_vec(&doc).map_err(|source| StoreError::Codec {
            bucket: bucket.name(),
            key: key.clone(),
            source,
        })?;
        table.insert(key.as_str(), raw.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .put(Bucket::Runtime, "pod_cidr", &"10.1.0.0/16")
                .expect("put");
            store
                .write(|w| {
                    w.put(Bucket::Pods, "a", &1u32)?;
                    w.put(Bucket::Pods, "b", &2u32)
                })
                .expect("write");
            store.delete(Bucket::Pods, "a").expect("delete");
            store
                .delete(Bucket::Pods, "never-there")
                .expect("delete absent");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let cidr: Option<String> = store.get(Bucket::Runtime, "pod_cidr").expect("get");
        assert_eq!(cidr.as_deref(), Some("10.1.0.0/16"));
        let pods: Vec<(String, u32)> = store.list(Bucket::Pods).expect("list");
        assert_eq!(pods, vec![("b".to_string(), 2)]);
    }

    #[test]
    fn keys_with_prefix_lists_only_matching_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .write(|w| {
                for key in ["ab1", "ab2", "abc", "b", "aa"] {
                    w.put(Bucket::Pods, key, &0u32)?;
                }
                w.put(Bucket::Containers, "ab9", &0u32)
            })
            .expect("write");
        let keys = |p| store.keys_with_prefix(Bucket::Pods, p).expect("keys");
        assert_eq!(keys("ab"), vec!["ab1", "ab2", "abc"]);
        assert_eq!(keys("abc"), vec!["abc"]);
        assert_eq!(keys("b"), vec!["b"]);
        assert!(keys("c").is_empty());
        assert_eq!(keys("").len(), 5);
    }

    #[test]
    fn resolve_id_takes_an_exact_key_or_a_unique_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .write(|w| {
                for key in ["ab", "abc", "abd", "x1"] {
                    w.put(Bucket::Pods, key, &0u32)?;
                }
                Ok(())
            })
            .expect("write");
        let resolve = |p| store.resolve_id(Bucket::Pods, p).expect("resolve");
        assert_eq!(resolve("x"), IdMatch::One("x1".into()));
        assert_eq!(resolve("ab"), IdMatch::One("ab".into()));
        assert_eq!(resolve("a"), IdMatch::Ambiguous(3));
        assert_eq!(resolve("y"), IdMatch::None);
        assert_eq!(resolve(""), IdMatch::None);
    }

    #[test]
    fn failed_transaction_commits_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let result = store.write(|w| {
            w.put(Bucket::Pods, "a", &1u32)?;
            Err(StoreError::BadSchema {
                path: PathBuf::from("injected"),
            })
        });
        assert!(result.is_err());
        let pods: Vec<(String, u32)> = store.list(Bucket::Pods).expect("list");
        assert!(pods.is_empty());
    }

    #[test]
    fn version_1_containers_get_their_security_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Database::create(dir.path().join("metadata.redb")).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(SCHEMA_KEY, b"1".as_slice()).expect("insert");
                let mut containers = txn.open_table(Bucket::Containers.table()).expect("t");
                let old = serde_json::json!({"id": "c1", "spec": {
                    "image": "busybox", "run_as_user": 1000, "run_as_username": "",
                    "run_as_group": 100, "supplemental_groups": [5],
                    "privileged": true, "readonly_rootfs": false}});
                let raw = serde_json::to_vec(&old).expect("json");
                containers.insert("c1", raw.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let store = Store::open(dir.path()).expect("open v1");
        let doc: serde_json::Value = store
            .get(Bucket::Containers, "c1")
            .expect("get")
            .expect("c1");
        let spec = &doc["spec"];
        assert_eq!(spec["image"], "busybox");
        assert!(spec.get("run_as_user").is_none() && spec.get("privileged").is_none());
        let security: crate::security::SecurityContext =
            serde_json::from_value(spec["security"].clone()).expect("security context");
        assert_eq!(security.run_as_user, Some(1000));
        assert_eq!(security.run_as_group, Some(100));
        assert_eq!(security.supplemental_groups, vec![5]);
        assert!(security.privileged && !security.readonly_rootfs);
        drop(store);
        // Migrated once: the version is current on the next open.
        Store::open(dir.path()).expect("reopen");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let txn = store.db.begin_write().expect("txn");
            {
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(SCHEMA_KEY, b"99".as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let err = Store::open(dir.path()).expect_err("newer schema must be refused");
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("metadata.redb"),
            b"this is not a redb file at all, just text".repeat(100),
        )
        .expect("write garbage");
        let err = Store::open(dir.path()).expect_err("corrupt store must fail");
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
    }
}
