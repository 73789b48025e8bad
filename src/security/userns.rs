//! User-namespace mappings of a pod (`NamespaceMode` POD with kubelet's
//! mappings). Running a container in a user namespace is the runtime's
//! business; this validates the request and produces the OCI
//! `linux.uidMappings` / `linux.gidMappings`.
//!
//! Kubelet allocates one contiguous range per pod and sends exactly one
//! uid and one gid mapping starting at container id 0; anything else is
//! refused, like a range that wraps around 2^32 or a host range holding
//! the host's root (which would make the container's root the host's).
//! NODE (the default) means no user namespace and no mappings; CONTAINER
//! and TARGET are not supported (kubelet does not use them).

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};

use super::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum UsernsMode {
    Pod,
    Container,
    #[default]
    Node,
    Target,
}

/// One CRI `IDMapping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMapping {
    pub host_id: u32,
    pub container_id: u32,
    pub length: u32,
}

#[derive(Debug, Clone, Default)]
pub struct UsernsRequest<'a> {
    pub mode: UsernsMode,
    pub uids: &'a [IdMapping],
    pub gids: &'a [IdMapping],
}

/// Validated mappings of a pod's user namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mappings {
    pub uid: IdMapping,
    pub gid: IdMapping,
}

impl Mappings {
    pub fn oci_uid_mappings(&self) -> Vec<LinuxIdMapping> {
        vec![to_oci(self.uid)]
    }

    pub fn oci_gid_mappings(&self) -> Vec<LinuxIdMapping> {
        vec![to_oci(self.gid)]
    }

    /// The host uid a container uid maps to (for chowning the container's
    /// own files), `None` outside the range.
    pub fn host_uid(&self, container_uid: u32) -> Option<u32> {
        map(self.uid, container_uid)
    }

    pub fn host_gid(&self, container_gid: u32) -> Option<u32> {
        map(self.gid, container_gid)
    }
}

/// What a container's own `userns_options` ask for: it always runs in its
/// pod's user namespace (or the node's), so a request must agree with the
/// pod's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContainerUserns {
    /// Mode NODE: no user namespace.
    Node,
    /// Mode POD with these mappings.
    Pod(Mappings),
}

impl ContainerUserns {
    /// The choice a request makes (CONTAINER, TARGET and invalid sets are
    /// errors, as for a pod).
    pub fn from_request(req: &UsernsRequest<'_>) -> Result<ContainerUserns, Error> {
        Ok(match mappings(req)? {
            None => ContainerUserns::Node,
            Some(m) => ContainerUserns::Pod(m),
        })
    }

    /// Whether this choice is the pod's (`None`: the node's namespace).
    pub fn matches(&self, pod: Option<&Mappings>) -> bool {
        match (self, pod) {
            (ContainerUserns::Node, None) => true,
            (ContainerUserns::Pod(m), Some(p)) => m == p,
            _ => false,
        }
    }
}

fn map(m: IdMapping, id: u32) -> Option<u32> {
    let offset = id.checked_sub(m.container_id)?;
    (offset < m.length).then(|| m.host_id + offset)
}

fn to_oci(m: IdMapping) -> LinuxIdMapping {
    LinuxIdMappingBuilder::default()
        .host_id(m.host_id)
        .container_id(m.container_id)
        .size(m.length)
        .build()
        .unwrap_or_default()
}

fn one(kind: &str, list: &[IdMapping]) -> Result<IdMapping, Error> {
    let [m] = list else {
        return Err(Error::InvalidMapping(format!(
            "exactly one {kind} mapping is supported, got {}",
            list.len()
        )));
    };
    let invalid = |why: &str| {
        Err(Error::InvalidMapping(format!(
            "{kind} mapping {m:?}: {why}"
        )))
    };
    if m.length == 0 {
        return invalid("length is 0");
    }
    if m.container_id != 0 {
        return invalid("it must start at container id 0");
    }
    let last = |start: u32| u64::from(start) + u64::from(m.length) - 1;
    if last(m.host_id) >= u64::from(u32::MAX) || last(m.container_id) >= u64::from(u32::MAX) {
        return invalid("the range overflows");
    }
    if m.host_id == 0 {
        return invalid("it maps the host's root");
    }
    Ok(*m)
}

/// The mappings to run with, `None` for no user namespace.
pub fn mappings(req: &UsernsRequest<'_>) -> Result<Option<Mappings>, Error> {
    match req.mode {
        UsernsMode::Node => {
            if !req.uids.is_empty() || !req.gids.is_empty() {
                return Err(Error::InvalidMapping(
                    "mode NODE takes no mappings".to_string(),
                ));
            }
            Ok(None)
        }
        UsernsMode::Container => Err(Error::UnsupportedUsernsMode("CONTAINER")),
        UsernsMode::Target => Err(Error::UnsupportedUsernsMode("TARGET")),
        UsernsMode::Pod => Ok(Some(Mappings {
            uid: one("uid", req.uids)?,
            gid: one("gid", req.gids)?,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: IdMapping = IdMapping {
        host_id: 65536,
        container_id: 0,
        length: 65536,
    };

    fn pod(uids: &[IdMapping], gids: &[IdMapping]) -> Result<Option<Mappings>, Error> {
        mappings(&UsernsRequest {
            mode: UsernsMode::Pod,
            uids,
            gids,
        })
    }

    #[test]
    fn node_is_no_namespace() {
        assert_eq!(mappings(&UsernsRequest::default()).expect("node"), None);
        let err = mappings(&UsernsRequest {
            uids: &[POD],
            ..Default::default()
        });
        assert!(matches!(err, Err(Error::InvalidMapping(_))));
    }

    #[test]
    fn pod_mapping_to_oci() {
        let m = pod(&[POD], &[POD]).expect("pod").expect("some");
        let uid = m.oci_uid_mappings();
        assert_eq!(uid.len(), 1);
        assert_eq!(
            (uid[0].host_id(), uid[0].container_id(), uid[0].size()),
            (65536, 0, 65536)
        );
        assert_eq!(m.oci_gid_mappings(), uid);
        assert_eq!(m.host_uid(0), Some(65536));
        assert_eq!(m.host_uid(65535), Some(131071));
        assert_eq!(m.host_uid(65536), None);
    }

    #[test]
    fn invalid_pod_mappings() {
        let shifted = IdMapping {
            container_id: 1,
            ..POD
        };
        let empty = IdMapping { length: 0, ..POD };
        let overflow = IdMapping {
            host_id: u32::MAX - 10,
            ..POD
        };
        let host_root = IdMapping { host_id: 0, ..POD };
        let cases: &[(&[IdMapping], &[IdMapping])] = &[
            (&[], &[POD]),
            (&[POD], &[]),
            (&[POD, POD], &[POD]),
            (&[shifted], &[POD]),
            (&[POD], &[empty]),
            (&[overflow], &[POD]),
            (&[POD], &[host_root]),
        ];
        for (uids, gids) in cases {
            assert!(
                matches!(pod(uids, gids), Err(Error::InvalidMapping(_))),
                "{uids:?} {gids:?}"
            );
        }
    }

    #[test]
    fn container_and_target_modes_are_rejected() {
        for (mode, name) in [
            (UsernsMode::Container, "CONTAINER"),
            (UsernsMode::Target, "TARGET"),
        ] {
            let err = mappings(&UsernsRequest {
                mode,
                uids: &[POD],
                gids: &[POD],
            });
            assert!(matches!(err, Err(Error::UnsupportedUsernsMode(n)) if n == name));
        }
    }
}
