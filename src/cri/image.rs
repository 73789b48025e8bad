//! The ImageService.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::{Error, Services, observe};

pub struct ImageApi {
    #[expect(dead_code, reason = "no image RPC is built yet")]
    s: Services,
}

impl ImageApi {
    pub(super) fn new(s: Services) -> Self {
        ImageApi { s }
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        _req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        observe("ListImages", async {
            Err(Error::Unimplemented("ListImages"))
        })
        .await
    }

    async fn image_status(
        &self,
        _req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        observe("ImageStatus", async {
            Err(Error::Unimplemented("ImageStatus"))
        })
        .await
    }

    async fn pull_image(
        &self,
        _req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        observe("PullImage", async {
            Err(Error::Unimplemented("PullImage"))
        })
        .await
    }

    async fn remove_image(
        &self,
        _req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        observe("RemoveImage", async {
            Err(Error::Unimplemented("RemoveImage"))
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        observe("ImageFsInfo", async {
            Err(Error::Unimplemented("ImageFsInfo"))
        })
        .await
    }
}
