//! The CRI client: a channel to any runtime's unix socket, and the pod and
//! container configs of the workload (shaped as kubelet sends them).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The label every pod of a run carries, valued with the run's id, so a
/// failed run's leftovers can be found and removed.
pub const RUN_LABEL: &str = "yonggi-bench/run";

/// The container's command. It must exit on SIGTERM: as PID 1 of its PID
/// namespace a process gets no default signal actions, so a bare `sleep`
/// would ignore the TERM of StopContainer and be killed only after the
/// grace period. Measured StopContainer is therefore "the process exits on
/// SIGTERM".
pub const SLEEPER: &str = "trap 'exit 0' TERM; while :; do sleep 1 & wait; done";

#[derive(Clone)]
pub struct Clients {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// Connects to `unix:///path` (or a bare path).
pub async fn connect(endpoint: &str) -> anyhow::Result<Clients> {
    let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
    let channel = Endpoint::try_from("http://[::]:50051")
        .context("endpoint")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(Clients {
        runtime: RuntimeServiceClient::new(channel.clone()),
        images: ImageServiceClient::new(channel),
    })
}

/// How one pod of the workload looks.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub run_id: String,
    pub cgroup_parent: String,
    pub image: String,
}

impl PodSpec {
    pub fn sandbox(&self, name: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("{}-{name}", self.run_id),
                namespace: "yonggi-bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            labels: HashMap::from([(RUN_LABEL.to_string(), self.run_id.clone())]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn container(&self) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "sleeper".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), SLEEPER.into()],
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// What kubelet asks for a pod without shareProcessNamespace.
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The reason a step has no number: `Unimplemented(rpc)` when the runtime
/// answered UNIMPLEMENTED, otherwise a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    Unimplemented(&'static str),
    Failed(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Unimplemented(rpc) => write!(f, "{rpc}: UNIMPLEMENTED"),
            StepError::Failed(why) => f.write_str(why),
        }
    }
}

pub fn step_error(rpc: &'static str, status: tonic::Status) -> StepError {
    if status.code() == tonic::Code::Unimplemented {
        StepError::Unimplemented(rpc)
    } else {
        StepError::Failed(format!("{rpc}: {:?}: {}", status.code(), status.message()))
    }
}

/// Calls `$client.$method(req)` and maps its error to a [`StepError`]
/// named after the RPC.
macro_rules! call {
    ($client:expr, $method:ident, $rpc:literal, $req:expr) => {
        $client
            .$method($req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| $crate::cri::step_error($rpc, s))
    };
}
pub(crate) use call;

/// StopContainer's grace period: longer than the sleeper needs.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_is_told_apart_from_failure() {
        assert_eq!(
            step_error("CreateContainer", tonic::Status::unimplemented("later")),
            StepError::Unimplemented("CreateContainer")
        );
        let failed = step_error("StartContainer", tonic::Status::not_found("gone"));
        assert_eq!(
            failed,
            StepError::Failed("StartContainer: NotFound: gone".into())
        );
    }

    #[test]
    fn pods_are_labelled_with_their_run_and_unique_per_name() {
        let spec = PodSpec {
            run_id: "r1".into(),
            cgroup_parent: "/bench".into(),
            image: "busybox".into(),
        };
        let a = spec.sandbox("a");
        let b = spec.sandbox("b");
        assert_eq!(a.labels.get(RUN_LABEL).map(String::as_str), Some("r1"));
        assert_ne!(
            a.metadata.as_ref().map(|m| &m.uid),
            b.metadata.as_ref().map(|m| &m.uid)
        );
        assert_eq!(spec.container().command[2], SLEEPER);
    }
}
