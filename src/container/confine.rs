//! A container's security context applied to its OCI spec: who it runs as
//! and what it may do. Each rule comes from a building block of
//! `security/` (identity, capabilities, masked and read-only paths, MAC
//! checks) or `runtime::seccomp`; this file only puts their answers in the
//! spec fields the runtime applies, plus what privileged changes beyond
//! them (host devices, writable `/sys`; the device cgroup rules it goes
//! without are `devices.rs`'s).
//!
//! [`check`] runs before anything is created (nothing to roll back on a
//! bad request); [`apply`] runs once the rootfs exists, since the user's
//! name and groups are read from the image's own `/etc/passwd` and
//! `/etc/group` inside it.

use std::path::Path;

use oci_spec::runtime::{Capabilities, LinuxCapabilities, Mount, Spec};

use super::ContainerError;
use super::spec::ImageInfo;
use crate::pod::Sandbox;
use crate::runtime::seccomp;
use crate::security::{SecurityContext, capabilities, identity};

/// What can be refused without the image's files: the context itself
/// (MAC profiles, paths, capability names, group without user, mappings)
/// and a privileged container in a pod that is not (containerd refuses it
/// too: the pod's policy said no).
pub(super) fn check(ctx: &SecurityContext, pod: &Sandbox) -> Result<(), ContainerError> {
    ctx.validate().map_err(ContainerError::Security)?;
    if ctx.privileged && !pod.spec.privileged {
        return Err(ContainerError::Invalid {
            field: "security_context.privileged",
            message: format!(
                "a privileged container is not allowed in pod {}, which is not privileged",
                pod.id
            ),
        });
    }
    Ok(())
}

/// Fills in `out`'s user, capabilities, no_new_privs, masked and
/// read-only paths, seccomp, read-only root and, when privileged, host
/// devices and writable `/sys`.
pub(super) fn apply(
    out: &mut Spec,
    ctx: &SecurityContext,
    image: &ImageInfo,
    rootfs: &Path,
) -> Result<(), ContainerError> {
    let who = identity::resolve(rootfs, &ctx.user_request(Some(image.user.as_str())))
        .map_err(ContainerError::Security)?;
    let available = crate::runtime::own_capabilities().map_err(ContainerError::OwnCapabilities)?;
    let mut request = ctx.capability_request(who.uid);
    request.available = Some(&available);
    let caps = capabilities::build(&request).map_err(ContainerError::Security)?;
    let seccomp = seccomp::for_container(&ctx.seccomp, ctx.privileged, &bounding(&caps))
        .map_err(ContainerError::Seccomp)?;
    let paths = ctx.proc_paths().map_err(ContainerError::Security)?;

    let mut process = out.process().clone().unwrap_or_default();
    process.set_user(who.to_oci());
    process.set_capabilities(Some(caps));
    process.set_no_new_privileges(Some(ctx.no_new_privs));
    out.set_process(Some(process));

    let mut linux = out.linux().clone().unwrap_or_default();
    linux.set_masked_paths(Some(paths.masked));
    linux.set_readonly_paths(Some(paths.readonly));
    linux.set_seccomp(seccomp);
    if ctx.privileged {
        let host = crate::runtime::host_devices().map_err(|source| ContainerError::Io {
            action: "list the host devices in",
            path: "/dev".into(),
            source,
        })?;
        let mut devices = linux.devices().clone().unwrap_or_default();
        for d in host {
            if !devices.iter().any(|x| x.path() == d.path()) {
                devices.push(d);
            }
        }
        linux.set_devices(Some(devices));
    }
    out.set_linux(Some(linux));

    if ctx.privileged
        && let Some(mounts) = out.mounts().clone()
    {
        out.set_mounts(Some(mounts.into_iter().map(writable_kernel_fs).collect()));
    }
    if let Some(root) = out.root_mut() {
        root.set_readonly(Some(ctx.readonly_rootfs));
    }
    Ok(())
}

fn bounding(caps: &LinuxCapabilities) -> Capabilities {
    caps.bounding().clone().unwrap_or_default()
}

/// A privileged container gets `/sys` and `/sys/fs/cgroup` read-write, as
/// under containerd and CRI-O.
fn writable_kernel_fs(mut m: Mount) -> Mount {
    let kernel_fs = matches!(m.typ().as_deref(), Some("sysfs" | "cgroup" | "cgroup2"));
    if kernel_fs && let Some(options) = m.options().clone() {
        let mut options: Vec<String> = options.into_iter().filter(|o| o != "ro").collect();
        if !options.iter().any(|o| o == "rw") {
            options.push("rw".to_string());
        }
        m.set_options(Some(options));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(options: &[&str]) -> Mount {
        let mut m = Mount::default();
        m.set_destination("/sys".into());
        m.set_typ(Some("sysfs".into()));
        m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
        m
    }

    #[test]
    fn privileged_kernel_filesystems_become_writable() {
        let m = writable_kernel_fs(sys(&["nosuid", "ro", "nodev"]));
        assert_eq!(
            m.options().clone().expect("options"),
            ["nosuid", "nodev", "rw"]
        );
        let mut tmp = sys(&["ro"]);
        tmp.set_typ(Some("tmpfs".into()));
        let m = writable_kernel_fs(tmp.clone());
        assert_eq!(m, tmp);
    }
}
