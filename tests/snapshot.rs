//! Snapshots as root: overlay and copy give the same merged view, writes
//! land in the container's own layer, read-only means read-only, and
//! nothing stays mounted.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use support::daemon::require_root;
use yonggi::snapshot::{Backend, Kind, SnapshotError, Snapshotter};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("yonggi-snap-")
        .tempdir()
        .expect("tempdir")
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    fs::write(path, text).expect("write");
}

/// Two layers in the form the unpacker leaves: the top one deletes
/// `a/gone` with a whiteout and hides `b/` below it with an opaque dir.
fn layers(dir: &Path) -> Vec<PathBuf> {
    let base = dir.join("layers/base");
    write(&base.join("a/gone"), "base");
    write(&base.join("a/kept"), "base");
    write(&base.join("b/hidden"), "base");
    write(&base.join("c/replaced"), "base");
    fs::create_dir_all(base.join("d")).expect("dir");
    std::os::unix::fs::symlink("a/kept", base.join("link")).expect("symlink");
    let top = dir.join("layers/top");
    fs::create_dir_all(top.join("a")).expect("dir");
    mknod(
        &top.join("a/gone"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .expect("whiteout");
    write(&top.join("b/new"), "top");
    yonggi::runtime::sys::lsetxattr(&top.join("b"), b"trusted.overlay.opaque", b"y")
        .expect("opaque xattr");
    write(&top.join("c/replaced"), "top");
    // A file where the base had a directory.
    write(&top.join("d"), "file now");
    vec![base, top]
}

/// path -> content (files), "<dir>" or "-> target".
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .display()
                .to_string();
            let meta = fs::symlink_metadata(&path).expect("meta");
            let value = if meta.is_dir() {
                stack.push(path);
                "<dir>".to_string()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).expect("link").display())
            } else {
                fs::read_to_string(&path).expect("file")
            };
            out.insert(rel, value);
        }
    }
    out
}

fn mounted_under(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.contains(&*dir.to_string_lossy())
}

/// The superblock options of the mount at `path` (mountinfo, after ` - `).
fn super_options(path: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = path.to_string_lossy();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*want))
        .filter_map(|l| l.split(" - ").nth(1))
        .filter_map(|rest| rest.split(' ').nth(2))
        .flat_map(|opts| opts.split(',').map(str::to_string))
        .collect()
}

