//! Layer tarballs built in memory, entry by entry.
//!
//! Headers are written by hand rather than through `tar::Builder`'s path
//! helpers: those refuse `..` and absolute paths, and the unpacker's tests
//! need exactly such hostile entries. Every field is fixed (mtime, owner
//! names empty) so the same entries always give the same digest.

use std::io::Write;

use sha2::{Digest, Sha256};

use super::{Blob, Error, media};

/// The mtime of every entry unless one is set: 2024-01-01T00:00:00Z. A fixed
/// value keeps digests stable from run to run.
pub const FIXED_MTIME: u64 = 1_704_067_200;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    /// A hard link; the target is an archive path, written verbatim.
    HardLink(String),
    /// A symbolic link; the target is written verbatim.
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One tar entry. `path` is written verbatim, however hostile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Entry {
    pub fn new(path: impl Into<String>, kind: Kind, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: FIXED_MTIME,
        }
    }

    pub fn owned(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// How a layer blob is compressed; each has its own OCI media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer ready to push: the blob as stored in the registry and the digest
/// of its uncompressed tar (the `diff_id` in the image config).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
    pub compression: Compression,
}

/// Collects entries in order and writes them as one tar stream.
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Adds any entry, written exactly as given.
    pub fn entry(&mut self, entry: Entry) -> &mut Self {
        self.entries.push(entry);
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(Entry::new(path, Kind::Dir, mode))
    }

    pub fn file(&mut self, path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> &mut Self {
        self.entry(Entry::new(path, Kind::File(contents.into()), mode))
    }

    pub fn hard_link(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(Entry::new(path, Kind::HardLink(target.into()), 0o755))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(Entry::new(path, Kind::Symlink(target.into()), 0o777))
    }

    /// Deletes `path` from the layers below: an empty `.wh.<name>` file
    /// next to it.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), 0o644, Vec::new())
    }

    /// Hides everything the layers below have in `dir`: the opaque marker
    /// `.wh..wh..opq` inside it.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let dir = dir.trim_end_matches('/');
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, Vec::new())
    }

    /// The uncompressed tar stream.
    pub fn tar(&self) -> Result<Vec<u8>, Error> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append(&mut builder, entry).map_err(Error::Tar)?;
        }
        builder.into_inner().map_err(Error::Tar)
    }

    /// The tar stream compressed as asked, with its digests.
    pub fn build(&self, compression: Compression) -> Result<Layer, Error> {
        let tar = self.tar()?;
        compress_layer(tar, compression)
    }
}

/// Wraps an uncompressed tar stream as a layer blob.
pub fn compress_layer(tar: Vec<u8>, compression: Compression) -> Result<Layer, Error> {
    let diff_id = sha256_digest(&tar);
    let (bytes, media_type) = match compression {
        Compression::None => (tar, media::OCI_LAYER_TAR),
        Compression::Gzip => {
            // `GzBuilder` leaves the header mtime at 0 and writes no file
            // name, so the output depends only on the input.
            let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
            enc.write_all(&tar).map_err(Error::Compress)?;
            (
                enc.finish().map_err(Error::Compress)?,
                media::OCI_LAYER_GZIP,
            )
        }
        Compression::Zstd => (
            zstd::encode_all(tar.as_slice(), 3).map_err(Error::Compress)?,
            media::OCI_LAYER_ZSTD,
        ),
    };
    Ok(Layer {
        blob: Blob::new(media_type, bytes),
        diff_id,
        compression,
    })
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    let (ty, data): (tar::EntryType, &[u8]) = match &entry.kind {
        Kind::Dir => (tar::EntryType::Directory, &[]),
        Kind::File(data) => (tar::EntryType::Regular, data),
        Kind::HardLink(_) => (tar::EntryType::Link, &[]),
        Kind::Symlink(_) => (tar::EntryType::Symlink, &[]),
        Kind::CharDevice { .. } => (tar::EntryType::Char, &[]),
        Kind::Fifo => (tar::EntryType::Fifo, &[]),
    };
    let mut path = entry.path.clone();
    if ty == tar::EntryType::Directory && !path.ends_with('/') {
        path.push('/');
    }
    if path.len() >= 100 {
        append_long(builder, tar::EntryType::GNULongName, path.as_bytes())?;
    }
    copy_truncated(&mut header.as_old_mut().name, path.as_bytes());
    if let Kind::HardLink(target) | Kind::Symlink(target) = &entry.kind {
        if target.len() >= 100 {
            append_long(builder, tar::EntryType::GNULongLink, target.as_bytes())?;
        }
        copy_truncated(&mut header.as_old_mut().linkname, target.as_bytes());
    }
    if let Kind::CharDevice { major, minor } = entry.kind {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    header.set_entry_type(ty);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data)
}

