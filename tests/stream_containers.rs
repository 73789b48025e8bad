//! The streaming server against real containers of the daemon: attach
//! through the monitor (tty and pipes, several sessions, stdin_once, a slow
//! session, a daemon restart), exec and attach clients that vanish, tokens
//! and the idle timeout from the config, and stock crictl (ignored: CI has
//! no crictl).

mod container_support;
mod pod_support;
#[allow(dead_code)]
#[path = "stream/spdy_client.rs"]
mod spdy_client;
mod support;

#[path = "stream_containers/crictl.rs"]
mod crictl;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use container_support::*;
use k8s_cri::v1 as cri;
use pod_support::*;
use spdy_client::{Event, SpdyClient};

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60s"))
}

const V4: &str = "v4.channel.k8s.io";

pub async fn attach_url(e: &mut Env, id: &str, tty: bool, stdin: bool, stderr: bool) -> String {
    e.rt.attach(cri::AttachRequest {
        container_id: id.to_string(),
        stdin,
        tty,
        stdout: true,
        stderr,
    })
    .await
    .expect("Attach")
    .into_inner()
    .url
}

async fn exec_url(e: &mut Env, id: &str, cmd: &[&str]) -> String {
    e.rt.exec(cri::ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    })
    .await
    .expect("Exec")
    .into_inner()
    .url
}

/// The ids of a remotecommand session's streams, opened as client-go does.
struct Streams {
    error: u32,
    stdin: Option<u32>,
    stdout: u32,
    stderr: Option<u32>,
    resize: Option<u32>,
}

async fn open(client: &mut SpdyClient, tty: bool, stdin: bool, stderr: bool) -> Streams {
    let error = client.open(&[("streamType", "error")]).await;
    let stdin = match stdin {
        true => Some(client.open(&[("streamType", "stdin")]).await),
        false => None,
    };
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let stderr = match stderr {
        true => Some(client.open(&[("streamType", "stderr")]).await),
        false => None,
    };
    let resize = match tty {
        true => Some(client.open(&[("streamType", "resize")]).await),
        false => None,
    };
    Streams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    }
}

