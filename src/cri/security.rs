//! CRI `LinuxContainerSecurityContext` → [`SecurityContext`]. Translation
//! and validation of the wire values only (ids in range, known enum
//! values, profile names); the rules live in `security/`.

use k8s_cri::v1::{
    LinuxContainerSecurityContext, NamespaceMode, SecurityProfile, SupplementalGroupsPolicy,
    security_profile::ProfileType,
};

use super::Error;
use crate::security::identity::{GroupsPolicy, id_from_cri};
use crate::security::mac::SelinuxLabel;
use crate::security::userns::{IdMapping, UsernsMode};
use crate::security::{Profile, SecurityContext};

/// A `SecurityProfile` when set, else the deprecated string form.
fn profile(
    field: &'static str,
    structured: Option<&SecurityProfile>,
    legacy: &str,
) -> Result<Profile, Error> {
    let Some(p) = structured else {
        return Ok(Profile::from_legacy(legacy)?);
    };
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(Profile::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(Profile::Unconfined),
        Ok(ProfileType::Localhost) if !p.localhost_ref.is_empty() => {
            Ok(Profile::Localhost(p.localhost_ref.clone()))
        }
        Ok(ProfileType::Localhost) => Err(Error::InvalidArgument {
            field,
            message: "profile type Localhost needs a localhost_ref".to_string(),
        }),
        Err(_) => Err(Error::InvalidArgument {
            field,
            message: format!("unknown profile type {}", p.profile_type),
        }),
    }
}

/// A CRI namespace mode as the mode of a user namespace.
pub(super) fn userns_mode(field: &'static str, raw: i32) -> Result<UsernsMode, Error> {
    match NamespaceMode::try_from(raw) {
        Ok(NamespaceMode::Pod) => Ok(UsernsMode::Pod),
        Ok(NamespaceMode::Container) => Ok(UsernsMode::Container),
        Ok(NamespaceMode::Node) => Ok(UsernsMode::Node),
        Ok(NamespaceMode::Target) => Ok(UsernsMode::Target),
        Err(_) => Err(Error::InvalidArgument {
            field,
            message: format!("unknown namespace mode {raw}"),
        }),
    }
}

