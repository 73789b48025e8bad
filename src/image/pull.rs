//! One pull: resolve the reference to a manifest (through mirrors, with the
//! platform picked from an index), fetch and verify the config, then fetch and
//! unpack the layers in parallel, and finally commit the image record.
//!
//! Work is shared between concurrent pulls: every blob and every layer is
//! fetched or unpacked under a per-digest lock, and whoever takes the lock
//! second finds the work done. A pull runs as its own task; when the caller
//! goes away (deadline, cancellation) the task is told to stop, stops at its
//! next chunk or tar entry, and removes what it had not committed. Blobs and
//! layers it had completed are dropped by the collection that follows, unless
//! another image or pull uses them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};

use super::Inner;
use super::content::{BlobWriter, TempPath, write_blob};
use super::error::ImageError;
use super::manifest::{self, Blob, Fetched, MAX_DOCUMENT, Wanted};
use super::record::Image;
use super::reference::{Digest, Reference};
use super::registry::{self, Auth, Session};
use super::unpack::{UnpackError, unpack};

/// Set when the caller of a pull has gone away.
#[derive(Default)]
pub(crate) struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `work` unless the pull is cancelled first.
    async fn guard<T>(
        &self,
        work: impl Future<Output = Result<T, ImageError>>,
    ) -> Result<T, ImageError> {
        tokio::select! {
            result = work => result,
            () = self.cancelled() => Err(ImageError::Cancelled),
        }
    }
}

/// Cancels the pull task when the RPC future is dropped.
pub(crate) struct CancelOnDrop(pub(crate) Arc<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The manifest a reference resolved to, and where it came from.
struct Resolved {
    session: Session,
    /// The digest the reference points at (an index's, when it is one).
    top: Digest,
    manifest: manifest::Manifest,
    /// Index and manifest documents, to keep in the content store.
    documents: Vec<(Digest, Vec<u8>)>,
}

pub(crate) async fn pull(
    inner: Arc<Inner>,
    reference: Reference,
    auth: Auth,
    cancel: Arc<Cancel>,
) -> Result<String, ImageError> {
    let result = pull_inner(&inner, &reference, auth, &cancel).await;
    if let Err(e) = &result {
        tracing::info!(image = %reference, error = %crate::cri::chain(e), "pull failed; collecting what it left");
        let gc = inner.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || gc.collect())
            .await
            .map_err(ImageError::Task)
            .and_then(|r| r)
        {
            tracing::warn!(error = %crate::cri::chain(&e), "collection after a failed pull failed");
        }
    }
    result
}

