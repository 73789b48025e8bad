//! Stock crictl v1.32.0 (client-go's SPDY and WebSocket executors and its
//! port forwarder) against the daemon and real containers. crictl is not a
//! Debian package and CI has none: run with `--ignored`, crictl at
//! /usr/local/bin/crictl.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::container_support::*;
use crate::pod_support::*;
use crate::{shell, within};

const CRICTL: &str = "/usr/local/bin/crictl";

fn crictl_args(e: &Env) -> String {
    assert!(
        std::path::Path::new(CRICTL).exists(),
        "crictl v1.32.0 is expected at {CRICTL}"
    );
    let endpoint = format!("unix://{}", e.daemon.socket.display());
    format!("{CRICTL} --runtime-endpoint {endpoint} --image-endpoint {endpoint} --timeout 20s")
}

/// Runs `command` through `sh -c` (under `script` when `terminal`, which
/// gives crictl a terminal as a person's shell would), feeding `input`.
async fn run(command: &str, terminal: bool, input: &[u8]) -> Output {
    let mut cmd = if terminal {
        let mut c = tokio::process::Command::new("script");
        c.args(["-qefc", command, "/dev/null"]);
        c
    } else {
        let mut c = tokio::process::Command::new("sh");
        c.args(["-c", command]);
        c
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn crictl");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    pipe.write_all(input).await.expect("write crictl's stdin");
    drop(pipe);
    within(command, child.wait_with_output())
        .await
        .expect("crictl output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs crictl v1.32.0 (cri-tools, not a Debian package) at /usr/local/bin/crictl; run with --ignored"]
async fn crictl_exec_and_attach_against_containers() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let crictl = crictl_args(&e);
    let pod = e.pod("crictl").await;
    let id = e
        .create(&pod, e.container("sleeper", &["sleep", "600"], &[]))
        .await
        .expect("create");
    e.start(&id).await;

    for transport in ["spdy", "websocket"] {
        let out = run(
            &format!(
                "{crictl} exec --transport {transport} {id} sh -c 'echo out; echo err >&2; exit 3'"
            ),
            false,
            b"",
        )
        .await;
        assert_eq!(text(&out.stdout), "out\n", "{transport}: {out:?}");
        assert!(text(&out.stderr).contains("err\n"), "{transport}: {out:?}");
        assert!(
            text(&out.stderr).contains("command terminated with exit code 3"),
            "{transport}: {out:?}"
        );
        let out = run(
            &format!(
                "{crictl} exec -i --transport {transport} {id} sh -c 'read x; echo \"got $x\"'"
            ),
            false,
            b"hello\n",
        )
        .await;
        assert_eq!(text(&out.stdout), "got hello\n", "{transport}: {out:?}");
        assert!(out.status.success(), "{transport}: {out:?}");
        // crictl's terminal gets a size, which it sends on the resize
        // stream (client-go sends it beside stdin: the command waits a
        // moment before asking).
        let out = run(
            &format!(
                "stty rows 33 cols 77; exec {crictl} exec -it --transport {transport} {id} \
                 sh -c 'read line; sleep 0.5; echo \"got $line\"; stty size; tty'"
            ),
            true,
            b"typed\n",
        )
        .await;
        let stdout = text(&out.stdout);
        assert!(stdout.contains("got typed"), "{transport}: {out:?}");
        assert!(stdout.contains("33 77"), "{transport}: {out:?}");
        // The container's own devpts holds the terminal.
        assert!(stdout.contains("/dev/pts/"), "{transport}: {out:?}");
        assert!(out.status.success(), "{transport}: {out:?}");
    }

    // Attach with stdin to a stdin_once shell: commands in, answers out,
    // and the end of crictl's stdin ends the shell.
    let once = e
        .create(&pod, shell(&e, "once", false, true))
        .await
        .expect("create");
    e.start(&once).await;
    let out = run(
        &format!("{crictl} attach -i {once}"),
        false,
        b"echo answer-$((6*7)); echo to-stderr >&2\n",
    )
    .await;
    assert_eq!(text(&out.stdout), "answer-42\n", "{out:?}");
    assert!(text(&out.stderr).contains("to-stderr"), "{out:?}");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(e.wait_exited(&once).await.exit_code, 0);

    // Attach with stdin and a tty: a command typed at the container's
    // terminal, its answer read back.
    let tty = e
        .create(&pod, shell(&e, "tty", true, false))
        .await
        .expect("create");
    e.start(&tty).await;
    let out = run(
        &format!("{crictl} attach -it {tty}"),
        true,
        b"echo tty-answer-$((6*7)); exit\n",
    )
    .await;
    assert!(text(&out.stdout).contains("tty-answer-42"), "{out:?}");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(e.wait_exited(&tty).await.exit_code, 0);
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs crictl v1.32.0 (cri-tools, not a Debian package) at /usr/local/bin/crictl; run with --ignored"]
async fn crictl_port_forward_into_a_pod_over_spdy_and_websocket() {
    let mut e = env().await;
    let _leftovers = Leftovers::of(&e.daemon);
    let crictl = crictl_args(&e);
    let pod = e.pod("forward").await;
    let server = e
        .create(
            &pod,
            e.container(
                "server",
                &[
                    "sh",
                    "-c",
                    "while true; do echo hello | nc -l -p 8080; done",
                ],
                &[],
            ),
        )
        .await
        .expect("create");
    e.start(&server).await;
    for transport in ["spdy", "websocket"] {
        let local = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut forward = tokio::process::Command::new("sh")
            .args([
                "-c",
                &format!("exec {crictl} port-forward --transport {transport} {pod} {local}:8080"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("crictl port-forward");
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            let text = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut text = String::new();
                if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", local)) {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = conn.read_to_string(&mut text);
                }
                text
            })
            .await
            .expect("join");
            if text.contains("hello") || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let _ = forward.start_kill();
        let _ = forward.wait().await;
        assert_eq!(got.trim(), "hello", "{transport}");
    }
    stop(&mut e.rt, &pod).await;
    remove(&mut e.rt, &pod).await;
}
