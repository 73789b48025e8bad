//! The image a CreateContainer names, as the container service needs it,
//! and the lease that keeps its layers while the container exists.

use super::{Error, Services};
use crate::container::{ContainerError, ImageInfo};

/// Resolves `reference` (name, tag, digest, ID or ID prefix) among pulled
/// images; an image that is not there is NotFound, as kubelet expects.
pub(super) fn resolve(
    s: &Services,
    reference: &str,
) -> Result<(ImageInfo, crate::image::Image), Error> {
    let image = s
        .images
        .resolve(reference)?
        .ok_or_else(|| ContainerError::ImageNotFound(reference.to_string()))?;
    let c = &image.config;
    let info = ImageInfo {
        id: image.id.clone(),
        reference: reference.to_string(),
        layer_dirs: image.layer_dirs(),
        user: c.user.clone(),
        env: c.env.clone().unwrap_or_default(),
        entrypoint: c.entrypoint.clone().unwrap_or_default(),
        cmd: c.cmd.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone(),
        stop_signal: c.stop_signal.clone(),
        user_specified: String::new(),
    };
    Ok((info, image))
}

/// ContainerStatus' `image_ref`: the image's repo digest
/// (`registry/repo@sha256:...`), the one of the repository the request
/// named when it has several, as kubelet expects of containerd and CRI-O;
/// the image ID when no digest is known (a removed image, a local one).
pub(super) fn image_ref(images: &[crate::image::Image], info: &ImageInfo) -> String {
    let Some(image) = images.iter().find(|i| i.id == info.id) else {
        return info.id.clone();
    };
    let named = crate::image::Reference::parse(&info.reference)
        .ok()
        .map(|r| format!("{}@", r.name()));
    named
        .and_then(|prefix| image.repo_digests.iter().find(|d| d.starts_with(&prefix)))
        .or(image.repo_digests.first())
        .cloned()
        .unwrap_or_else(|| info.id.clone())
}

/// Drops the lease of container `id` (removed): its layers may go with
/// their image now.
pub(super) async fn release(s: &Services, id: &str) -> Result<(), Error> {
    s.images.release(id).await?;
    Ok(())
}
