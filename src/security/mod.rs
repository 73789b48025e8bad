//! The security context of a container, in domain terms: who it runs as,
//! what it may do (capabilities, masked and read-only paths, seccomp
//! profile choice, MAC profiles) and its user-namespace mapping. Each
//! piece turns a request (already translated from the CRI by `cri/`) into
//! the OCI runtime-spec fields the container service puts in the spec the
//! runtime applies; nothing here touches the kernel except reading the
//! image's `/etc/passwd` and `/etc/group` from its rootfs.
//!
//! Where the container service (`container/confine.rs`) calls each piece
//! (in the order the spec is built): [`identity::resolve`] → `process.user`; [`capabilities::build`]
//! (after the identity: non-root users get no effective capabilities) →
//! `process.capabilities`; [`paths::masked_and_readonly`] →
//! `linux.maskedPaths`/`linux.readonlyPaths`; [`mac::check`] before
//! anything is created; [`userns::mappings`] → `linux.uidMappings`/
//! `linux.gidMappings` (and a user namespace); the seccomp profile is
//! resolved by `runtime::seccomp`.

pub mod capabilities;
mod context;
mod files;
pub mod identity;
pub mod mac;
pub mod paths;
pub mod userns;

pub use context::SecurityContext;

/// A seccomp or AppArmor profile choice, as the CRI's `SecurityProfile`
/// (or its deprecated string form) names it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Profile {
    /// No confinement (the CRI's default when nothing is set).
    #[default]
    Unconfined,
    /// The runtime's built-in profile.
    RuntimeDefault,
    /// A profile on the node: for seccomp an absolute path of a JSON file,
    /// for AppArmor a loaded profile's name.
    Localhost(String),
}

impl Profile {
    /// The deprecated string form (`seccomp_profile_path`,
    /// `apparmor_profile`): empty or `unconfined`, `runtime/default` (or
    /// Docker's `docker/default`), `localhost/<ref>`.
    pub fn from_legacy(s: &str) -> Result<Profile, Error> {
        match s {
            "" | "unconfined" => Ok(Profile::Unconfined),
            "runtime/default" | "docker/default" => Ok(Profile::RuntimeDefault),
            _ => match s.strip_prefix("localhost/") {
                Some(r) if !r.is_empty() => Ok(Profile::Localhost(r.to_string())),
                _ => Err(Error::InvalidProfile(s.to_string())),
            },
        }
    }
}

/// What can be wrong with a security context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run_as_group is set without run_as_user or run_as_username")]
    GroupWithoutUser,
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    #[error("invalid {what} id {value}: must be between 0 and 4294967294")]
    InvalidId { what: &'static str, value: i64 },
    #[error("invalid user {user:?}: {reason}")]
    InvalidUser { user: String, reason: &'static str },
    #[error("reading {file} in the container's rootfs")]
    ReadImageFile {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("masked or read-only path {0:?} must be absolute, without `..`")]
    InvalidPath(String),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("capability {0} is not available to the runtime on this node")]
    CapabilityUnavailable(String),
    #[error("ambient capability {0} is not in the container's capabilities")]
    AmbientOutsideBounding(String),
    #[error(
        "{kind} profile {profile:?} requested, but yonggi cannot apply {kind} profiles on this host"
    )]
    MacUnavailable { kind: &'static str, profile: String },
    #[error("invalid profile name {0:?}: expected unconfined, runtime/default or localhost/<name>")]
    InvalidProfile(String),
    #[error("invalid user namespace mapping: {0}")]
    InvalidMapping(String),
    #[error("user namespace mode {0} is not supported (only NODE and POD are)")]
    UnsupportedUsernsMode(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_profile_strings() {
        assert_eq!(
            Profile::from_legacy("").expect("empty"),
            Profile::Unconfined
        );
        assert_eq!(
            Profile::from_legacy("unconfined").expect("unconfined"),
            Profile::Unconfined
        );
        for d in ["runtime/default", "docker/default"] {
            assert_eq!(Profile::from_legacy(d).expect(d), Profile::RuntimeDefault);
        }
        assert_eq!(
            Profile::from_legacy("localhost//etc/p.json").expect("localhost"),
            Profile::Localhost("/etc/p.json".to_string())
        );
        for bad in ["localhost/", "default", "/etc/p.json"] {
            assert!(
                matches!(Profile::from_legacy(bad), Err(Error::InvalidProfile(_))),
                "{bad}"
            );
        }
    }
}
