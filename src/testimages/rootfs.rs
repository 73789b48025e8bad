//! The busybox base layer, taken from the host.
//!
//! Debian's dynamically linked busybox is used on purpose (see
//! ../shared/CONFORMANCE.md, "Running critest offline"): its shell execs
//! `ls` and friends as separate programs, as the upstream image's does, so
//! masking `/bin/ls` is visible. The applets are hard links, not symlinks:
//! masking a symlinked `/bin/ls` would mask `/bin/busybox` itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::layer::{Compression, Kind, Layer, LayerBuilder, compress_layer};
use super::{Error, programs};

/// The host busybox the base layer is made of.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// `/etc/passwd` of the upstream busybox image.
pub const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
";

/// `/etc/group` of the upstream busybox image.
pub const GROUP: &str = "\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
";

const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";

/// The base layer's entries: busybox, its libraries, applet hard links,
/// `pgrep` and `ipcs`, `/etc/passwd`, `/etc/group` and the usual dirs.
pub fn busybox_entries(busybox: &Path) -> Result<LayerBuilder, Error> {
    let binary = read(busybox)?;
    let libraries = shared_libraries(busybox)?;
    let applets = applets(busybox)?;

    let mut layer = LayerBuilder::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("lib", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/run", 0o755),
        ("var/spool", 0o755),
        ("var/spool/mail", 0o755),
        ("var/www", 0o755),
    ] {
        layer.dir(dir, mode);
    }
    let mut lib_dirs: Vec<String> = Vec::new();
    for lib in &libraries {
        let mut dir = String::new();
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(part);
            if !lib_dirs.contains(&dir) && !matches!(dir.as_str(), "lib" | "usr" | "usr/bin") {
                lib_dirs.push(dir.clone());
                layer.dir(&dir, 0o755);
            }
        }
        layer.file(&rel, 0o755, read(lib)?);
    }
    layer.file("bin/busybox", 0o755, binary);
    for applet in &applets {
        if applet != "busybox" {
            layer.hard_link(&format!("bin/{applet}"), "bin/busybox");
        }
    }
    for (name, script) in [("pgrep", programs::PGREP), ("ipcs", programs::IPCS)] {
        if !applets.iter().any(|a| a == name) {
            layer.file(&format!("bin/{name}"), 0o755, script);
        }
    }
    layer
        .file("etc/passwd", 0o644, PASSWD)
        .file("etc/group", 0o644, GROUP)
        .file("etc/nsswitch.conf", 0o644, NSSWITCH);
    Ok(layer)
}

/// The base layer from the host's busybox, built once per process and
/// compression.
pub fn busybox_layer(compression: Compression) -> Result<Layer, Error> {
    static CACHE: Mutex<Option<HashMap<Compression, Layer>>> = Mutex::new(None);
    static TAR: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(layer) = cache.get(&compression) {
        return Ok(layer.clone());
    }
    let tar = {
        let mut tar = TAR.lock().unwrap_or_else(|e| e.into_inner());
        match &*tar {
            Some(bytes) => bytes.clone(),
            None => {
                let bytes = busybox_entries(Path::new(HOST_BUSYBOX))?.tar()?;
                *tar = Some(bytes.clone());
                bytes
            }
        }
    };
    let layer = compress_layer(tar, compression)?;
    cache.insert(compression, layer.clone());
    Ok(layer)
}

/// The shared libraries and dynamic loader `binary` needs, as `ldd` resolves
/// them on this host.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let stdout = run(Command::new("ldd").arg(binary))?;
    Ok(parse_ldd(&stdout))
}

fn parse_ldd(output: &str) -> Vec<PathBuf> {
    let mut libraries = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, or the
        // loader alone: `/lib64/ld-linux-x86-64.so.2 (0x...)`. The vDSO
        // has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    libraries
}

/// The applet names the busybox binary was built with.
pub fn applets(busybox: &Path) -> Result<Vec<String>, Error> {
    let stdout = run(Command::new(busybox).arg("--list"))?;
    let mut applets: Vec<String> = stdout
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(String::from)
        .collect();
    applets.sort();
    applets.dedup();
    Ok(applets)
}

/// A file the base layer adds, for tests that look for one.
pub fn entry_kind<'a>(layer: &'a LayerBuilder, path: &str) -> Option<&'a Kind> {
    layer
        .entries()
        .iter()
        .find(|e| e.path == path)
        .map(|e| &e.kind)
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadHost {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn run(command: &mut Command) -> Result<String, Error> {
    let text = format!("{command:?}");
    let output = command.output().map_err(|source| Error::Command {
        command: text.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: text,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibresolv.so.2 => /lib/x86_64-linux-gnu/libresolv.so.2 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libresolv.so.2"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn base_layer_has_applets_as_hard_links_and_the_loader() {
        let layer = busybox_entries(Path::new(HOST_BUSYBOX)).expect("base layer");
        for applet in ["sh", "ls", "top", "id", "hostname", "httpd"] {
            assert_eq!(
                entry_kind(&layer, &format!("bin/{applet}")),
                Some(&Kind::HardLink("bin/busybox".into())),
                "bin/{applet}"
            );
        }
        for script in ["bin/pgrep", "bin/ipcs"] {
            match entry_kind(&layer, script) {
                Some(Kind::File(data)) => assert!(data.starts_with(b"#!/bin/sh\n"), "{script}"),
                other => panic!("{script}: {other:?}"),
            }
        }
        assert!(matches!(
            entry_kind(&layer, "lib64/ld-linux-x86-64.so.2"),
            Some(Kind::File(_))
        ));
        assert!(
            matches!(entry_kind(&layer, "etc/passwd"), Some(Kind::File(d)) if d.as_slice() == PASSWD.as_bytes())
        );
        let tmp = layer
            .entries()
            .iter()
            .find(|e| e.path == "tmp")
            .expect("tmp");
        assert_eq!(tmp.mode, 0o1777);
    }

    /// Unpacks the base layer with the host's tar and runs its shell in a
    /// chroot: the libraries and loader must be enough for busybox to run,
    /// and the passwd file must resolve names.
    #[test]
    fn base_layer_runs_in_a_chroot() {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("this test needs root (chroot); run the tests as root");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = busybox_layer(Compression::None).expect("layer").blob.bytes;
        let tar_path = dir.path().join("layer.tar");
        std::fs::write(&tar_path, &tar).expect("write tar");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root dir");
        let status = Command::new("tar")
            .arg("-xpf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&root)
            .status()
            .expect("tar");
        assert!(status.success());
        let out = Command::new("chroot")
            .arg("--userspec=65534:65534")
            .arg(&root)
            .args([
                "/bin/sh",
                "-c",
                "set -e; id -nu; id -u www-data; ls /bin/ls; echo -n hello",
            ])
            .output()
            .expect("chroot");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "nobody\n33\n/bin/ls\nhello"
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
