//! Container lifecycle through the monitor: logs, exit codes, signals,
//! detaching from the launcher, log reopen, pty, memory.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::daemon::yonggi_bin;
use support::engine::*;
use yonggi::monitor;

#[test]
fn echo_hello_is_logged_in_cri_format_and_exits_0() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "echo hello; echo oops >&2; printf tail"]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0);
    assert_eq!(status.signal, None);
    assert!(!status.oom_killed);
    let mut stdout: Vec<_> = lines.iter().filter(|l| l.stream == "stdout").collect();
    let stderr: Vec<_> = lines.iter().filter(|l| l.stream == "stderr").collect();
    assert_eq!(stderr, vec![&line("stderr", "F", "oops")]);
    stdout.sort_by_key(|l| l.tag.clone());
    assert_eq!(
        stdout,
        vec![&line("stdout", "F", "hello"), &line("stdout", "P", "tail")]
    );
    let finished = status.finished_at_ns;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    assert!(
        finished <= now && now - finished < 60_000_000_000,
        "finished {finished}, now {now}"
    );
    case.finish();
}

#[test]
fn exit_code_is_recorded() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "exit 3"]);
    let (status, _) = case.run(&spec);
    assert_eq!(status.exit_code, 3);
    let recorded = monitor::read_exit(&case.state)
        .expect("read exit")
        .expect("exit file");
    assert_eq!(recorded, status);
    case.finish();
}

#[test]
fn long_lines_are_split_into_partial_chunks() {
    let mut case = Case::new();
    let spec = case.spec(&[
        "sh",
        "-c",
        "head -c 40000 /dev/zero | tr '\\0' a; echo; echo short",
    ]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0);
    let shape: Vec<_> = lines
        .iter()
        .map(|l| (l.tag.as_str(), l.content.len()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("P", 16384),
            ("P", 16384),
            ("F", 40000 - 2 * 16384),
            ("F", 5)
        ]
    );
    assert!(
        lines[..3]
            .iter()
            .all(|l| l.content.bytes().all(|b| b == b'a'))
    );
    case.finish();
}

#[test]
fn a_killed_container_exits_128_plus_the_signal() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let comm = fs::read_to_string(format!("/proc/{}/comm", launched.init_pid)).expect("init comm");
    assert_eq!(comm.trim(), "sleep");
    monitor::kill(&case.state, 9).expect("kill");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!((status.exit_code, status.signal), (137, Some(9)));
    // Killing what has exited is not an error (stop is idempotent).
    monitor::kill(&case.state, 9).expect("kill again");
    case.finish();
}

#[test]
fn a_created_container_can_be_killed_before_start() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "echo never"]);
    case.launch(&spec);
    monitor::kill(&case.state, 9).expect("kill");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!(status.exit_code, 137);
    assert_eq!(fs::read_to_string(&case.log).expect("log"), "");
    case.finish();
}

