//! A minimal container rootfs made from the host's busybox: the binary,
//! the libraries `ldd` names, and every applet as a hard link (not a
//! symlink, like the upstream busybox images).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Fills `dir` (which exists) with a busybox rootfs.
pub fn busybox(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "the tests need the host's /bin/busybox");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(sub)).expect("rootfs dir");
    }
    let target = dir.join("bin/busybox");
    std::fs::copy(busybox, &target).expect("copy busybox");
    for lib in libraries(busybox) {
        let dest = dir.join(lib.strip_prefix("/").expect("absolute library path"));
        std::fs::create_dir_all(dest.parent().expect("library dir")).expect("library dir");
        std::fs::copy(&lib, &dest).expect("copy library");
    }
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        let _ = std::fs::hard_link(&target, dir.join("bin").join(applet));
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
}

fn libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}
