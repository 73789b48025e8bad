//! Exec into a running container (`yonggi exec`).

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::daemon::yonggi_bin;
use support::engine::*;
use yonggi::monitor;

#[test]
fn exec_runs_inside_the_running_container() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let r = exec_in(
        &case,
        launched.init_pid,
        &[
            "sh",
            "-c",
            "echo $$; hostname; cat /etc/layer; id -u; echo err >&2; exit 7",
        ],
        65534,
    );
    assert_eq!(r.code, 7, "{}{}{}", r.stdout, r.stderr, r.report);
    let out: Vec<_> = r.stdout.lines().collect();
    // A small pid: it is in the container's PID namespace.
    let pid: u32 = out[0].parse().expect("pid");
    assert!(pid > 1 && pid < 100, "{pid}");
    assert_eq!(&out[1..], ["yonggi-test", "top", "65534"]);
    assert_eq!(r.stderr, "err\n");
    assert_eq!(r.report, "");

    let r = exec_in(&case, launched.init_pid, &["no-such-program"], 0);
    assert_eq!(r.code, i32::from(yonggi::runtime::exec::SETUP_FAILED));
    let err: yonggi::runtime::SetupError = serde_json::from_str(&r.report).expect("report");
    assert_eq!(err.step, "exec");
    assert!(err.message.contains("no-such-program"), "{err:?}");

    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}

/// SIGTERM to the helper (an ExecSync timeout) kills the command and
/// everything it started in its session.
#[test]
fn a_stopped_exec_leaves_nothing_behind() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let mut process = oci_spec::runtime::Process::default();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "sleep 1000 & sleep 1000".into(),
    ]));
    let exec = yonggi::runtime::exec::ExecSpec {
        init_pid: launched.init_pid,
        process,
        cgroup_dirs: Vec::new(),
        report: case.dir.path().join("exec-report.json"),
        seccomp: None,
    };
    let path = case.dir.path().join("exec.json");
    fs::write(&path, serde_json::to_vec(&exec).expect("json")).expect("exec spec");
    let mut helper = std::process::Command::new(yonggi_bin())
        .arg("exec")
        .arg(&path)
        .spawn()
        .expect("yonggi exec");
    let pid_ns = fs::read_link(format!("/proc/{}/ns/pid", launched.init_pid)).expect("ns");
    let in_container = || -> Vec<i32> {
        fs::read_dir("/proc")
            .expect("proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() == Some(&pid_ns)
            })
            // A killed orphan stays a zombie under an init that does not
            // reap (sleep here): dead all the same.
            .filter(|pid| {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                !status.contains("State:\tZ")
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // init, the background sleep, and the shell (or the sleep it exec'd into)
    while in_container().len() < 3 {
        assert!(Instant::now() < deadline, "the exec never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop the exec");
    let status = helper.wait().expect("helper");
    assert_eq!(status.code(), Some(128 + 9));
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_container() != vec![launched.init_pid] {
        let left: Vec<String> = in_container()
            .iter()
            .map(|p| {
                fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}

/// With `terminal`, the stdin the caller passes (a pty replica) becomes
/// the command's controlling terminal.
#[test]
fn exec_with_a_terminal() {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut process = oci_spec::runtime::Process::default();
    process.set_terminal(Some(true));
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "test -t 0 && test -t 1 && echo is-a-tty; cat /proc/self/stat | cut -d' ' -f7".into(),
    ]));
    let exec = yonggi::runtime::exec::ExecSpec {
        init_pid: launched.init_pid,
        process,
        cgroup_dirs: Vec::new(),
        report: case.dir.path().join("exec-report.json"),
        seccomp: None,
    };
    let path = case.dir.path().join("exec.json");
    fs::write(&path, serde_json::to_vec(&exec).expect("json")).expect("exec spec");
    let replica = |fd: &OwnedFd| std::process::Stdio::from(fd.try_clone().expect("dup"));
    let status = std::process::Command::new(yonggi_bin())
        .arg("exec")
        .arg(&path)
        .stdin(replica(&pty.slave))
        .stdout(replica(&pty.slave))
        .stderr(replica(&pty.slave))
        .status()
        .expect("yonggi exec");
    drop(pty.slave);
    let mut out = Vec::new();
    let mut master = fs::File::from(pty.master);
    // Read until the pty reports the other side closed (EIO).
    let _ = master.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert_eq!(status.code(), Some(0), "{text}");
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], "is-a-tty");
    // Field 7 of stat: the controlling terminal's device number, non-zero.
    assert_ne!(lines[1], "0", "{text}");
    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}
