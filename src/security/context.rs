//! A container's whole security context in domain terms, as `cri/`
//! translates it from the CRI's `LinuxContainerSecurityContext`, with the
//! request views each building block takes.

use super::capabilities::CapabilityRequest;
use super::identity::{GroupsPolicy, UserRequest};
use super::mac::SelinuxLabel;
use super::paths::ProcPaths;
use super::userns::{IdMapping, UsernsMode, UsernsRequest};
use super::{Error, Profile};

/// Stored with the container record: every field defaults, so a record
/// written before a field existed still loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SecurityContext {
    pub run_as_user: Option<u32>,
    /// Empty: not set.
    pub run_as_username: String,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    pub groups_policy: GroupsPolicy,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub cap_add_ambient: Vec<String>,
    /// Kubelet's lists; empty: the defaults.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub no_new_privs: bool,
    pub readonly_rootfs: bool,
    pub seccomp: Profile,
    pub apparmor: Profile,
    pub selinux: Option<SelinuxLabel>,
    pub userns_mode: UsernsMode,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
}

impl SecurityContext {
    /// The identity request, `image_user` being the image config's `User`.
    pub fn user_request<'a>(&'a self, image_user: Option<&'a str>) -> UserRequest<'a> {
        UserRequest {
            run_as_user: self.run_as_user,
            run_as_username: Some(self.run_as_username.as_str()),
            run_as_group: self.run_as_group,
            supplemental_groups: &self.supplemental_groups,
            policy: self.groups_policy,
            image_user,
        }
    }

    /// The capability request for a process running as `uid`.
    pub fn capability_request(&self, uid: u32) -> CapabilityRequest<'_> {
        CapabilityRequest {
            privileged: self.privileged,
            add: &self.cap_add,
            drop: &self.cap_drop,
            add_ambient: &self.cap_add_ambient,
            uid,
            available: None,
        }
    }

    pub fn userns_request(&self) -> UsernsRequest<'_> {
        UsernsRequest {
            mode: self.userns_mode,
            uids: &self.uid_mappings,
            gids: &self.gid_mappings,
        }
    }

    /// Whether empty masked and read-only lists mean kubelet's
    /// `procMount: Unmasked` rather than "unset": kubelet sends its default
    /// lists for `Default` and allows `Unmasked` only in a user namespace.
    pub fn proc_unmasked(&self) -> bool {
        self.masked_paths.is_empty()
            && self.readonly_paths.is_empty()
            && self.userns_mode == UsernsMode::Pod
    }

    /// The masked and read-only paths of `/proc` and `/sys`.
    pub fn proc_paths(&self) -> Result<ProcPaths, Error> {
        super::paths::masked_and_readonly(
            self.privileged,
            self.proc_unmasked(),
            &self.masked_paths,
            &self.readonly_paths,
        )
    }

    /// What needs no image: MAC requests, paths, capability names and
    /// user-namespace mappings. Run before anything is created.
    pub fn validate(&self) -> Result<(), Error> {
        super::mac::check(&self.apparmor, self.selinux.as_ref())?;
        self.proc_paths()?;
        super::capabilities::build(&self.capability_request(0))?;
        super::userns::mappings(&self.userns_request())?;
        if self.run_as_group.is_some()
            && self.run_as_user.is_none()
            && self.run_as_username.is_empty()
        {
            return Err(Error::GroupWithoutUser);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_path_lists_mean_unmasked_only_in_a_user_namespace() {
        let plain = SecurityContext::default();
        assert!(!plain.proc_unmasked());
        assert!(plain.proc_paths().expect("paths").masked.len() > 1);
        let userns = SecurityContext {
            userns_mode: UsernsMode::Pod,
            ..Default::default()
        };
        assert!(userns.proc_unmasked());
        assert_eq!(userns.proc_paths().expect("paths"), ProcPaths::default());
        // kubelet's procMount: Default sends its list: still masked.
        let listed = SecurityContext {
            masked_paths: vec!["/proc/kcore".into()],
            ..userns
        };
        assert!(!listed.proc_unmasked());
        assert!(listed.proc_paths().expect("paths").readonly.len() > 1);
    }

    #[test]
    fn validate_catches_each_kind_of_mistake() {
        SecurityContext::default().validate().expect("default");
        let bad = [
            SecurityContext {
                apparmor: Profile::Localhost("p".into()),
                ..Default::default()
            },
            SecurityContext {
                masked_paths: vec!["relative".into()],
                ..Default::default()
            },
            SecurityContext {
                cap_add: vec!["CAP_NOPE".into()],
                ..Default::default()
            },
            SecurityContext {
                userns_mode: UsernsMode::Target,
                ..Default::default()
            },
            SecurityContext {
                run_as_group: Some(5),
                ..Default::default()
            },
        ];
        for ctx in bad {
            assert!(ctx.validate().is_err(), "{ctx:?}");
        }
    }
}
