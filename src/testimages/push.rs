//! Pushing built images with the OCI distribution push API, through
//! `oci-client`: each blob with a monolithic upload (`POST` a session, `PUT`
//! the bytes with `?digest=`), skipped when a `HEAD` finds it already there;
//! then the manifest `PUT` by digest and by each tag. A blob this pusher
//! already sent to another repository is mounted from there instead
//! (`POST ?mount=&from=`), so the shared base layer crosses the wire once.

use std::collections::HashMap;
use std::sync::Mutex;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::HeaderValue;

use super::image::{Artifact, Image};
use super::{Blob, Error};

/// Credentials for the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    Basic { username: String, password: String },
}

/// Pushes to one registry over plain HTTP (the test registries listen on
/// loopback without TLS).
pub struct Pusher {
    client: Client,
    registry: String,
    auth: RegistryAuth,
    /// Blob digest → a repository it was pushed to.
    pushed: Mutex<HashMap<String, String>>,
}

impl Pusher {
    /// `registry` is `host:port`, e.g. `127.0.0.1:5000`.
    pub fn new(registry: &str, auth: Auth) -> Pusher {
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            use_monolithic_push: true,
            ..ClientConfig::default()
        });
        let auth = match auth {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic { username, password } => RegistryAuth::Basic(username, password),
        };
        Pusher {
            client,
            registry: registry.to_string(),
            auth,
            pushed: Mutex::new(HashMap::new()),
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Pushes every blob of `artifact`, then its manifests, and tags it with
    /// each of `tags`. Returns the digest the tags resolve to.
    pub async fn push(
        &self,
        repository: &str,
        tags: &[&str],
        artifact: &Artifact,
    ) -> Result<String, Error> {
        let top = artifact.manifest();
        for image in artifact.images() {
            self.push_image_content(repository, image).await?;
        }
        // An index's manifest must follow the manifests it lists (they are
        // pushed by digest above), and a tag must follow its digest.
        self.push_manifest(repository, &top.digest, top).await?;
        for tag in tags {
            self.push_manifest(repository, tag, top).await?;
        }
        Ok(top.digest.clone())
    }

    /// Pushes the layers, the config and the manifest (by digest) of one
    /// image.
    pub async fn push_image_content(&self, repository: &str, image: &Image) -> Result<(), Error> {
        for layer in &image.layers {
            self.push_blob(repository, &layer.blob).await?;
        }
        self.push_blob(repository, &image.config).await?;
        self.push_manifest(repository, &image.manifest.digest, &image.manifest)
            .await
    }

    /// Uploads one blob unless the repository already has it.
    pub async fn push_blob(&self, repository: &str, blob: &Blob) -> Result<(), Error> {
        self.authenticate().await;
        let reference = self.reference(repository, &blob.digest, true)?;
        let wrap = |source| Error::Push {
            what: format!("blob {}", blob.digest),
            reference: reference.whole(),
            source,
        };
        if self
            .client
            .blob_exists(&reference, &blob.digest)
            .await
            .map_err(wrap)?
        {
            return Ok(());
        }
        let source = self.pushed_to(&blob.digest);
        if let Some(source) = source
            && source != repository
        {
            let from = self.reference(&source, &blob.digest, true)?;
            // A refused mount (the registry may answer 202 and open an
            // upload instead) just means uploading after all.
            if self
                .client
                .mount_blob(&reference, &from, &blob.digest)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        self.client
            .push_blob(&reference, blob.bytes.clone(), &blob.digest)
            .await
            .map_err(wrap)?;
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(blob.digest.clone(), repository.to_string());
        Ok(())
    }

    fn pushed_to(&self, digest: &str) -> Option<String> {
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// `PUT`s a manifest (or index) under a tag or a digest. The bytes are
    /// sent as they are, so the registry stores exactly this digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
        manifest: &Blob,
    ) -> Result<(), Error> {
        self.authenticate().await;
        let reference = self.reference(repository, tag_or_digest, tag_or_digest.contains(':'))?;
        let content_type = HeaderValue::from_static(manifest.media_type);
        self.client
            .push_manifest_raw(&reference, manifest.bytes.clone(), content_type)
            .await
            .map_err(|source| Error::Push {
                what: format!("manifest {}", manifest.digest),
                reference: reference.whole(),
                source,
            })?;
        Ok(())
    }

    /// Hands the credentials to `oci-client` for this registry; it then
    /// answers the registry's challenges (Basic here) per repository.
    async fn authenticate(&self) {
        self.client
            .store_auth_if_needed(&self.registry, &self.auth)
            .await;
    }

    fn reference(
        &self,
        repository: &str,
        tag_or_digest: &str,
        is_digest: bool,
    ) -> Result<Reference, Error> {
        let text = if is_digest {
            format!("{}/{repository}@{tag_or_digest}", self.registry)
        } else {
            format!("{}/{repository}:{tag_or_digest}", self.registry)
        };
        text.parse::<Reference>()
            .map_err(|source| Error::Reference(text, source))
    }
}
