//! ImageService RPCs: proto ⇄ `image::Service`.

use base64::Engine as _;
use k8s_cri::v1 as cri;

use super::{Error, Services};
use crate::image::{Auth, Image};

fn image_name(spec: Option<&cri::ImageSpec>, field: &'static str) -> Result<String, Error> {
    match spec.map(|s| s.image.trim()) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(Error::InvalidArgument {
            field,
            message: "an image reference is required".to_string(),
        }),
    }
}

/// kubelet's `AuthConfig`: `auth` is base64 of `user:password` and stands in
/// for username/password when those are empty.
fn auth_of(config: Option<cri::AuthConfig>) -> Result<Auth, Error> {
    let Some(config) = config else {
        return Ok(Auth::default());
    };
    let (mut username, mut password) = (config.username, config.password);
    if username.is_empty() && !config.auth.is_empty() {
        let bad = || Error::InvalidArgument {
            field: "auth.auth",
            message: "not base64 of user:password".to_string(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(config.auth.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
        username = user.to_string();
        password = pass.to_string();
    }
    Ok(Auth {
        username,
        password,
        identity_token: config.identity_token,
        registry_token: config.registry_token,
    })
}

fn to_cri(image: &Image) -> cri::Image {
    let (uid, username) = image.user();
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

pub(super) async fn pull(
    s: &Services,
    req: cri::PullImageRequest,
) -> Result<cri::PullImageResponse, Error> {
    let name = image_name(req.image.as_ref(), "image.image")?;
    let auth = auth_of(req.auth)?;
    let image_ref = s.images.pull(&name, auth).await?;
    Ok(cri::PullImageResponse { image_ref })
}

pub(super) async fn status(
    s: &Services,
    req: cri::ImageStatusRequest,
) -> Result<cri::ImageStatusResponse, Error> {
    let name = image_name(req.image.as_ref(), "image.image")?;
    let Some(image) = s.images.resolve(&name)? else {
        return Ok(cri::ImageStatusResponse::default());
    };
    let mut info = std::collections::HashMap::new();
    if req.verbose {
        let document = serde_json::json!({
            "id": image.id,
            "chainIDs": image.chain_ids,
            "layerDirs": image.layer_dirs(),
            "imageSpec": s.images.config_document(&image)?,
        });
        info.insert("info".to_string(), document.to_string());
    }
    Ok(cri::ImageStatusResponse {
        image: Some(to_cri(&image)),
        info,
    })
}

pub(super) async fn list(
    s: &Services,
    req: cri::ListImagesRequest,
) -> Result<cri::ListImagesResponse, Error> {
    let wanted = req
        .filter
        .and_then(|f| f.image)
        .map(|spec| spec.image)
        .filter(|name| !name.trim().is_empty());
    let images = match wanted {
        Some(name) => s.images.resolve(&name)?.into_iter().collect(),
        None => s.images.list()?,
    };
    Ok(cri::ListImagesResponse {
        images: images.iter().map(to_cri).collect(),
    })
}

pub(super) async fn remove(
    s: &Services,
    req: cri::RemoveImageRequest,
) -> Result<cri::RemoveImageResponse, Error> {
    let name = image_name(req.image.as_ref(), "image.image")?;
    s.images.remove(&name).await?;
    Ok(cri::RemoveImageResponse {})
}

pub(super) async fn fs_info(
    s: &Services,
    _req: cri::ImageFsInfoRequest,
) -> Result<cri::ImageFsInfoResponse, Error> {
    let usage = s.images.fs_usage().await?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Ok(cri::ImageFsInfoResponse {
        image_filesystems: vec![cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: usage.mountpoint.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: usage.inodes_used,
            }),
        }],
        container_filesystems: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_field_stands_in_for_username_and_password() {
        let auth = auth_of(Some(cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("alice:s3:cret"),
            ..Default::default()
        }))
        .expect("auth");
        assert_eq!(auth.username, "alice");
        assert_eq!(auth.password, "s3:cret");
        let err = auth_of(Some(cri::AuthConfig {
            auth: "!!!".to_string(),
            ..Default::default()
        }))
        .expect_err("bad base64");
        assert!(matches!(
            err,
            Error::InvalidArgument {
                field: "auth.auth",
                ..
            }
        ));
    }
}