/// A GNU `././@LongLink` record carrying a name that does not fit in the
/// 100-byte header field.
fn append_long(
    builder: &mut tar::Builder<Vec<u8>>,
    ty: tar::EntryType,
    name: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    copy_truncated(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_entry_type(ty);
    header.set_mode(0o644);
    header.set_mtime(0);
    let mut data = name.to_vec();
    data.push(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

fn copy_truncated(field: &mut [u8; 100], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(tar: &[u8]) -> Vec<(String, tar::EntryType, String, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = String::from_utf8(entry.path_bytes().into_owned()).expect("utf8");
            let ty = entry.header().entry_type();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).expect("utf8"))
                .unwrap_or_default();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("data");
            out.push((path, ty, link, data));
        }
        out
    }

    #[test]
    fn hard_links_are_link_entries_and_whiteouts_are_files() {
        let mut layer = LayerBuilder::new();
        layer
            .dir("bin", 0o755)
            .file("bin/busybox", 0o755, b"elf".to_vec())
            .hard_link("bin/sh", "bin/busybox")
            .symlink("bin/ash", "busybox")
            .whiteout("etc/gone")
            .whiteout("top-level")
            .opaque("var/cache/");
        let entries = read_back(&layer.tar().expect("tar"));
        let summary: Vec<_> = entries
            .iter()
            .map(|(p, t, l, _)| (p.as_str(), *t, l.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("bin/", tar::EntryType::Directory, ""),
                ("bin/busybox", tar::EntryType::Regular, ""),
                ("bin/sh", tar::EntryType::Link, "bin/busybox"),
                ("bin/ash", tar::EntryType::Symlink, "busybox"),
                ("etc/.wh.gone", tar::EntryType::Regular, ""),
                (".wh.top-level", tar::EntryType::Regular, ""),
                ("var/cache/.wh..wh..opq", tar::EntryType::Regular, ""),
            ]
        );
        assert_eq!(entries[1].3, b"elf");
    }

    #[test]
    fn hostile_entries_are_written_verbatim() {
        let mut layer = LayerBuilder::new();
        layer
            .file("../escape", 0o644, b"out".to_vec())
            .file("/abs/file", 0o644, b"abs".to_vec())
            .symlink("evil", "/etc")
            .file("evil/through-link", 0o644, b"via".to_vec())
            .hard_link("passwd-link", "/etc/passwd");
        let entries = read_back(&layer.tar().expect("tar"));
        let summary: Vec<_> = entries
            .iter()
            .map(|(p, t, l, _)| (p.as_str(), *t, l.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("../escape", tar::EntryType::Regular, ""),
                ("/abs/file", tar::EntryType::Regular, ""),
                ("evil", tar::EntryType::Symlink, "/etc"),
                ("evil/through-link", tar::EntryType::Regular, ""),
                ("passwd-link", tar::EntryType::Link, "/etc/passwd"),
            ]
        );
    }

    #[test]
    fn long_names_round_trip() {
        let long = format!("dir/{}", "x".repeat(150));
        let target = format!("/{}", "y".repeat(120));
        let mut layer = LayerBuilder::new();
        layer
            .file(&long, 0o600, b"long".to_vec())
            .symlink("l", &target);
        let entries = read_back(&layer.tar().expect("tar"));
        assert_eq!(entries[0].0, long);
        assert_eq!(entries[0].3, b"long");
        assert_eq!(entries[1].2, target);
    }

    #[test]
    fn same_entries_give_same_digests_in_every_compression() {
        let mut layer = LayerBuilder::new();
        layer.file("a", 0o644, vec![7u8; 4096]);
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let one = layer.build(compression).expect("layer");
            let two = layer.build(compression).expect("layer");
            assert_eq!(one.blob.digest, two.blob.digest);
            assert_eq!(one.diff_id, sha256_digest(&layer.tar().expect("tar")));
        }
        let gz = layer.build(Compression::Gzip).expect("gzip");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(gz.blob.bytes.as_ref()),
            &mut plain,
        )
        .expect("gunzip");
        assert_eq!(sha256_digest(&plain), gz.diff_id);
        let zst = layer.build(Compression::Zstd).expect("zstd");
        let plain = zstd::decode_all(zst.blob.bytes.as_ref()).expect("unzstd");
        assert_eq!(sha256_digest(&plain), zst.diff_id);
        assert_eq!(gz.blob.media_type, media::OCI_LAYER_GZIP);
        assert_eq!(zst.blob.media_type, media::OCI_LAYER_ZSTD);
    }
}
