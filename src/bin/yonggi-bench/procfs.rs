//! Memory of the daemon and of its per-container helper processes, from
//! /proc, and the machine the run is on.

use std::path::Path;

use anyhow::Context;

/// Kibibytes of a `Key:   123 kB` line in a /proc status-like file.
pub fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// VmRSS of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    field_kib(&text, "VmRSS").with_context(|| format!("no VmRSS in {path}"))
}

/// RSS and PSS of `pid` from smaps_rollup, in KiB.
pub fn rss_pss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rss = field_kib(&text, "Rss").with_context(|| format!("no Rss in {path}"))?;
    let pss = field_kib(&text, "Pss").with_context(|| format!("no Pss in {path}"))?;
    Ok((rss, pss))
}

/// The helper processes a runtime keeps per pod or container (yonggi's
/// monitors and pod-init holders, containerd's shims): every process whose
/// command line contains `needle` (a path only that runtime instance
/// uses), except `exclude` (the daemon itself).
pub fn helpers(needle: &str, exclude: u32) -> anyhow::Result<Vec<u32>> {
    let mut pids = Vec::new();
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == exclude || pid == me {
            continue;
        }
        // Processes come and go while we look: a vanished one is skipped.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline_contains(&cmdline, needle) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

fn cmdline_contains(cmdline: &[u8], needle: &str) -> bool {
    let text = String::from_utf8_lossy(cmdline).replace('\0', " ");
    text.contains(needle)
}

/// The pid of the process listening on the unix socket `endpoint`
/// (`unix:///path`), from `ss -xlpn`.
pub fn socket_owner(endpoint: &str) -> anyhow::Result<u32> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let output = std::process::Command::new("ss")
        .args(["-xlpnH"])
        .output()
        .context("running ss -xlpnH")?;
    let text = String::from_utf8_lossy(&output.stdout);
    owner_in_ss(&text, path).with_context(|| format!("no process listens on {path} (ss -xlp)"))
}

/// The first `pid=N` on the line of `ss -xlpnH` whose local address is `path`.
fn owner_in_ss(text: &str, path: &str) -> Option<u32> {
    text.lines()
        .find(|line| line.split_whitespace().any(|field| field == path))
        .and_then(|line| line.split("pid=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
}

/// Cores, kernel, cgroup version, CPU model and memory, one line.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown kernel".into());
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2"
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "cgroup v1/v2 hybrid"
    } else {
        "cgroup v1"
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU")
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = field_kib(&meminfo, "MemTotal").map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    format!("{cores} cores ({model}), {mem_gib:.1} GiB RAM, Linux {kernel}, {cgroup}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tyonggi\nVmRSS:\t   12345 kB\nRssAnon:\t  100 kB\n";
        assert_eq!(field_kib(status, "VmRSS"), Some(12345));
        assert_eq!(field_kib(status, "Rss"), None, "a prefix is not the key");
        assert_eq!(field_kib(status, "RssAnon"), Some(100));
        assert_eq!(field_kib(status, "VmSwap"), None);
    }

    #[test]
    fn finds_the_socket_owner_in_ss_output() {
        let ss = "u_str LISTEN 0 4096 /run/other.sock 11 * 0 users:((\"x\",pid=5,fd=3))\n\
                  u_str LISTEN 0 4096 /tmp/b/yonggi.sock 12 * 0 users:((\"yonggi\",pid=4242,fd=9))\n";
        assert_eq!(owner_in_ss(ss, "/tmp/b/yonggi.sock"), Some(4242));
        assert_eq!(owner_in_ss(ss, "/tmp/b"), None);
    }

    #[test]
    fn this_process_has_memory() {
        let pid = std::process::id();
        let rss = rss_kib(pid).expect("own VmRSS");
        let (rollup_rss, pss) = rss_pss_kib(pid).expect("own smaps_rollup");
        assert!(rss > 0 && rollup_rss > 0 && pss > 0);
        assert!(pss <= rollup_rss);
    }

    #[test]
    fn helpers_are_found_by_a_path_in_their_command_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("helper-marker");
        std::fs::write(&marker, b"").expect("marker file");
        // A process that never forks: a shell would briefly fork a copy of
        // itself (marker in its command line) for each command it runs.
        let mut child = std::process::Command::new("tail")
            .arg("-f")
            .arg(&marker)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn tail");
        let needle = marker.to_string_lossy().to_string();
        // The kernel may show a just-exec'd process's command line a moment
        // late (seen under load): look again for a bounded while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            let found = helpers(&needle, 0).expect("scan /proc");
            if !found.is_empty() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let excluded = helpers(&needle, child.id()).expect("scan /proc");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, vec![child.id()]);
        assert!(excluded.is_empty());
        assert!(cmdline_contains(b"a\0b c\0d", "b c d"));
    }
}