async fn pull_inner(
    inner: &Arc<Inner>,
    reference: &Reference,
    auth: Auth,
    cancel: &Cancel,
) -> Result<String, ImageError> {
    let resolved = cancel.guard(resolve(inner, reference, auth)).await?;
    let Resolved {
        session,
        top,
        manifest,
        documents,
    } = resolved;
    let config = &manifest.config;
    let mut keys: Vec<String> = documents.iter().map(|(d, _)| d.to_string()).collect();
    keys.push(config.digest.to_string());
    keys.extend(manifest.layers.iter().map(|l| l.digest.to_string()));
    let mut leases = vec![inner.inflight.lease(&keys)];

    for (digest, body) in &documents {
        write_blob(&inner.layout, digest, body)?;
    }
    let config_path = ensure_blob(inner, &session, config, cancel).await?;
    let config_body = tokio::fs::read(&config_path)
        .await
        .map_err(ImageError::io(&config_path))?;
    let (run_config, diff_ids) = manifest::parse_config(&config_body, &config.digest)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::BadManifest {
            what: config.digest.to_string(),
            reason: format!(
                "{} diff IDs for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    let chain_ids = manifest::chain_ids(&diff_ids);
    let chain_keys: Vec<String> = chain_ids.iter().map(|c| c.to_string()).collect();
    leases.push(inner.inflight.lease(&chain_keys));

    let downloads = Arc::new(Semaphore::new(inner.config.image.max_concurrent_downloads));
    let session = Arc::new(session);
    // Every layer job runs to its end (none is dropped mid-unpack); the first
    // failure cancels the others, and is the error reported.
    let mut jobs = Vec::with_capacity(manifest.layers.len());
    for (i, blob) in manifest.layers.iter().enumerate() {
        let job = ensure_layer(
            inner,
            &session,
            blob,
            &diff_ids[i],
            &chain_ids[i],
            &downloads,
            cancel,
        );
        jobs.push(async move {
            let result = job.await;
            if result.is_err() {
                cancel.cancel();
            }
            result
        });
    }
    let results = futures::future::join_all(jobs).await;
    let mut errors: Vec<ImageError> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = errors
        .iter()
        .position(|e| !matches!(e, ImageError::Cancelled))
    {
        return Err(errors.swap_remove(first));
    }
    if let Some(error) = errors.pop() {
        return Err(error);
    }
    if cancel.is_cancelled() {
        return Err(ImageError::Cancelled);
    }

    let size = config.size
        + manifest.layers.iter().map(|l| l.size).sum::<u64>()
        + documents.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    let mut blobs = keys;
    blobs.dedup();
    let record = Image {
        id: config.digest.to_string(),
        repo_tags: reference.tagged().into_iter().collect(),
        repo_digests: vec![reference.with_digest(&top)],
        size,
        config: run_config,
        chain_ids: chain_keys,
        blobs,
        layers_root: inner.layout.layers(),
    };
    inner.commit(record)?;
    drop(leases);
    Ok(config.digest.to_string())
}

/// Fetches the manifest from the first endpoint that has it; an index is
/// resolved to the configured platform's manifest on the same endpoint.
async fn resolve(
    inner: &Arc<Inner>,
    reference: &Reference,
    auth: Auth,
) -> Result<Resolved, ImageError> {
    // Which failure to report when every endpoint failed: a refusal of the
    // credentials says most, then "not there", then the last other error.
    let mut not_found = Vec::new();
    let mut denied = None;
    let mut last_error = None;
    for endpoint in registry::endpoints(&inner.config, &reference.registry) {
        let base = endpoint.base.clone();
        let session = Session::new(
            inner.client.clone(),
            endpoint,
            &reference.registry,
            &reference.repository,
            auth.clone(),
        );
        match resolve_on(inner, &session, reference).await {
            Ok((top, manifest, documents)) => {
                return Ok(Resolved {
                    session,
                    top,
                    manifest,
                    documents,
                });
            }
            Err(e) => {
                tracing::debug!(endpoint = %base, image = %reference, error = %crate::cri::chain(&e), "endpoint failed");
                if registry::is_not_found(&e) {
                    not_found.push(base);
                } else if matches!(
                    e,
                    ImageError::Unauthorized { .. } | ImageError::Forbidden { .. }
                ) {
                    denied.get_or_insert(e);
                } else {
                    last_error = Some(e);
                }
            }
        }
    }
    if let Some(denied) = denied {
        return Err(denied);
    }
    match last_error {
        Some(error) if not_found.is_empty() => Err(error),
        _ => Err(ImageError::NotFound {
            what: reference.to_string(),
            registry: reference.registry.clone(),
            tried: not_found.join(", "),
        }),
    }
}

type Documents = Vec<(Digest, Vec<u8>)>;

async fn resolve_on(
    inner: &Inner,
    session: &Session,
    reference: &Reference,
) -> Result<(Digest, manifest::Manifest, Documents), ImageError> {
    let (top, body) = fetch_manifest(
        session,
        &reference.registry_ref(),
        reference.digest.as_ref(),
    )
    .await?;
    let mut documents = vec![(top.clone(), body.clone())];
    let manifest = match manifest::parse(&body, &reference.to_string())? {
        Fetched::Manifest(m) => m,
        Fetched::Index(entries) => {
            let wanted = Wanted::parse(&inner.config.image.platform);
            let entry =
                manifest::select(&entries, &wanted).ok_or_else(|| ImageError::NoPlatform {
                    platform: inner.config.image.platform.clone(),
                    reference: reference.to_string(),
                })?;
            let digest = Digest::parse(&entry.digest).ok_or_else(|| ImageError::BadManifest {
                what: reference.to_string(),
                reason: format!("index entry digest {:?} is not sha256", entry.digest),
            })?;
            let (digest, body) = fetch_manifest(session, digest.as_str(), Some(&digest)).await?;
            let what = format!("{}@{digest}", reference.name());
            documents.push((digest, body.clone()));
            match manifest::parse(&body, &what)? {
                Fetched::Manifest(m) => m,
                Fetched::Index(_) => {
                    return Err(ImageError::BadManifest {
                        what,
                        reason: "an index inside an index".to_string(),
                    });
                }
            }
        }
    };
    Ok((top, manifest, documents))
}

/// GETs a manifest; when the digest is known the body must hash to it.
async fn fetch_manifest(
    session: &Session,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<(Digest, Vec<u8>), ImageError> {
    let response = session
        .get(&format!("manifests/{reference}"), Some(manifest::ACCEPT))
        .await?;
    let url = response.url().to_string();
    let body = registry::read_limited(response, MAX_DOCUMENT, &url).await?;
    let digest = Digest::of(&body);
    if let Some(expected) = expected
        && &digest != expected
    {
        return Err(ImageError::Verify {
            digest: expected.clone(),
            reason: format!("manifest hashes to {digest}"),
        });
    }
    Ok((digest, body))
}

/// The blob's path in the content store, downloading and verifying it unless
/// it is already there. Concurrent callers for one digest download it once.
async fn ensure_blob(
    inner: &Inner,
    session: &Session,
    blob: &Blob,
    cancel: &Cancel,
) -> Result<PathBuf, ImageError> {
    // Keys are prefixed: an uncompressed layer's blob digest is its diff ID,
    // which is also the chain ID of a first layer.
    let lock = inner.locks.get(&format!("blob {}", blob.digest));
    let _held = cancel.guard(async { Ok(lock.lock().await) }).await?;
    let path = inner.layout.blob(&blob.digest);
    if inner.layout.has_blob(&blob.digest, blob.size) {
        return Ok(path);
    }
    let response = cancel
        .guard(session.get(&format!("blobs/{}", blob.digest), None))
        .await?;
    if response.content_length().is_some_and(|n| n != blob.size) {
        return Err(ImageError::Verify {
            digest: blob.digest.clone(),
            reason: format!(
                "registry announces {} bytes, the manifest {}",
                response.content_length().unwrap_or_default(),
                blob.size
            ),
        });
    }
    let url = response.url().to_string();
    let mut writer = BlobWriter::create(&inner.layout, &blob.digest, blob.size)?;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = cancel.guard(async { Ok(stream.next().await) }).await? {
        let chunk = chunk.map_err(|source| ImageError::Http {
            url: url.clone(),
            source,
        })?;
        writer.write(&chunk)?;
    }
    tokio::task::spawn_blocking(move || writer.commit())
        .await
        .map_err(ImageError::Task)??;
    Ok(path)
}

/// Makes sure the layer `chain_id` is unpacked, fetching its blob if needed.
async fn ensure_layer(
    inner: &Arc<Inner>,
    session: &Session,
    blob: &Blob,
    diff_id: &Digest,
    chain_id: &Digest,
    downloads: &Semaphore,
    cancel: &Cancel,
) -> Result<(), ImageError> {
    let lock = inner.locks.get(&format!("layer {chain_id}"));
    let _held = cancel.guard(async { Ok(lock.lock().await) }).await?;
    let dest = inner.layout.layer(chain_id);
    if dest.is_dir() {
        return Ok(());
    }
    let blob_path = {
        let _slot = cancel
            .guard(async { downloads.acquire().await.map_err(|_| ImageError::Cancelled) })
            .await?;
        ensure_blob(inner, session, blob, cancel).await?
    };
    let temp = TempPath::new(inner.layout.temp(&format!("layer-{}", chain_id.hex())));
    std::fs::create_dir(temp.path()).map_err(ImageError::io(temp.path()))?;
    let diff_id = diff_id.clone();
    let digest = blob.digest.clone();
    let flag = CancelFlag::new(cancel);
    let result = {
        let stop = flag.shared();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&blob_path).map_err(ImageError::io(&blob_path))?;
            unpack(file, temp.path(), &diff_id, &stop)
                .map_err(|source| ImageError::Unpack { digest, source })?;
            if stop.load(Ordering::SeqCst) {
                return Err(ImageError::Unpack {
                    digest: diff_id,
                    source: UnpackError::Cancelled,
                });
            }
            temp.commit(&dest)
        })
    };
    // The blocking unpack cannot be dropped mid-way; forward a cancellation
    // to it and wait for it to finish, so nothing runs on after the pull.
    tokio::pin!(result);
    let joined = tokio::select! {
        joined = &mut result => joined,
        () = cancel.cancelled() => {
            flag.raise();
            result.await
        }
    };
    match joined.map_err(ImageError::Task)? {
        Err(ImageError::Unpack {
            source: UnpackError::Cancelled,
            ..
        }) => Err(ImageError::Cancelled),
        other => other,
    }
}

/// An `AtomicBool` the blocking unpack polls, raised from the async side.
struct CancelFlag {
    flag: Arc<AtomicBool>,
}

impl CancelFlag {
    fn new(cancel: &Cancel) -> CancelFlag {
        CancelFlag {
            flag: Arc::new(AtomicBool::new(cancel.is_cancelled())),
        }
    }

    fn shared(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    fn raise(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }
}
