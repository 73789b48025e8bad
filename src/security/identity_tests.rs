use std::os::unix::fs::symlink;

use super::*;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www:x:33:33:www:/var/www:/bin/sh
alice:x:1000:1000::/home/alice:/bin/sh
broken line
bob:x:1001:100::/home/bob:/bin/sh
";

const GROUP: &str = "\
root:x:0:
daemon:x:1:
www:x:33:alice
users:x:100:alice,bob
alice:x:1000:
video:x:44:alice
staff:x:50:
";

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
    std::fs::write(dir.path().join("etc/passwd"), PASSWD).expect("passwd");
    std::fs::write(dir.path().join("etc/group"), GROUP).expect("group");
    dir
}

fn image(user: &str) -> UserRequest<'_> {
    UserRequest {
        image_user: Some(user),
        ..Default::default()
    }
}

#[test]
fn no_user_anywhere_is_root() {
    let root = rootfs();
    let id = resolve(root.path(), &UserRequest::default()).expect("resolve");
    assert_eq!((id.uid, id.gid), (0, 0));
    assert_eq!(id.additional_gids, vec![0]);
    assert_eq!(id.username.as_deref(), Some("root"));
}

#[test]
fn image_user_in_every_form() {
    let root = rootfs();
    let cases: &[(&str, u32, u32)] = &[
        ("alice", 1000, 1000),
        ("1000", 1000, 1000),
        ("1000:50", 1000, 50),
        ("alice:50", 1000, 50),
        ("alice:staff", 1000, 50),
        ("bob", 1001, 100),
        // A uid the image does not list: gid 0, no error.
        ("4242", 4242, 0),
        ("4242:4243", 4242, 4243),
    ];
    for (user, uid, gid) in cases {
        let id = resolve(root.path(), &image(user)).expect(user);
        assert_eq!((id.uid, id.gid), (*uid, *gid), "image user {user}");
        assert_eq!(id.additional_gids.first(), Some(gid), "image user {user}");
    }
}