#[test]
fn a_missing_program_fails_at_create_naming_the_step() {
    let mut case = Case::new();
    let spec = case.spec(&["no-such-program"]);
    let err = monitor::launch(
        &yonggi_bin(),
        &case.state,
        &spec,
        &case.config(),
        LAUNCH_TIMEOUT,
    )
    .expect_err("launch must fail");
    match err {
        monitor::MonitorError::Setup { step, message } => {
            assert_eq!(step, "exec");
            assert!(message.contains("no-such-program"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    if let Ok(pid) = fs::read_to_string(monitor::Paths::monitor_pid(&case.state)) {
        case.pids.push(pid.trim().parse().expect("pid"));
    }
    assert!(!monitor::Paths::control(&case.state).exists());
    case.finish();
}

#[test]
fn the_monitor_outlives_its_launcher() {
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", "echo survived; exit 5"]);
    spec.save(monitor::Paths::spec(&case.state)).expect("spec");
    let config = serde_json::to_vec(&case.config()).expect("config");
    fs::write(monitor::Paths::config(&case.state), config).expect("config");
    let report = case.dir.path().join("report");
    // A short-lived launcher: the shell exits once the monitor detached.
    let launcher = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} monitor {} > {}",
            yonggi_bin().display(),
            case.state.display(),
            report.display()
        ))
        .status()
        .expect("launcher");
    assert!(launcher.success());
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    while !fs::read_to_string(&report)
        .unwrap_or_default()
        .ends_with('\n')
    {
        assert!(Instant::now() < deadline, "no report from the monitor");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid: i32 = fs::read_to_string(monitor::Paths::monitor_pid(&case.state))
        .expect("monitor pid")
        .trim()
        .parse()
        .expect("pid");
    case.pids.push(pid);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("monitor alive");
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .expect("ppid")
        .trim()
        .to_string();
    assert_ne!(ppid, std::process::id().to_string());
    monitor::start(&case.state).expect("start");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!(status.exit_code, 5);
    assert_eq!(log_lines(&case.log), vec![line("stdout", "F", "survived")]);
    case.finish();
}

#[test]
fn the_log_is_reopened_after_a_rename() {
    let mut case = Case::new();
    let sync = case.dir.path().join("sync");
    fs::create_dir_all(&sync).expect("dir");
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "echo one; while [ ! -e /sync/go ]; do sleep 0.05; done; echo two",
    ]);
    Case::add_bind(&mut spec, &sync, "/sync", &["rbind"]);
    case.launch(&spec);
    monitor::start(&case.state).expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&case.log)
        .unwrap_or_default()
        .contains("one")
    {
        assert!(Instant::now() < deadline, "no first line");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rotated = case.log.with_extension("log.1");
    fs::rename(&case.log, &rotated).expect("rotate");
    monitor::reopen_log(&case.state).expect("reopen");
    fs::write(sync.join("go"), "").expect("go");
    let status = monitor::wait(&case.state).expect("wait");
    assert_eq!(status.exit_code, 0);
    assert_eq!(log_lines(&rotated), vec![line("stdout", "F", "one")]);
    assert_eq!(log_lines(&case.log), vec![line("stdout", "F", "two")]);
    case.finish();
}

/// The monitor's memory while its container runs, printed for the report
/// (`cargo test --test engine monitor_memory -- --nocapture`; set
/// `YONGGI_MONITOR_BIN=target/release/yonggi` to measure a release build).
#[test]
fn monitor_memory() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let binary = std::env::var_os("YONGGI_MONITOR_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(yonggi_bin);
    let launched = monitor::launch(&binary, &case.state, &spec, &case.config(), LAUNCH_TIMEOUT)
        .expect("launch");
    case.pids.extend([launched.monitor_pid, launched.init_pid]);
    monitor::start(&case.state).expect("start");
    let status =
        fs::read_to_string(format!("/proc/{}/status", launched.monitor_pid)).expect("status");
    let rollup =
        fs::read_to_string(format!("/proc/{}/smaps_rollup", launched.monitor_pid)).expect("smaps");
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("field")
    };
    let rss = field(&status, "VmRSS:");
    let pss = field(&rollup, "Pss:");
    println!(
        "monitor {}: VmRSS {rss} kB, Pss {pss} kB",
        launched.monitor_pid
    );
    assert!(rss > 0 && pss > 0);
    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}

#[test]
fn a_terminal_container_writes_through_a_pty_of_its_own_devpts() {
    let mut case = Case::new();
    let mut spec = case.spec(&[
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo on-a-tty; tty; echo err >&2",
    ]);
    spec.process_mut()
        .as_mut()
        .expect("process")
        .set_terminal(Some(true));
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    // One stream; the pty turns "\n" into "\r\n".
    let out: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.stream.as_str(),
                l.tag.as_str(),
                l.content.trim_end_matches('\r'),
            )
        })
        .collect();
    assert_eq!(
        out,
        vec![
            ("stdout", "F", "on-a-tty"),
            ("stdout", "F", "/dev/pts/0"),
            ("stdout", "F", "err")
        ]
    );
    case.finish();
}

