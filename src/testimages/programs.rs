//! Small programs the test images carry where busybox has no applet:
//! shell versions of `pgrep` and `ipcs`, a stand-in for nginx, and `nnp`
//! (a setuid binary printing its effective uid), assembled from source here
//! because a script cannot be setuid.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use super::Error;
use super::rootfs::{read, run};

/// Debian's busybox is built without `pgrep`; critest runs `pgrep sleep`.
/// Prints the PIDs whose process name matches the pattern (a basic regular
/// expression, as grep reads it).
pub const PGREP: &str = r#"#!/bin/sh
# pgrep PATTERN: the PIDs of processes whose name matches PATTERN.
if [ "$#" -ne 1 ]; then
	echo "usage: pgrep PATTERN" >&2
	exit 2
fi
status=1
for dir in /proc/[0-9]*; do
	pid=${dir#/proc/}
	[ "$pid" = "$$" ] && continue
	name=$(cat "$dir/comm" 2>/dev/null) || continue
	if printf '%s\n' "$name" | grep -q -e "$1"; then
		echo "$pid"
		status=0
	fi
done
exit $status
"#;

/// Debian's busybox is built without `ipcs`; critest runs `ipcs -m` and looks
/// for a segment id. Lists System V shared memory from /proc/sysvipc/shm in
/// the util-linux layout.
pub const IPCS: &str = r#"#!/bin/sh
# ipcs [-m]: System V shared memory segments (the only kind shown).
for arg in "$@"; do
	case "$arg" in
	-m) ;;
	*) echo "ipcs: only -m is supported" >&2; exit 2 ;;
	esac
done
echo
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
if [ -r /proc/sysvipc/shm ]; then
	awk 'NR > 1 {
		key = $1; if (key < 0) key += 4294967296
		printf "0x%08x %-10s %-10s %-10o %-10s %-10s\n", key, $2, $8, $3, $4, $7
	}' /proc/sysvipc/shm
fi
echo
"#;

/// Stands in for nginx in critest's hard-coded `nginx:1.14-2`: busybox httpd
/// serves `/usr/share/nginx/html` on port 80 while the master stays a shell
/// whose process name is `nginx` (so `pidof nginx` finds it), writes its PID
/// to `/var/run/nginx.pid`, and carries `master process` in its command
/// line, as nginx's process title does (critest greps `/proc/1/cmdline`).
pub const NGINX: &str = r#"#!/bin/sh
# A stand-in for nginx (yonggi test image): busybox httpd on port 80.
if [ "$1" != "master process" ]; then
	exec /usr/sbin/nginx "master process" "$@"
fi
echo "$$" > /var/run/nginx.pid
httpd -f -p 80 -h /usr/share/nginx/html &
child=$!
trap 'kill "$child" 2>/dev/null; exit 0' TERM INT QUIT
wait "$child"
"#;

/// `nnp`: prints `Effective uid: <geteuid()>\n` and exits 0, as the
/// upstream nonewprivs image's program does. x86-64 Linux, no libc.
pub const NNP_ASM: &str = r#"
	.globl	_start
	.text
_start:
	mov	$107, %eax		# geteuid()
	syscall
	mov	%eax, %eax		# zero-extend the uid into rax
	sub	$64, %rsp		# the output is built backwards on the stack
	lea	63(%rsp), %rdi
	movb	$10, (%rdi)		# '\n'
	mov	$10, %ecx
1:	xor	%edx, %edx		# one decimal digit per round
	div	%rcx
	add	$48, %dl
	dec	%rdi
	mov	%dl, (%rdi)
	test	%rax, %rax
	jnz	1b
	lea	prefix(%rip), %rsi	# then the prefix in front of the digits
	mov	$15, %ecx
	sub	%rcx, %rdi
	mov	%rdi, %r8
	rep movsb
	lea	64(%rsp), %rdx		# write(1, start, end - start)
	sub	%r8, %rdx
	mov	%r8, %rsi
	mov	$1, %edi
	mov	$1, %eax
	syscall
	mov	$60, %eax		# exit(0)
	xor	%edi, %edi
	syscall
prefix:
	.ascii	"Effective uid: "
"#;

