//! The gRPC edge: CRI v1 RuntimeService and ImageService. This layer only
//! translates protobuf to domain calls and back and validates requests; it
//! holds no state and touches no files. Errors are mapped in `error.rs`.

mod container;
mod container_image;
mod error;
mod image;
mod images;
mod runtime;
mod runtime_info;
mod sandbox;
mod security;
mod streaming;

use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;

pub use error::Error;
pub use error::chain;
pub(crate) use error::observe;

use crate::node::Node;
use crate::pod;

/// Everything the RPC handlers call into. Cloning is cheap.
#[derive(Clone)]
pub struct Services {
    pub node: Arc<Node>,
    pub images: crate::image::Service,
    pub pods: Arc<pod::Service>,
    pub containers: Arc<crate::container::Service>,
    pub stream: Arc<crate::stream::Service>,
    pub net: Arc<crate::net::Service>,
}

/// The two tonic services, ready to add to a server.
pub fn servers(
    services: Services,
) -> (
    RuntimeServiceServer<runtime::RuntimeApi>,
    ImageServiceServer<image::ImageApi>,
) {
    (
        RuntimeServiceServer::new(runtime::RuntimeApi::new(services.clone())),
        ImageServiceServer::new(image::ImageApi::new(services)),
    )
}
