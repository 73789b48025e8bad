use std::os::unix::fs::{FileTypeExt, MetadataExt};

use rand::{Rng, SeedableRng};

use super::*;

/// One tar entry, with the name written raw so tests can build archives no
/// well-behaved tar writer would produce.
struct E<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
    uid: u64,
}

fn e<'a>(name: &'a str, kind: tar::EntryType) -> E<'a> {
    E {
        name,
        kind,
        link: "",
        data: b"",
        mode: if kind.is_dir() { 0o755 } else { 0o644 },
        uid: 0,
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        data,
        ..e(name, tar::EntryType::Regular)
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> E<'a> {
    E {
        link: target,
        ..e(name, kind)
    }
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        }
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.uid);
        header.set_mtime(1_000_000_000);
        if matches!(entry.kind, tar::EntryType::Char | tar::EntryType::Fifo) {
            header.set_device_major(1).expect("major");
            header.set_device_minor(3).expect("minor");
        }
        header.set_cksum();
        out.append(&header, entry.data).expect("append");
    }
    out.into_inner().expect("finish tar")
}

fn diff_id(tar: &[u8]) -> Digest {
    Digest::of(tar)
}

fn run(tar: &[u8], dest: &Path) -> Result<u64, UnpackError> {
    unpack(tar, dest, &diff_id(tar), &AtomicBool::new(false))
}

/// A sandbox: `outside/` must stay empty, `outside/layer` is the target.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = dir.path().join("layer");
    std::fs::create_dir(&layer).expect("layer dir");
    (dir, layer)
}

fn outside_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read sandbox")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "layer")
        .collect();
    names.sort();
    names
}

#[test]
fn unpacks_files_dirs_links_devices_and_metadata() {
    let (_dir, layer) = sandbox();
    let tar = tar_of(&[
        e("etc/", tar::EntryType::Directory),
        E {
            uid: 1000,
            mode: 0o4755,
            ..file("bin/tool", b"#!/bin/sh\n")
        },
        link("bin/tool2", tar::EntryType::Link, "bin/tool"),
        link("bin/sh", tar::EntryType::Symlink, "/bin/tool"),
        e("dev/null", tar::EntryType::Char),
        e("run/fifo", tar::EntryType::Fifo),
        file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    ]);
    let size = run(&tar, &layer).expect("unpack");
    assert_eq!(size, tar.len() as u64);
    let tool = std::fs::metadata(layer.join("bin/tool")).expect("tool");
    assert_eq!(tool.mode() & 0o7777, 0o4755, "set-uid survives chown");
    assert_eq!(tool.uid(), 1000);
    assert_eq!(tool.mtime(), 1_000_000_000);
    let tool2 = std::fs::metadata(layer.join("bin/tool2")).expect("tool2");
    assert_eq!(tool.ino(), tool2.ino(), "hard link shares the inode");
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).expect("symlink"),
        Path::new("/bin/tool")
    );
    let null = std::fs::symlink_metadata(layer.join("dev/null")).expect("dev");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(layer.join("run/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        std::fs::metadata(layer.join("etc")).expect("etc").mtime(),
        1_000_000_000
    );
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let (_dir, layer) = sandbox();
    let tar = tar_of(&[
        file("a/.wh.gone", b""),
        file("b/.wh..wh..opq", b""),
        file("b/kept", b"x"),
    ]);
    run(&tar, &layer).expect("unpack");
    let gone = std::fs::symlink_metadata(layer.join("a/gone")).expect("whiteout");
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!layer.join("a/.wh.gone").exists());
    assert_eq!(
        xattr::get(layer.join("b"), "trusted.overlay.opaque")
            .expect("xattr")
            .as_deref(),
        Some(b"y".as_slice())
    );
    assert!(!layer.join("b/.wh..wh..opq").exists());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let (_dir, layer) = sandbox();
    let tar = tar_of(&[
        file("x", b"first"),
        file("x", b"second"),
        e("d", tar::EntryType::Directory),
        file("d/f", b""),
        file("d", b"now a file"),
    ]);
    run(&tar, &layer).expect("unpack");
    assert_eq!(std::fs::read(layer.join("x")).expect("x"), b"second");
    assert_eq!(std::fs::read(layer.join("d")).expect("d"), b"now a file");
}