#[test]
fn unknown_names_are_errors() {
    let root = rootfs();
    assert!(matches!(
        resolve(root.path(), &image("mallory")),
        Err(Error::UnknownUser(n)) if n == "mallory"
    ));
    assert!(matches!(
        resolve(root.path(), &image("alice:nogroup")),
        Err(Error::UnknownGroup(n)) if n == "nogroup"
    ));
    let req = UserRequest {
        run_as_username: Some("mallory"),
        ..Default::default()
    };
    assert!(matches!(
        resolve(root.path(), &req),
        Err(Error::UnknownUser(_))
    ));
    for bad in [":100", "alice:", "a:b:c"] {
        assert!(
            matches!(
                resolve(root.path(), &image(bad)),
                Err(Error::InvalidUser { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn a_name_without_passwd_is_an_error_and_a_uid_is_not() {
    let root = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        resolve(root.path(), &image("alice")),
        Err(Error::UnknownUser(_))
    ));
    let id = resolve(root.path(), &image("1234")).expect("uid");
    assert_eq!((id.uid, id.gid, id.additional_gids), (1234, 0, vec![0]));
}

#[test]
fn config_overrides_the_image_user_and_its_group() {
    let root = rootfs();
    let req = UserRequest {
        run_as_user: Some(33),
        image_user: Some("alice:50"),
        ..Default::default()
    };
    let id = resolve(root.path(), &req).expect("resolve");
    assert_eq!((id.uid, id.gid), (33, 33));
    assert_eq!(id.username.as_deref(), Some("www"));

    let req = UserRequest {
        run_as_username: Some("bob"),
        run_as_group: Some(7),
        image_user: Some("alice"),
        ..Default::default()
    };
    let id = resolve(root.path(), &req).expect("resolve");
    assert_eq!((id.uid, id.gid), (1001, 7));

    // An empty username is the CRI's "unset".
    let req = UserRequest {
        run_as_username: Some(""),
        image_user: Some("alice"),
        ..Default::default()
    };
    assert_eq!(resolve(root.path(), &req).expect("resolve").uid, 1000);
}

#[test]
fn run_as_group_needs_a_user() {
    let root = rootfs();
    let req = UserRequest {
        run_as_group: Some(100),
        image_user: Some("alice"),
        ..Default::default()
    };
    assert!(matches!(
        resolve(root.path(), &req),
        Err(Error::GroupWithoutUser)
    ));
    let req = UserRequest {
        run_as_user: Some(1000),
        run_as_group: Some(100),
        ..Default::default()
    };
    let id = resolve(root.path(), &req).expect("resolve");
    assert_eq!((id.uid, id.gid), (1000, 100));
}

#[test]
fn supplemental_groups_merge_and_strict() {
    let root = rootfs();
    let merge = UserRequest {
        run_as_user: Some(1000),
        supplemental_groups: &[5000, 44, 5000],
        ..Default::default()
    };
    let id = resolve(root.path(), &merge).expect("merge");
    // Primary, then the image's groups listing alice, then the config's.
    assert_eq!(id.additional_gids, vec![1000, 33, 100, 44, 5000]);

    let strict = UserRequest {
        policy: GroupsPolicy::Strict,
        ..merge.clone()
    };
    let id = resolve(root.path(), &strict).expect("strict");
    assert_eq!(id.additional_gids, vec![1000, 5000, 44]);

    // A uid the image does not name has no image groups to merge.
    let unnamed = UserRequest {
        run_as_user: Some(777),
        supplemental_groups: &[9],
        ..Default::default()
    };
    let id = resolve(root.path(), &unnamed).expect("unnamed");
    assert_eq!(id.additional_gids, vec![0, 9]);
}

#[test]
fn a_symlinked_passwd_never_reads_the_host() {
    // The "host" passwd: a file outside the rootfs naming a user the image
    // does not have. Following the link on the host would find it.
    let host = tempfile::tempdir().expect("tempdir");
    let host_passwd = host.path().join("passwd");
    std::fs::write(&host_passwd, "intruder:x:0:0::/:/bin/sh\n").expect("write");
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("etc")).expect("mkdir");
    symlink(&host_passwd, root.path().join("etc/passwd")).expect("symlink");
    assert!(matches!(
        resolve(root.path(), &image("intruder")),
        Err(Error::UnknownUser(_))
    ));
    let dots = format!("../../../../../../../..{}", host_passwd.display());
    std::fs::remove_file(root.path().join("etc/passwd")).expect("rm");
    symlink(&dots, root.path().join("etc/passwd")).expect("symlink");
    assert!(matches!(
        resolve(root.path(), &image("intruder")),
        Err(Error::UnknownUser(_))
    ));
    // Whereas a link inside the image is the image's own file.
    std::fs::write(root.path().join("etc/passwd.real"), PASSWD).expect("write");
    std::fs::remove_file(root.path().join("etc/passwd")).expect("rm");
    symlink("passwd.real", root.path().join("etc/passwd")).expect("symlink");
    assert_eq!(
        resolve(root.path(), &image("alice")).expect("alice").uid,
        1000
    );
}

#[test]
fn to_oci_carries_every_id() {
    let root = rootfs();
    let req = UserRequest {
        run_as_user: Some(1001),
        supplemental_groups: &[7],
        ..Default::default()
    };
    let user = resolve(root.path(), &req).expect("resolve").to_oci();
    assert_eq!((user.uid(), user.gid()), (1001, 100));
    assert_eq!(user.additional_gids().as_deref(), Some(&[100, 7][..]));
}

#[test]
fn cri_ids_are_range_checked() {
    assert_eq!(id_from_cri(0, "user").expect("0"), 0);
    assert_eq!(id_from_cri(65534, "group").expect("nobody"), 65534);
    for bad in [-1, i64::from(u32::MAX), i64::MAX] {
        assert!(
            matches!(id_from_cri(bad, "group"), Err(Error::InvalidId { what: "group", value }) if value == bad),
            "{bad}"
        );
    }
}
