//! The RuntimeService: each RPC hands its request to the function of its concern.

use std::pin::Pin;

use futures::Stream;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{Error, Services, observe, runtime_info, sandbox, streaming};

pub struct RuntimeApi {
    s: Services,
}

impl RuntimeApi {
    pub(super) fn new(s: Services) -> Self {
        RuntimeApi { s }
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(
        &self,
        req: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        observe("Version", async {
            runtime_info::version(&self.s, req.into_inner())
        })
        .await
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        observe("RunPodSandbox", sandbox::run(&self.s, req.into_inner())).await
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        observe("StopPodSandbox", sandbox::stop(&self.s, req.into_inner())).await
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        observe(
            "RemovePodSandbox",
            sandbox::remove(&self.s, req.into_inner()),
        )
        .await
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        observe("PodSandboxStatus", async {
            sandbox::status(&self.s, req.into_inner())
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        observe("ListPodSandbox", async {
            sandbox::list(&self.s, req.into_inner())
        })
        .await
    }

    async fn create_container(
        &self,
        _req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        observe("CreateContainer", async {
            Err(Error::Unimplemented("CreateContainer"))
        })
        .await
    }

    async fn start_container(
        &self,
        _req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        observe("StartContainer", async {
            Err(Error::Unimplemented("StartContainer"))
        })
        .await
    }

    async fn stop_container(
        &self,
        _req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        observe("StopContainer", async {
            Err(Error::Unimplemented("StopContainer"))
        })
        .await
    }

    async fn remove_container(
        &self,
        _req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        observe("RemoveContainer", async {
            Err(Error::Unimplemented("RemoveContainer"))
        })
        .await
    }

    async fn list_containers(
        &self,
        _req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        observe("ListContainers", async {
            Err(Error::Unimplemented("ListContainers"))
        })
        .await
    }

    async fn container_status(
        &self,
        _req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        observe("ContainerStatus", async {
            Err(Error::Unimplemented("ContainerStatus"))
        })
        .await
    }

    async fn update_container_resources(
        &self,
        _req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        observe("UpdateContainerResources", async {
            Err(Error::Unimplemented("UpdateContainerResources"))
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        _req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        observe("ReopenContainerLog", async {
            Err(Error::Unimplemented("ReopenContainerLog"))
        })
        .await
    }

    async fn exec_sync(
        &self,
        _req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        observe("ExecSync", async { Err(Error::Unimplemented("ExecSync")) }).await
    }

    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        observe("Exec", streaming::exec(&self.s, req.into_inner())).await
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        observe("Attach", streaming::attach(&self.s, req.into_inner())).await
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        observe(
            "PortForward",
            streaming::port_forward(&self.s, req.into_inner()),
        )
        .await
    }

    async fn container_stats(
        &self,
        _req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        observe("ContainerStats", async {
            Err(Error::Unimplemented("ContainerStats"))
        })
        .await
    }

    async fn list_container_stats(
        &self,
        _req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        observe("ListContainerStats", async {
            Err(Error::Unimplemented("ListContainerStats"))
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        _req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        observe("PodSandboxStats", async {
            Err(Error::Unimplemented("PodSandboxStats"))
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        _req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        observe("ListPodSandboxStats", async {
            Err(Error::Unimplemented("ListPodSandboxStats"))
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        observe("UpdateRuntimeConfig", async {
            runtime_info::update_runtime_config(&self.s, req.into_inner())
        })
        .await
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        observe("Status", async {
            runtime_info::status(&self.s, req.into_inner())
        })
        .await
    }

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        observe("CheckpointContainer", async {
            Err(Error::Unimplemented("CheckpointContainer"))
        })
        .await
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        observe("GetContainerEvents", async {
            Err(Error::Unimplemented("GetContainerEvents"))
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        observe("ListMetricDescriptors", async {
            Err(Error::Unimplemented("ListMetricDescriptors"))
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        observe("ListPodSandboxMetrics", async {
            Err(Error::Unimplemented("ListPodSandboxMetrics"))
        })
        .await
    }

    async fn runtime_config(
        &self,
        req: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        observe("RuntimeConfig", async {
            runtime_info::runtime_config(&self.s, req.into_inner())
        })
        .await
    }
}