fn assert_refused(entries: &[E<'_>], entry: &str) {
    let (dir, layer) = sandbox();
    let tar = tar_of(entries);
    match run(&tar, &layer) {
        Err(UnpackError::Unsafe { entry: got, .. }) => assert_eq!(got, entry),
        other => panic!("expected {entry:?} to be refused, got {other:?}"),
    }
    assert!(
        outside_entries(dir.path()).is_empty(),
        "nothing written outside"
    );
}

#[test]
fn parent_dir_escape_is_refused() {
    assert_refused(&[file("../evil", b"x")], "../evil");
    assert_refused(&[file("a/../../evil", b"x")], "a/../../evil");
}

#[test]
fn absolute_path_is_refused() {
    assert_refused(&[file("/evil", b"x")], "/evil");
}

#[test]
fn path_through_a_symlink_is_refused() {
    assert_refused(
        &[
            link("esc", tar::EntryType::Symlink, ".."),
            file("esc/evil", b"x"),
        ],
        "esc/evil",
    );
    assert_refused(
        &[
            link("esc", tar::EntryType::Symlink, "/tmp"),
            file("esc/evil", b"x"),
        ],
        "esc/evil",
    );
    assert_refused(
        &[
            link("esc", tar::EntryType::Symlink, ".."),
            file("esc/.wh..wh..opq", b""),
        ],
        "esc/.wh..wh..opq",
    );
}

#[test]
fn hard_link_outside_is_refused() {
    assert_refused(&[link("pw", tar::EntryType::Link, "../outside")], "pw");
    assert_refused(&[link("pw", tar::EntryType::Link, "/etc/passwd")], "pw");
    assert_refused(
        &[
            link("esc", tar::EntryType::Symlink, "/etc"),
            link("pw", tar::EntryType::Link, "esc/passwd"),
        ],
        "pw",
    );
}

#[test]
fn symlink_replaced_by_file_is_not_followed() {
    let (dir, layer) = sandbox();
    let victim = dir.path().join("victim");
    let tar = tar_of(&[
        link(
            "f",
            tar::EntryType::Symlink,
            victim.to_str().expect("utf-8"),
        ),
        file("f", b"inside"),
    ]);
    run(&tar, &layer).expect("unpack");
    assert!(
        !victim.exists(),
        "the file replaced the link, not its target"
    );
    assert_eq!(std::fs::read(layer.join("f")).expect("f"), b"inside");
}

#[test]
fn wrong_diff_id_is_refused() {
    let (_dir, layer) = sandbox();
    let tar = tar_of(&[file("a", b"a")]);
    let err = unpack(
        tar.as_slice(),
        &layer,
        &Digest::of(b"other"),
        &AtomicBool::new(false),
    )
    .expect_err("diff id mismatch");
    assert!(matches!(err, UnpackError::DiffId { .. }), "{err}");
}

#[test]
fn gzip_and_zstd_layers_unpack_and_hash_uncompressed() {
    use std::io::Write;
    let tar = tar_of(&[file("hello", b"world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = zstd::encode_all(tar.as_slice(), 1).expect("zstd");
    for compressed in [gz, zst] {
        let (_dir, layer) = sandbox();
        unpack(
            compressed.as_slice(),
            &layer,
            &diff_id(&tar),
            &AtomicBool::new(false),
        )
        .expect("unpack");
        assert_eq!(std::fs::read(layer.join("hello")).expect("hello"), b"world");
    }
}

#[test]
fn cancellation_stops_the_unpack() {
    let (_dir, layer) = sandbox();
    let tar = tar_of(&[file("a", b"a")]);
    let err = unpack(
        tar.as_slice(),
        &layer,
        &diff_id(&tar),
        &AtomicBool::new(true),
    )
    .expect_err("cancelled");
    assert!(matches!(err, UnpackError::Cancelled));
}

#[test]
fn mutated_archives_never_write_outside() {
    // Deterministic fuzzing: flip bytes of a hostile-looking archive and check
    // the unpacker never panics and never writes next to the layer.
    let base = tar_of(&[
        link("l", tar::EntryType::Symlink, ".."),
        e("d", tar::EntryType::Directory),
        file("d/f", b"data"),
        link("h", tar::EntryType::Link, "d/f"),
        file("a/.wh.x", b""),
    ]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let mut tar = base.clone();
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(0..1536);
            tar[i] = match rng.random_range(0..4) {
                0 => b'.',
                1 => b'/',
                2 => 0,
                _ => rng.random(),
            };
        }
        // Keep header checksums valid so the mutation reaches the unpacker.
        for block in [0usize, 512, 1024] {
            if let Some(h) = tar.get_mut(block..block + 512) {
                let header = tar::Header::from_byte_slice(h);
                let mut header = header.clone();
                header.set_cksum();
                h.copy_from_slice(header.as_bytes());
            }
        }
        let (dir, layer) = sandbox();
        let _ = unpack(
            tar.as_slice(),
            &layer,
            &diff_id(&tar),
            &AtomicBool::new(false),
        );
        assert!(
            outside_entries(dir.path()).is_empty(),
            "wrote outside: {:?}",
            outside_entries(dir.path())
        );
    }
}
