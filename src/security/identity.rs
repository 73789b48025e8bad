//! Who the container's process runs as: the uid, the primary gid and the
//! additional gids, from the CRI security context or else the image's
//! `USER`, with names looked up in the image's own `/etc/passwd` and
//! `/etc/group` (read inside its rootfs, see `files`).
//!
//! Precedence, as containerd has it: `run_as_user` (uid) or else
//! `run_as_username` replaces the image's `USER` entirely, group part
//! included; `run_as_group` sets the primary group and needs one of them.
//! Without a group, the primary gid is the user's in `/etc/passwd`, or 0
//! for a uid the image does not list. A name the image does not know is an
//! error; an unlisted uid is not (images commonly run as arbitrary uids).
//! The additional gids start with the primary gid, then (policy `Merge`)
//! the groups of `/etc/group` that list the user by name, then the
//! config's supplemental groups, without duplicates.

use std::path::Path;

use oci_spec::runtime::User;

use super::Error;
use super::files::read_in_root;

/// What to do with the groups the image's `/etc/group` gives the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum GroupsPolicy {
    /// Add them to the supplemental groups (the CRI default).
    #[default]
    Merge,
    /// Use only the primary gid and the config's supplemental groups.
    Strict,
}

/// The identity part of a container's security context.
#[derive(Debug, Clone, Default)]
pub struct UserRequest<'a> {
    pub run_as_user: Option<u32>,
    /// Ignored when empty (the CRI's default string).
    pub run_as_username: Option<&'a str>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: &'a [u32],
    pub policy: GroupsPolicy,
    /// The image config's `User` (`uid`, `name`, `uid:gid`, `name:group`).
    pub image_user: Option<&'a str>,
}

/// The resolved identity. `ContainerStatus.user` reports `uid`, `gid` and
/// `additional_gids` as its supplemental groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first, then the supplemental groups.
    pub additional_gids: Vec<u32>,
    /// The user's name in the image, when it lists the uid.
    pub username: Option<String>,
}

impl Identity {
    /// The OCI `process.user`.
    pub fn to_oci(&self) -> User {
        let mut user = User::default();
        user.set_uid(self.uid);
        user.set_gid(self.gid);
        user.set_additional_gids(Some(self.additional_gids.clone()));
        user
    }
}

/// A CRI `int64` uid or gid (`what`: "user", "group") as a Linux id; the
/// kernel reserves `u32::MAX` as "no id".
pub fn id_from_cri(value: i64, what: &'static str) -> Result<u32, Error> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or(Error::InvalidId { what, value })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Id(u32),
    Name(String),
}

impl Who {
    fn parse(s: &str) -> Who {
        match s.parse::<u32>() {
            Ok(id) => Who::Id(id),
            Err(_) => Who::Name(s.to_string()),
        }
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Lines of a colon-separated database, comments, blanks and NIS markers
/// skipped.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The image's user databases, read once and only when needed.
struct Databases<'a> {
    rootfs: &'a Path,
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

impl Databases<'_> {
    fn passwd(&mut self) -> Result<&[PasswdEntry], Error> {
        if self.passwd.is_none() {
            let text = read_in_root(self.rootfs, "etc/passwd")
                .map_err(|source| Error::ReadImageFile {
                    file: "/etc/passwd",
                    source,
                })?
                .unwrap_or_default();
            self.passwd = Some(parse_passwd(&text));
        }
        Ok(self.passwd.as_deref().unwrap_or_default())
    }

    fn group(&mut self) -> Result<&[GroupEntry], Error> {
        if self.group.is_none() {
            let text = read_in_root(self.rootfs, "etc/group")
                .map_err(|source| Error::ReadImageFile {
                    file: "/etc/group",
                    source,
                })?
                .unwrap_or_default();
            self.group = Some(parse_group(&text));
        }
        Ok(self.group.as_deref().unwrap_or_default())
    }
}

/// Splits an image `USER` into user and optional group.
fn parse_image_user(spec: &str) -> Result<(Who, Option<Who>), Error> {
    let invalid = |reason| Error::InvalidUser {
        user: spec.to_string(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(invalid("the user part is empty"));
    }
    if group.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(invalid("expected user or user:group"));
    }
    Ok((Who::parse(user), group.map(Who::parse)))
}

/// Resolves the identity of a container whose rootfs is at `rootfs`.
pub fn resolve(rootfs: &Path, req: &UserRequest<'_>) -> Result<Identity, Error> {
    let username = req.run_as_username.filter(|n| !n.is_empty());
    if req.run_as_group.is_some() && req.run_as_user.is_none() && username.is_none() {
        return Err(Error::GroupWithoutUser);
    }
    let (user, group) = if let Some(uid) = req.run_as_user {
        (Who::Id(uid), req.run_as_group.map(Who::Id))
    } else if let Some(name) = username {
        (Who::Name(name.to_string()), req.run_as_group.map(Who::Id))
    } else {
        match req.image_user.filter(|u| !u.is_empty()) {
            Some(spec) => parse_image_user(spec)?,
            None => (Who::Id(0), None),
        }
    };
    let mut db = Databases {
        rootfs,
        passwd: None,
        group: None,
    };
    let (uid, passwd_gid, name) = match &user {
        Who::Name(name) => {
            let entry = db
                .passwd()?
                .iter()
                .find(|e| &e.name == name)
                .ok_or_else(|| Error::UnknownUser(name.clone()))?;
            (entry.uid, entry.gid, Some(entry.name.clone()))
        }
        Who::Id(uid) => match db.passwd()?.iter().find(|e| e.uid == *uid) {
            Some(entry) => (*uid, entry.gid, Some(entry.name.clone())),
            None => (*uid, 0, None),
        },
    };
    let gid = match &group {
        None => passwd_gid,
        Some(Who::Id(gid)) => *gid,
        Some(Who::Name(group)) => db
            .group()?
            .iter()
            .find(|g| &g.name == group)
            .map(|g| g.gid)
            .ok_or_else(|| Error::UnknownGroup(group.clone()))?,
    };
    let mut additional_gids = vec![gid];
    let mut add = |g: u32| {
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    };
    if req.policy == GroupsPolicy::Merge
        && let Some(name) = &name
    {
        for g in db.group()? {
            if g.members.iter().any(|m| m == name) {
                add(g.gid);
            }
        }
    }
    for g in req.supplemental_groups {
        add(*g);
    }
    Ok(Identity {
        uid,
        gid,
        additional_gids,
        username: name,
    })
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