/// [`NNP_ASM`] assembled and linked with the host's binutils (`as`, `ld`),
/// once per process.
pub fn nnp_binary() -> Result<Vec<u8>, Error> {
    static CACHE: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(binary) = &*cache {
        return Ok(binary.clone());
    }
    let dir = ScratchDir::new()?;
    let source = dir.0.join("nnp.S");
    let object = dir.0.join("nnp.o");
    let binary = dir.0.join("nnp");
    std::fs::write(&source, NNP_ASM).map_err(|source_err| Error::ReadHost {
        path: source.clone(),
        source: source_err,
    })?;
    run(Command::new("as").arg("-o").arg(&object).arg(&source))?;
    run(Command::new("ld")
        .args(["-s", "-n", "-static", "-o"])
        .arg(&binary)
        .arg(&object))?;
    let bytes = read(&binary)?;
    *cache = Some(bytes.clone());
    Ok(bytes)
}

/// A private directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir, Error> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "yonggi-testimages-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(|source| Error::ReadHost {
            path: path.clone(),
            source,
        })?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    use super::*;

    /// A directory of busybox applet links, so the scripts run with the
    /// same tools they have in the image.
    fn busybox_path(dir: &std::path::Path) -> String {
        for applet in ["sh", "cat", "grep", "awk", "printf", "echo"] {
            std::os::unix::fs::symlink(super::super::rootfs::HOST_BUSYBOX, dir.join(applet))
                .expect("applet link");
        }
        dir.display().to_string()
    }

    fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn pgrep_finds_a_process_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = busybox_path(dir.path());
        let pgrep = script(dir.path(), "pgrep", PGREP);
        let mut sleeper = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let out = Command::new(&pgrep)
            .arg("^sleep$")
            .env("PATH", &path)
            .output()
            .expect("run pgrep");
        let none = Command::new(&pgrep)
            .arg("^no-such-process-name$")
            .env("PATH", &path)
            .output()
            .expect("run pgrep");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pids = String::from_utf8_lossy(&out.stdout);
        assert!(
            pids.lines().any(|l| l == sleeper.id().to_string()),
            "pid {} in {pids:?}",
            sleeper.id()
        );
        assert_eq!(none.status.code(), Some(1));
        assert!(none.stdout.is_empty());
    }

    #[test]
    fn ipcs_lists_a_shared_memory_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = busybox_path(dir.path());
        let ipcs = script(dir.path(), "ipcs", IPCS);
        let made = Command::new("ipcmk")
            .args(["-M", "4096"])
            .output()
            .expect("ipcmk");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        // "Shared memory id: 123"
        let text = String::from_utf8_lossy(&made.stdout);
        let id = text.trim().rsplit(' ').next().expect("id").to_string();
        let out = Command::new(&ipcs)
            .arg("-m")
            .env("PATH", &path)
            .output()
            .expect("run ipcs");
        let _ = Command::new("ipcrm").args(["-m", &id]).status();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("Shared Memory Segments"), "{listing}");
        let row = listing
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id.as_str()))
            .unwrap_or_else(|| panic!("segment {id} in {listing}"));
        assert_eq!(row.split_whitespace().nth(4), Some("4096"), "{row}");
    }

    #[test]
    fn nnp_prints_the_effective_uid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nnp = dir.path().join("nnp");
        std::fs::write(&nnp, nnp_binary().expect("assemble nnp")).expect("write nnp");
        std::fs::set_permissions(&nnp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out = Command::new(&nnp).output().expect("run nnp");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("Effective uid: {}\n", nix::unistd::geteuid())
        );
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // Setuid root, run as uid 1000: euid 0, unless no_new_privs is set.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        std::fs::set_permissions(&nnp, std::fs::Permissions::from_mode(0o4755)).expect("setuid");
        for (nnp_flag, expected) in [
            (false, "Effective uid: 0\n"),
            (true, "Effective uid: 1000\n"),
        ] {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=1000", "--regid=1000", "--clear-groups"]);
            if nnp_flag {
                command.arg("--no-new-privs");
            }
            let out = command.arg(&nnp).output().expect("setpriv nnp");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "no_new_privs={nnp_flag}"
            );
        }
    }
}
