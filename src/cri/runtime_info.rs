//! Version, Status, RuntimeConfig and UpdateRuntimeConfig.

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use super::{Error, Services};
use crate::config::CgroupDriver;
use crate::node::{API_VERSION, RUNTIME_NAME, RUNTIME_VERSION};

/// kubelet's own version string for the CRI it speaks; `Version.version` echoes it.
const KUBELET_API_VERSION: &str = "0.1.0";

pub(super) fn version(
    _: &Services,
    _req: cri::VersionRequest,
) -> Result<cri::VersionResponse, Error> {
    Ok(cri::VersionResponse {
        version: KUBELET_API_VERSION.to_string(),
        runtime_name: RUNTIME_NAME.to_string(),
        runtime_version: RUNTIME_VERSION.to_string(),
        runtime_api_version: API_VERSION.to_string(),
    })
}

pub(super) fn status(s: &Services, req: cri::StatusRequest) -> Result<cri::StatusResponse, Error> {
    let conditions = s
        .node
        .conditions()
        .into_iter()
        .map(|c| cri::RuntimeCondition {
            r#type: c.kind.to_string(),
            status: c.ready,
            reason: c.reason,
            message: c.message,
        })
        .collect();
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".to_string(), effective_config_json(s));
    }
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus { conditions }),
        info,
        // Features are advertised only once they work: critest and kubelet
        // gate behaviour on them.
        // The default handler, then every configured one (they all run pods
        // the same way, so they share the features).
        runtime_handlers: std::iter::once(String::new())
            .chain(s.node.config().runtime_handlers.keys().cloned())
            .map(|name| cri::RuntimeHandler {
                name,
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: crate::runtime::sys::mount_setattr_supported(),
                    user_namespaces: crate::runtime::userns::supported(),
                }),
            })
            .collect(),
        features: Some(cri::RuntimeFeatures {
            // Merge and Strict are applied and ContainerStatus.user reports
            // the effective groups (tests/security.rs).
            supplemental_groups_policy: true,
        }),
    })
}

/// The effective config as JSON, plus the fields under the names other
/// runtimes use that tools read from `crictl info` (critest reads `stateDir`).
fn effective_config_json(s: &Services) -> String {
    let config = s.node.config();
    let mut value = serde_json::to_value(config.as_ref()).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "stateDir".to_string(),
            serde_json::Value::String(config.state_dir.display().to_string()),
        );
        map.insert(
            "rootDir".to_string(),
            serde_json::Value::String(config.root.display().to_string()),
        );
        map.insert(
            "effectiveCgroupDriver".to_string(),
            serde_json::to_value(s.node.cgroup_driver()).unwrap_or_default(),
        );
        map.insert(
            "podCIDR".to_string(),
            serde_json::Value::String(s.node.pod_cidr()),
        );
    }
    value.to_string()
}

pub(super) fn runtime_config(
    s: &Services,
    _req: cri::RuntimeConfigRequest,
) -> Result<cri::RuntimeConfigResponse, Error> {
    let driver = match s.node.cgroup_driver() {
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        CgroupDriver::Cgroupfs | CgroupDriver::Auto => cri::CgroupDriver::Cgroupfs,
    };
    Ok(cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: driver.into(),
        }),
    })
}

pub(super) fn update_runtime_config(
    s: &Services,
    req: cri::UpdateRuntimeConfigRequest,
) -> Result<cri::UpdateRuntimeConfigResponse, Error> {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    s.node.set_pod_cidr(&cidr)?;
    Ok(cri::UpdateRuntimeConfigResponse {})
}