/// A stop's grace period: a container that ignores SIGTERM (a PID 1 with
/// no handler does) is still running after the wait times out, and SIGKILL
/// ends it. The monitor reports the init and whether it was started.
#[test]
fn sigterm_ignored_then_sigkill_and_the_monitor_state() {
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    let state = monitor::state(&case.state)
        .expect("state")
        .expect("a live monitor");
    assert_eq!((state.init_pid, state.started), (launched.init_pid, false));
    monitor::start(&case.state).expect("start");
    let state = monitor::state(&case.state)
        .expect("state")
        .expect("a live monitor");
    assert!(state.started);
    monitor::kill(&case.state, 15).expect("sigterm");
    let waited = monitor::wait_timeout(&case.state, Duration::from_millis(300)).expect("wait");
    assert_eq!(waited, None, "PID 1 without a handler ignores SIGTERM");
    monitor::kill(&case.state, 9).expect("sigkill");
    let status = monitor::wait_timeout(&case.state, Duration::from_secs(30))
        .expect("wait")
        .expect("exited");
    assert_eq!(status.exit_code, 137);
    let state_dir = case.state.clone();
    case.finish();
    // No monitor any more: no state, and no error either.
    assert_eq!(monitor::state(&state_dir).expect("state"), None);
}

/// The user, groups and capabilities the process runs with: a non-root
/// user gets exactly the spec's sets; without a set in the spec it has
/// none at all (nothing permitted it could raise again).
#[test]
fn user_groups_and_capabilities() {
    let mut case = Case::new();
    let script = "id -u; id -g; id -G; grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status | cut -f2";
    let mut spec = case.spec(&["sh", "-c", script]);
    let mut user = oci_spec::runtime::User::default();
    user.set_uid(65534);
    user.set_gid(65534);
    user.set_additional_gids(Some(vec![1234]));
    let process = spec.process_mut().as_mut().expect("process");
    process.set_user(user);
    process.set_capabilities(None);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    assert_eq!(out[..3], ["65534", "65534", "65534 1234"]);
    assert_eq!(
        out[3..5],
        ["0000000000000000", "0000000000000000"],
        "{out:?}"
    );
    case.finish();

    // With the default set, bounding = permitted = effective = that set.
    let mut case = Case::new();
    let spec = case.spec(&["sh", "-c", script]);
    let (status, lines) = case.run(&spec);
    assert_eq!(status.exit_code, 0, "{lines:?}");
    let out: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
    // CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6,
    // SETUID 7, SETPCAP 8, NET_BIND_SERVICE 10, NET_RAW 13, SYS_CHROOT 18,
    // MKNOD 27, AUDIT_WRITE 29, SETFCAP 31.
    let mask = format!("{:016x}", 0xa80425fbu64);
    assert_eq!(
        out[3..6],
        [mask.as_str(), mask.as_str(), mask.as_str()],
        "{out:?}"
    );
    case.finish();
}

/// A client that sends its request slowly holds nobody up: others are
/// answered meanwhile, and its own request is answered once complete.
#[test]
fn a_slow_control_client_does_not_block_the_monitor() {
    use std::io::{BufRead, BufReader, Write};
    let mut case = Case::new();
    let spec = case.spec(&["sleep", "1000"]);
    let launched = case.launch(&spec);
    let mut slow = std::os::unix::net::UnixStream::connect(monitor::Paths::control(&case.state))
        .expect("connect");
    slow.write_all(b"\"Sta").expect("first half");
    let state = monitor::state(&case.state).expect("state").expect("live");
    assert_eq!(state.init_pid, launched.init_pid);
    slow.write_all(b"te\"\n").expect("second half");
    let mut reply = String::new();
    BufReader::new(&slow).read_line(&mut reply).expect("reply");
    assert!(reply.contains(&launched.init_pid.to_string()), "{reply}");
    monitor::kill(&case.state, 9).expect("kill");
    monitor::wait(&case.state).expect("wait");
    case.finish();
}