#[test]
fn overlay_and_copy_give_the_same_merged_view() {
    require_root();
    let dir = tempdir();
    let layers = layers(dir.path());
    let want: BTreeMap<String, String> = [
        ("a", "<dir>"),
        ("a/kept", "base"),
        ("b", "<dir>"),
        ("b/new", "top"),
        ("c", "<dir>"),
        ("c/replaced", "top"),
        ("d", "file now"),
        ("link", "-> a/kept"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (backend, kind) in [
        (Backend::Overlay, Kind::Overlay),
        (Backend::Copy, Kind::Copy),
    ] {
        let snaps = Snapshotter::new(&dir.path().join(format!("{backend:?}")), backend);
        let snap = snaps.prepare("s1", &layers, false).expect("prepare");
        assert_eq!(snap.kind, kind);
        assert_eq!(tree(&snap.rootfs), want, "{backend:?}");
        snaps.remove("s1").expect("remove");
        assert!(!snap.rootfs.exists());
    }
    assert!(!mounted_under(dir.path()));
}

#[test]
fn writes_land_in_the_writable_layer_and_are_counted() {
    require_root();
    let dir = tempdir();
    let layers = layers(dir.path());
    let snaps = Snapshotter::new(dir.path(), Backend::Overlay);
    let snap = snaps.prepare("s1", &layers, false).expect("prepare");
    // Volatile: the unmount of RemoveContainer skips syncing the upper fs.
    // Linux 6.x shows it as `fsync=volatile`, older ones as `volatile`.
    let options = super_options(&snap.rootfs);
    assert!(
        options
            .iter()
            .any(|o| o == "volatile" || o == "fsync=volatile"),
        "{options:?}"
    );
    let before = snaps.usage("s1").expect("usage");
    fs::write(snap.rootfs.join("new-file"), vec![b'x'; 100 * 1024]).expect("write");
    fs::remove_file(snap.rootfs.join("a/kept")).expect("delete");
    let after = snaps.usage("s1").expect("usage");
    assert!(
        after.bytes >= before.bytes + 100 * 1024,
        "{before:?} -> {after:?}"
    );
    assert!(after.inodes >= before.inodes + 2, "{before:?} -> {after:?}");
    // The layers themselves are untouched.
    assert!(layers[0].join("a/kept").exists());
    assert!(!layers[1].join("new-file").exists());
    // Unmount and remount keep the writes.
    snaps.unmount("s1").expect("unmount");
    assert!(!snap.rootfs.join("new-file").exists());
    snaps.unmount("s1").expect("unmount twice");
    // A clean unmount clears overlayfs' volatile mark: it mounts again.
    snaps.remount("s1", &layers).expect("remount");
    assert_eq!(
        fs::metadata(snap.rootfs.join("new-file"))
            .expect("kept")
            .size(),
        100 * 1024
    );
    snaps.remove("s1").expect("remove");
    snaps.remove("s1").expect("remove twice");
    assert!(!mounted_under(dir.path()));
}

#[test]
fn read_only_snapshots_refuse_writes() {
    require_root();
    let dir = tempdir();
    let layers = layers(dir.path());
    let snaps = Snapshotter::new(dir.path(), Backend::Overlay);
    for (id, layers) in [("two", &layers[..]), ("one", &layers[..1])] {
        let snap = snaps.prepare(id, layers, true).expect("prepare");
        assert_eq!(snap.kind, Kind::OverlayReadOnly);
        let err = fs::write(snap.rootfs.join("x"), "x").expect_err("read-only");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{id}");
        assert!(snap.rootfs.join("a").exists());
        assert_eq!(snaps.usage(id).expect("usage").bytes, 0);
        snaps.remove(id).expect("remove");
    }
    assert!(!mounted_under(dir.path()));
}

/// 120 layers under long paths overflow mount(2)'s one-page option string;
/// the snapshotter names them by file descriptor instead.
#[test]
fn many_layers_with_long_paths_still_mount() {
    require_root();
    let dir = tempdir();
    let long = "l".repeat(60);
    let layers: Vec<PathBuf> = (0..120)
        .map(|i| {
            let layer = dir.path().join(format!("{long}/{long}/{i:03}"));
            write(&layer.join(format!("f{i}")), &i.to_string());
            layer
        })
        .collect();
    let total: usize = layers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(total > 4096, "the test must overflow a page ({total})");
    let snaps = Snapshotter::new(dir.path(), Backend::Overlay);
    let snap = snaps.prepare("s1", &layers, false).expect("prepare");
    assert_eq!(snap.kind, Kind::Overlay);
    assert_eq!(
        fs::read_to_string(snap.rootfs.join("f0")).expect("bottom"),
        "0"
    );
    assert_eq!(
        fs::read_to_string(snap.rootfs.join("f119")).expect("top"),
        "119"
    );
    snaps.remove("s1").expect("remove");
    assert!(!mounted_under(dir.path()));
}

#[test]
fn bad_requests_change_nothing() {
    require_root();
    let dir = tempdir();
    let layers = layers(dir.path());
    let snaps = Snapshotter::new(dir.path(), Backend::Auto);
    for id in ["", "../x", "a/b", "."] {
        assert!(matches!(
            snaps.prepare(id, &layers, false),
            Err(SnapshotError::InvalidId(_))
        ));
    }
    assert!(matches!(
        snaps.prepare("s1", &[], false),
        Err(SnapshotError::NoLayers)
    ));
    let missing = vec![dir.path().join("nope")];
    assert!(matches!(
        snaps.prepare("s1", &missing, false),
        Err(SnapshotError::BadLayer { .. })
    ));
    assert!(!dir.path().join("snapshots/s1").exists());
    snaps.prepare("s1", &layers, false).expect("prepare");
    assert!(matches!(
        snaps.prepare("s1", &layers, false),
        Err(SnapshotError::Exists(_))
    ));
    assert!(matches!(snaps.usage("s2"), Err(SnapshotError::NotFound(_))));
    snaps.remove("s1").expect("remove");
    assert!(!mounted_under(dir.path()));
}

/// A snapshot for a user namespace: overlay with idmapped lower layers,
/// and the copy chowned, show the same tree with the image's root files
/// owned by the namespace's root, and a setuid bit survives the chown.
#[test]
fn idmapped_snapshots_shift_ownership_in_both_backends() {
    use yonggi::runtime::namespace::{NsKind, ns_file, release_all};
    use yonggi::runtime::userns::{IdMap, UsernsRequest, create};
    use yonggi::snapshot::{IdRange, Idmap};
    require_root();
    let dir = tempdir();
    let layers = layers(dir.path());
    fs::set_permissions(
        layers[0].join("a/kept"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .expect("setuid bit");
    std::os::unix::fs::lchown(layers[1].join("c/replaced"), Some(1000), Some(1001)).expect("chown");
    let base = 300_000;
    let ns = dir.path().join("ns");
    fs::create_dir(&ns).expect("ns dir");
    let map = IdMap {
        container_id: 0,
        host_id: base,
        size: 65536,
    };
    create(&UsernsRequest {
        dir: ns.clone(),
        uid: map,
        gid: map,
        kinds: vec![],
    })
    .expect("user namespace");
    let range = IdRange {
        container_id: 0,
        host_id: base,
        size: 65536,
    };
    let idmap = Idmap {
        userns: ns_file(&ns, NsKind::User),
        uid: range,
        gid: range,
    };
    let mut trees = Vec::new();
    for (backend, kind) in [
        (Backend::Overlay, Kind::Overlay),
        (Backend::Copy, Kind::Copy),
    ] {
        let snaps = Snapshotter::new(&dir.path().join(format!("{backend:?}")), backend);
        let snap = snaps
            .prepare_idmapped("c1", &layers, &idmap)
            .expect("prepare");
        assert_eq!(snap.kind, kind);
        for path in ["", "a", "a/kept", "link"] {
            let meta = fs::symlink_metadata(snap.rootfs.join(path)).expect("stat");
            assert_eq!((meta.uid(), meta.gid()), (base, base), "{backend:?} {path}");
        }
        let other = fs::metadata(snap.rootfs.join("c/replaced")).expect("stat");
        assert_eq!((other.uid(), other.gid()), (base + 1000, base + 1001));
        let kept = fs::metadata(snap.rootfs.join("a/kept")).expect("stat");
        assert_eq!(kept.mode() & 0o7777, 0o4755, "{backend:?}");
        fs::write(snap.rootfs.join("new"), "x").expect("write as host root");
        trees.push(tree(&snap.rootfs));
        snaps.remove("c1").expect("remove");
    }
    assert_eq!(trees[0], trees[1]);
    // The layers themselves are untouched.
    assert_eq!(
        fs::metadata(layers[0].join("a/kept")).expect("stat").uid(),
        0
    );
    release_all(&ns).expect("release");
}
