//! CRI devices: a host device node made at the path the container asks,
//! and the cgroup rule that lets it be used with the permissions asked. A
//! non-privileged container may use only the standard pseudo-devices and
//! these.

use std::path::Path;

use nix::sys::stat::{SFlag, major, minor, stat};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType};

use super::{ContainerError, DeviceRequest};
use crate::runtime::cgroup::{Access, DeviceKind, DeviceRule, default_device_rules};

fn invalid(message: String) -> ContainerError {
    ContainerError::Invalid {
        field: "devices",
        message,
    }
}

/// A requested device as found on the host: its node for the spec, its
/// cgroup rule.
pub(super) struct HostDevice {
    pub node: LinuxDevice,
    pub rule: DeviceRule,
}

/// Checks `d` and looks its host node up (symlinks followed, as
/// `/dev/disk/by-id/...` names are).
pub(super) fn resolve(d: &DeviceRequest) -> Result<HostDevice, ContainerError> {
    if !Path::new(&d.container_path).is_absolute() {
        return Err(invalid(format!(
            "container path {:?} is not absolute",
            d.container_path
        )));
    }
    let permissions = if d.permissions.is_empty() {
        "rwm"
    } else {
        d.permissions.as_str()
    };
    let access = Access::parse(permissions).map_err(|_| {
        invalid(format!(
            "permissions {permissions:?} are not some of r, w, m"
        ))
    })?;
    let st = stat(&d.host_path).map_err(|e| {
        invalid(format!(
            "host path {}: {}",
            d.host_path.display(),
            std::io::Error::from(e)
        ))
    })?;
    let (typ, kind) = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFCHR => (LinuxDeviceType::C, DeviceKind::Char),
        SFlag::S_IFBLK => (LinuxDeviceType::B, DeviceKind::Block),
        _ => {
            return Err(invalid(format!(
                "host path {} is not a character or block device",
                d.host_path.display()
            )));
        }
    };
    let (maj, min) = (major(st.st_rdev), minor(st.st_rdev));
    let number = |n: u64| {
        u32::try_from(n).map_err(|_| invalid(format!("device number {n} is out of range")))
    };
    let (maj32, min32) = (number(maj)?, number(min)?);
    let node = LinuxDeviceBuilder::default()
        .path(&d.container_path)
        .typ(typ)
        .major(i64::from(maj32))
        .minor(i64::from(min32))
        .file_mode(st.st_mode & 0o7777)
        .uid(st.st_uid)
        .gid(st.st_gid)
        .build()
        .map_err(ContainerError::Spec)?;
    Ok(HostDevice {
        node,
        rule: DeviceRule {
            allow: true,
            kind,
            major: Some(maj32),
            minor: Some(min32),
            access,
        },
    })
}

/// The device rules of a non-privileged container: the defaults plus its
/// own devices.
pub(super) fn cgroup_rules(devices: &[DeviceRequest]) -> Result<Vec<DeviceRule>, ContainerError> {
    let mut rules = default_device_rules();
    for d in devices {
        rules.push(resolve(d)?.rule);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str, container: &str, permissions: &str) -> DeviceRequest {
        DeviceRequest {
            container_path: container.into(),
            host_path: host.into(),
            permissions: permissions.into(),
        }
    }

    #[test]
    fn a_host_node_becomes_a_spec_device_and_a_rule() {
        let d = resolve(&request("/dev/null", "/dev/mynull", "rw")).expect("null");
        assert_eq!(d.node.path(), Path::new("/dev/mynull"));
        assert_eq!(d.node.typ(), LinuxDeviceType::C);
        assert_eq!((d.node.major(), d.node.minor()), (1, 3));
        assert_eq!(d.rule.v1_line(), "c 1:3 rw");
        let all = resolve(&request("/dev/zero", "/z", "")).expect("zero");
        assert_eq!(all.rule.v1_line(), "c 1:5 rwm");
        for bad in [
            request("/dev/null", "rel", "rw"),
            request("/dev/null", "/x", "rx"),
            request("/etc/hostname", "/x", "r"),
            request("/nonexistent-device", "/x", "r"),
        ] {
            assert!(matches!(
                resolve(&bad),
                Err(ContainerError::Invalid {
                    field: "devices",
                    ..
                })
            ));
        }
        let rules = cgroup_rules(&[request("/dev/null", "/n", "r")]).expect("rules");
        assert_eq!(rules.len(), default_device_rules().len() + 1);
    }
}
