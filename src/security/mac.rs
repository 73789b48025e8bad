//! AppArmor and SELinux. yonggi applies neither (the hosts it is built
//! and tested on have neither enabled), so a config that asks for a real
//! profile or label fails at create with an error naming it, rather than
//! the container running unconfined while the user believes otherwise.
//!
//! Accepted: no profile, `unconfined`, and `RuntimeDefault` for AppArmor
//! — on a host without AppArmor the runtime's default is no profile, which
//! is what containerd does too (kubelet asks for it by default on some
//! setups). An SELinux option with any field set is refused.

use super::{Error, Profile};

/// The SELinux part of a security context (`SELinuxOption`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelinuxLabel {
    pub user: String,
    pub role: String,
    pub typ: String,
    pub level: String,
}

impl SelinuxLabel {
    fn is_empty(&self) -> bool {
        [&self.user, &self.role, &self.typ, &self.level]
            .iter()
            .all(|s| s.is_empty())
    }
}

/// Checks that nothing is asked that cannot be enforced.
pub fn check(apparmor: &Profile, selinux: Option<&SelinuxLabel>) -> Result<(), Error> {
    if let Profile::Localhost(name) = apparmor {
        return Err(Error::MacUnavailable {
            kind: "apparmor",
            profile: name.clone(),
        });
    }
    if let Some(label) = selinux.filter(|l| !l.is_empty()) {
        return Err(Error::MacUnavailable {
            kind: "selinux",
            profile: format!(
                "{}:{}:{}:{}",
                label.user, label.role, label.typ, label.level
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfined_and_default_pass() {
        check(&Profile::Unconfined, None).expect("unconfined");
        check(&Profile::RuntimeDefault, None).expect("default");
        check(&Profile::Unconfined, Some(&SelinuxLabel::default())).expect("empty label");
    }

    #[test]
    fn a_named_profile_fails_naming_it() {
        let err =
            check(&Profile::Localhost("k8s-apparmor-example".into()), None).expect_err("localhost");
        assert!(matches!(
            &err,
            Error::MacUnavailable { kind: "apparmor", profile } if profile == "k8s-apparmor-example"
        ));
        let label = SelinuxLabel {
            typ: "spc_t".into(),
            level: "s0:c1,c2".into(),
            ..Default::default()
        };
        let err = check(&Profile::Unconfined, Some(&label)).expect_err("selinux");
        assert!(matches!(
            &err,
            Error::MacUnavailable { kind: "selinux", profile } if profile.contains("spc_t")
        ));
    }
}