/// CRI id mappings in domain terms.
pub(super) fn id_mappings(list: &[k8s_cri::v1::IdMapping]) -> Vec<IdMapping> {
    list.iter()
        .map(|m| IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect()
}

/// The container's security context (an absent one is all defaults).
// The string profile fields are deprecated, but older kubelets and crictl
// configs still send only them.
#[allow(deprecated)]
pub(crate) fn translate(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<SecurityContext, Error> {
    let Some(sc) = sc else {
        return Ok(SecurityContext::default());
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let groups_policy = match SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy) {
        Ok(SupplementalGroupsPolicy::Merge) => GroupsPolicy::Merge,
        Ok(SupplementalGroupsPolicy::Strict) => GroupsPolicy::Strict,
        Err(_) => {
            return Err(Error::InvalidArgument {
                field: "supplemental_groups_policy",
                message: format!("unknown policy {}", sc.supplemental_groups_policy),
            });
        }
    };
    let userns = sc
        .namespace_options
        .as_ref()
        .and_then(|n| n.userns_options.clone())
        .unwrap_or_default();
    // An absent UserNamespace means NODE, whatever the enum's zero is.
    let userns_mode = match sc
        .namespace_options
        .as_ref()
        .and_then(|n| n.userns_options.as_ref())
    {
        None => UsernsMode::Node,
        Some(_) => userns_mode("userns_options.mode", userns.mode)?,
    };
    Ok(SecurityContext {
        run_as_user: sc
            .run_as_user
            .map(|v| id_from_cri(v.value, "user"))
            .transpose()?,
        run_as_username: sc.run_as_username.clone(),
        run_as_group: sc
            .run_as_group
            .map(|v| id_from_cri(v.value, "group"))
            .transpose()?,
        supplemental_groups: sc
            .supplemental_groups
            .iter()
            .map(|g| id_from_cri(*g, "group"))
            .collect::<Result<_, _>>()?,
        groups_policy,
        privileged: sc.privileged,
        cap_add: caps.add_capabilities,
        cap_drop: caps.drop_capabilities,
        cap_add_ambient: caps.add_ambient_capabilities,
        masked_paths: sc.masked_paths.clone(),
        readonly_paths: sc.readonly_paths.clone(),
        no_new_privs: sc.no_new_privs,
        readonly_rootfs: sc.readonly_rootfs,
        seccomp: profile("seccomp", sc.seccomp.as_ref(), &sc.seccomp_profile_path)?,
        apparmor: profile("apparmor", sc.apparmor.as_ref(), &sc.apparmor_profile)?,
        selinux: sc.selinux_options.as_ref().map(|o| SelinuxLabel {
            user: o.user.clone(),
            role: o.role.clone(),
            typ: o.r#type.clone(),
            level: o.level.clone(),
        }),
        userns_mode,
        uid_mappings: id_mappings(&userns.uids),
        gid_mappings: id_mappings(&userns.gids),
    })
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{Capability, Int64Value, NamespaceOption, UserNamespace};

    use super::*;

    #[test]
    fn absent_context_is_the_default() {
        let ctx = translate(None).expect("none");
        assert_eq!(ctx, SecurityContext::default());
        assert_eq!(ctx.seccomp, Profile::Unconfined);
    }

    #[test]
    #[allow(deprecated)]
    fn fields_are_carried_over() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 100 }),
            supplemental_groups: vec![5, 6],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            capabilities: Some(Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["ALL".into()],
                add_ambient_capabilities: vec![],
            }),
            no_new_privs: true,
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: "/var/lib/kubelet/seccomp/p.json".into(),
            }),
            apparmor_profile: "runtime/default".into(),
            namespace_options: Some(NamespaceOption {
                userns_options: Some(UserNamespace {
                    mode: NamespaceMode::Pod as i32,
                    uids: vec![k8s_cri::v1::IdMapping {
                        host_id: 65536,
                        container_id: 0,
                        length: 65536,
                    }],
                    gids: vec![],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ctx = translate(Some(&sc)).expect("translate");
        assert_eq!((ctx.run_as_user, ctx.run_as_group), (Some(1000), Some(100)));
        assert_eq!(ctx.supplemental_groups, vec![5, 6]);
        assert_eq!(ctx.groups_policy, GroupsPolicy::Strict);
        assert_eq!(ctx.cap_drop, vec!["ALL".to_string()]);
        assert!(ctx.no_new_privs);
        assert_eq!(
            ctx.seccomp,
            Profile::Localhost("/var/lib/kubelet/seccomp/p.json".into())
        );
        assert_eq!(ctx.apparmor, Profile::RuntimeDefault);
        assert_eq!(ctx.userns_mode, UsernsMode::Pod);
        assert_eq!(ctx.uid_mappings.len(), 1);
    }

    #[test]
    #[allow(deprecated)]
    fn bad_wire_values_are_invalid_arguments() {
        let cases = [
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: -1 }),
                ..Default::default()
            },
            LinuxContainerSecurityContext {
                supplemental_groups: vec![1 << 40],
                ..Default::default()
            },
            LinuxContainerSecurityContext {
                supplemental_groups_policy: 7,
                ..Default::default()
            },
            LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::Localhost as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            },
            LinuxContainerSecurityContext {
                seccomp_profile_path: "somewhere".into(),
                ..Default::default()
            },
        ];
        for sc in cases {
            let err = translate(Some(&sc)).expect_err("invalid");
            assert_eq!(
                tonic::Status::from(err).code(),
                tonic::Code::InvalidArgument,
                "{sc:?}"
            );
        }
    }
}