/// Reads until `stream` has carried `text`; returns all it carried.
async fn read_until(client: &mut SpdyClient, stream: u32, text: &str, seen: &mut Vec<u8>) {
    while !String::from_utf8_lossy(seen).contains(text) {
        match within(&format!("output {text:?}"), client.next()).await {
            Event::Data(id, bytes) if id == stream => seen.extend(bytes),
            Event::Data(..) | Event::Reply(_) | Event::Ping(_) => {}
            other => panic!(
                "unexpected {other:?} waiting for {text:?}; seen {:?}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

fn status_of(seen: &spdy_client::Collected, error: u32) -> serde_json::Value {
    serde_json::from_str(&seen.text(error))
        .unwrap_or_else(|e| panic!("status json {:?}: {e}", seen.text(error)))
}

fn monitor_pid(e: &Env, id: &str) -> i32 {
    let path = e
        .daemon
        .dir
        .path()
        .join(format!("run/containers/{id}/monitor.pid"));
    std::fs::read_to_string(&path)
        .expect("monitor.pid")
        .trim()
        .parse()
        .expect("pid")
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count()
}

/// Pids of host processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn shell(e: &Env, name: &str, tty: bool, stdin_once: bool) -> cri::ContainerConfig {
    let mut c = e.container(name, &["/bin/sh"], &[]);
    c.stdin = true;
    c.stdin_once = stdin_once;
    c.tty = tty;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_attach_takes_commands_resizes_and_survives_a_daemon_restart() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("attach-tty").await;
    let id = e
        .create(&pod, shell(&e, "shell", true, false))
        .await
        .expect("create");
    e.start(&id).await;

    let url = attach_url(&mut e, &id, true, true, false).await;
    let mut client = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let s = open(&mut client, true, true, false).await;
    let (stdin, resize) = (s.stdin.expect("stdin"), s.resize.expect("resize"));
    client
        .data(resize, br#"{"Width":123,"Height":45}"#, false)
        .await;
    // A second session, output only, sees the same output.
    let url = attach_url(&mut e, &id, false, false, false).await;
    let mut watcher = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let w = open(&mut watcher, false, false, false).await;
    let mut watched = Vec::new();
    for round in 0.. {
        assert!(round < 100, "the watcher never saw the output");
        client
            .data(stdin, format!("echo ping-{round}\n").as_bytes(), false)
            .await;
        let wait = tokio::time::timeout(
            Duration::from_millis(200),
            read_until(&mut watcher, w.stdout, "ping-", &mut watched),
        );
        if wait.await.is_ok() {
            break;
        }
    }
    // The container's terminal is one of its own devpts: `tty` names it,
    // it exists inside, and it is what stdin is.
    client
        .data(
            stdin,
            b"stty size; t=$(tty) && test -c $t && test $(readlink /proc/$$/fd/0) = $t && echo console-$t; echo answer-$((6*7))\n",
            false,
        )
        .await;
    let mut seen = Vec::new();
    read_until(&mut client, s.stdout, "answer-42", &mut seen).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.contains("45 123"),
        "the pty has the client's size: {seen:?}"
    );
    assert!(
        seen.contains("console-/dev/pts/0"),
        "the console is the container's /dev/pts/0: {seen:?}"
    );
    read_until(&mut watcher, w.stdout, "answer-42", &mut watched).await;

    // The client ends its stdin: without stdin_once that is a detach.
    client.data(stdin, b"", true).await;
    let done = within("detach", client.collect()).await;
    assert_eq!(status_of(&done, s.error)["status"], "Success");
    let st = e.status(&id).await.status.expect("status");
    assert_eq!(st.state(), cri::ContainerState::ContainerRunning);
    drop(watcher);

    // An exec with a tty gets a terminal of the container's devpts.
    let url =
        e.rt.exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["tty".into()],
            tty: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let mut client = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let s = open(&mut client, true, false, false).await;
    let done = within("exec tty", client.collect()).await;
    assert!(done.text(s.stdout).starts_with("/dev/pts/"), "{done:?}");
    assert_eq!(status_of(&done, s.error)["status"], "Success");

    // The monitor keeps the container's terminal while the daemon is away.
    e.daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    e.daemon.spawn();
    e.rt = e.daemon.runtime().await;
    let url = attach_url(&mut e, &id, true, true, false).await;
    let mut client = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let s = open(&mut client, true, true, false).await;
    let stdin = s.stdin.expect("stdin");
    client
        .data(stdin, b"echo again-$((1+1)); exit\n", false)
        .await;
    let done = within("attach until exit", client.collect()).await;
    assert!(done.text(s.stdout).contains("again-2"), "{done:?}");
    assert_eq!(status_of(&done, s.error)["status"], "Success");
    assert_eq!(e.wait_exited(&id).await.exit_code, 0);
    e.remove(&id).await;
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
    e.assert_gone(&id, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_once_attach_streams_to_the_end_and_a_slow_session_is_cut_off() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("attach-once").await;
    let id = e
        .create(&pod, shell(&e, "once", false, true))
        .await
        .expect("create");
    e.start(&id).await;

    let url = attach_url(&mut e, &id, false, true, true).await;
    let mut fast = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let f = open(&mut fast, false, true, true).await;
    let stdin = f.stdin.expect("stdin");
    let url = attach_url(&mut e, &id, false, false, false).await;
    let mut slow = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let sl = open(&mut slow, false, false, false).await;
    let mut slow_seen = Vec::new();
    for round in 0.. {
        assert!(round < 100, "the slow session never saw the output");
        fast.data(stdin, format!("echo ping-{round}\n").as_bytes(), false)
            .await;
        let wait = tokio::time::timeout(
            Duration::from_millis(200),
            read_until(&mut slow, sl.stdout, "ping-", &mut slow_seen),
        );
        if wait.await.is_ok() {
            break;
        }
    }
    // About 16 MB, far more than the slow session's buffers hold; it reads
    // nothing from here on.
    const LINE: &str = "0123456789012345678901234567890123456789";
    const LINES: usize = 400_000;
    fast.data(
        stdin,
        format!("yes {LINE} | head -n {LINES}; echo end >&2\n").as_bytes(),
        false,
    )
    .await;
    let (mut out, mut err) = (0usize, Vec::new());
    // Two streams: stderr's "end" may overtake the last of stdout.
    while out < LINES * (LINE.len() + 1) || !String::from_utf8_lossy(&err).contains("end") {
        match within("the fast session's output", fast.next()).await {
            Event::Data(id, bytes) if id == f.stdout => out += bytes.len(),
            Event::Data(id, bytes) if Some(id) == f.stderr => err.extend(bytes),
            Event::Data(..) | Event::Reply(_) | Event::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // stdin_once: ending stdin closes the shell's, which then exits.
    fast.data(stdin, b"", true).await;
    let done = within("attach until exit", fast.collect()).await;
    assert_eq!(status_of(&done, f.error)["status"], "Success");
    assert_eq!(e.wait_exited(&id).await.exit_code, 0);

    // The slow session was cut off; the log has everything.
    let rest = within("the slow session", slow.collect()).await;
    let slow_out = slow_seen.len() + rest.text(sl.stdout).len();
    assert!(slow_out < LINES * (LINE.len() + 1), "{slow_out} bytes");
    let status = status_of(&rest, sl.error);
    assert_eq!(status["status"], "Failure");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cut the session off"),
        "{status}"
    );
    let lines = support::engine::log_lines(&e.log_file("attach-once", "once"));
    let full = lines
        .iter()
        .filter(|l| l.stream == "stdout" && l.tag == "F" && l.content == LINE)
        .count();
    assert_eq!(full, LINES);
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stderr" && l.content == "end")
    );
    e.remove(&id).await;
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_leave_no_process_or_session_behind() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("vanish").await;
    let id = e
        .create(&pod, shell(&e, "keep", false, false))
        .await
        .expect("create");
    e.start(&id).await;
    let once = e
        .create(&pod, shell(&e, "once", false, true))
        .await
        .expect("create");
    e.start(&once).await;

    // Exec: the command and what it started in the background end with
    // the client.
    let url = exec_url(
        &mut e,
        &id,
        &["sh", "-c", "(sleep 4243 &); echo started; sleep 4242"],
    )
    .await;
    let mut client = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let s = open(&mut client, false, false, true).await;
    read_until(&mut client, s.stdout, "started", &mut Vec::new()).await;
    eventually("the exec'd processes start", || {
        processes(&["sleep", "4242"]).len() == 1 && processes(&["sleep", "4243"]).len() == 1
    })
    .await;
    drop(client);
    eventually("the exec'd processes outlive their client", || {
        processes(&["sleep", "4242"]).is_empty() && processes(&["sleep", "4243"]).is_empty()
    })
    .await;

    // Attach: the monitor drops the session's connection; the container,
    // without stdin_once, runs on with its stdin open.
    let monitor = monitor_pid(&e, &id);
    let before = fd_count(monitor);
    let url = attach_url(&mut e, &id, false, true, true).await;
    let mut client = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let s = open(&mut client, false, true, true).await;
    client
        .data(s.stdin.expect("stdin"), b"echo hi\n", false)
        .await;
    read_until(&mut client, s.stdout, "hi", &mut Vec::new()).await;
    assert_eq!(fd_count(monitor), before + 1, "one more connection");
    drop(client);
    eventually("the monitor keeps the session", || {
        fd_count(monitor) == before
    })
    .await;
    let st = e.status(&id).await.status.expect("status");
    assert_eq!(st.state(), cri::ContainerState::ContainerRunning);
    assert_eq!(
        e.exec(&id, &["echo", "alive"], 10)
            .await
            .expect("exec")
            .stdout,
        b"alive\n"
    );

    // With stdin_once, a vanished client is the first detach: the shell's
    // stdin closes and it exits.
    let url = attach_url(&mut e, &once, false, true, true).await;
    let mut client = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    let s = open(&mut client, false, true, true).await;
    client
        .data(s.stdin.expect("stdin"), b"echo hi\n", false)
        .await;
    read_until(&mut client, s.stdout, "hi", &mut Vec::new()).await;
    drop(client);
    assert_eq!(e.wait_exited(&once).await.exit_code, 0);
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
    let monitor_gone = !PathBuf::from(format!("/proc/{monitor}")).exists();
    assert!(monitor_gone || !process_alive(monitor));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_single_use_and_expire_and_idle_sessions_close() {
    let mut e = env_with("[streaming]\ntoken_ttl_seconds = 2\nidle_timeout_seconds = 2\n").await;
    let _leftovers = Leftovers::of(&e.daemon);
    let pod = e.pod("tokens").await;
    let id = e
        .create(&pod, e.container("sleeper", &["sleep", "600"], &[]))
        .await
        .expect("create");
    e.start(&id).await;

    let url = attach_url(&mut e, &id, false, false, false).await;
    let mut client = spdy_client::connect(&url, &[V4]).await.expect("upgrade");
    open(&mut client, false, false, false).await;
    // Nothing moves on a sleeping container: the idle timeout ends it.
    let started = Instant::now();
    within("idle close", client.collect()).await;
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let st = e.status(&id).await.status.expect("status");
    assert_eq!(st.state(), cri::ContainerState::ContainerRunning);

    let refused = |r: Result<SpdyClient, (u16, _)>| match r {
        Ok(_) => panic!("the token was accepted"),
        Err((status, _)) => status,
    };
    // Used once: gone.
    assert_eq!(refused(spdy_client::connect(&url, &[V4]).await), 404);
    // Forged.
    let forged = format!(
        "{}/{}",
        &url[..url.rfind('/').expect("token")],
        "ab".repeat(32)
    );
    assert_eq!(refused(spdy_client::connect(&forged, &[V4]).await), 404);
    // Expired.
    let url = exec_url(&mut e, &id, &["true"]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(refused(spdy_client::connect(&url, &[V4]).await), 404);
    // An exec token is not an attach token.
    let url = exec_url(&mut e, &id, &["true"]).await;
    let url = url.replace("/exec/", "/attach/");
    assert_eq!(refused(spdy_client::connect(&url, &[V4]).await), 404);

    // Attach to a container that is not running is refused up front.
    e.stop(&id, 0).await;
    let status =
        e.rt.attach(cri::AttachRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("attach to an exited container");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}
