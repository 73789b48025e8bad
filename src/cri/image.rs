//! The ImageService.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::{Services, images, observe};

pub struct ImageApi {
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
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        observe("ListImages", images::list(&self.s, req.into_inner())).await
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        observe("ImageStatus", images::status(&self.s, req.into_inner())).await
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        observe("PullImage", images::pull(&self.s, req.into_inner())).await
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        observe("RemoveImage", images::remove(&self.s, req.into_inner())).await
    }

    async fn image_fs_info(
        &self,
        req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        observe("ImageFsInfo", images::fs_info(&self.s, req.into_inner())).await
    }
}
