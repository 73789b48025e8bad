//! The streaming server against the stock Kubernetes client: crictl
//! v1.32.0 (client-go's SPDY and WebSocket executors and port forwarder).
//! A minimal CRI endpoint answers Version and hands out URLs of the streaming
//! service from Exec, Attach and PortForward, whose backend runs host
//! processes — the real container service does not exist yet.
//!
//! crictl is not packaged in Debian, and the project may not build it, so
//! these run only on request: `cargo test --test stream -- --ignored`
//! with cri-tools v1.32.0's crictl at /usr/local/bin/crictl.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_cri::v1 as cri;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Request, Response, Status};
use yonggi::stream::{AttachRequest, ExecRequest, PortForwardRequest, Service};

use crate::spdy::echo_server;
use crate::{service, within};

const CRICTL: &str = "/usr/local/bin/crictl";

#[derive(Clone)]
struct FakeCri(Arc<Service>);

impl tonic::server::NamedService for FakeCri {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

fn internal(e: yonggi::stream::StreamError) -> Status {
    Status::internal(e.to_string())
}

async fn unary<Req, Resp, F, Fut>(req: http::Request<Body>, f: F) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
    grpc.unary(tower::service_fn(f), req).await
}

impl tower::Service<http::Request<Body>> for FakeCri {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let stream = self.0.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let method = path.rsplit('/').next().unwrap_or_default().to_string();
            let response = match method.as_str() {
                "Version" => {
                    unary(req, |_: Request<cri::VersionRequest>| async {
                        Ok(Response::new(cri::VersionResponse {
                            version: "0.1.0".into(),
                            runtime_name: "fake".into(),
                            runtime_version: "0".into(),
                            runtime_api_version: "v1".into(),
                        }))
                    })
                    .await
                }
                "Exec" => {
                    unary(req, |r: Request<cri::ExecRequest>| {
                        let stream = stream.clone();
                        async move {
                            let r = r.into_inner();
                            let url = stream
                                .exec_url(ExecRequest {
                                    container_id: r.container_id,
                                    cmd: r.cmd,
                                    tty: r.tty,
                                    stdin: r.stdin,
                                    stdout: r.stdout,
                                    stderr: r.stderr,
                                })
                                .await
                                .map_err(internal)?;
                            Ok(Response::new(cri::ExecResponse { url }))
                        }
                    })
                    .await
                }
                "Attach" => {
                    unary(req, |r: Request<cri::AttachRequest>| {
                        let stream = stream.clone();
                        async move {
                            let r = r.into_inner();
                            let url = stream
                                .attach_url(AttachRequest {
                                    container_id: r.container_id,
                                    tty: r.tty,
                                    stdin: r.stdin,
                                    stdout: r.stdout,
                                    stderr: r.stderr,
                                })
                                .await
                                .map_err(internal)?;
                            Ok(Response::new(cri::AttachResponse { url }))
                        }
                    })
                    .await
                }
                "PortForward" => {
                    unary(req, |r: Request<cri::PortForwardRequest>| {
                        let stream = stream.clone();
                        async move {
                            let r = r.into_inner();
                            let ports = r.port.iter().map(|p| *p as u16).collect();
                            let url = stream
                                .port_forward_url(PortForwardRequest {
                                    pod_id: r.pod_sandbox_id,
                                    ports,
                                })
                                .await
                                .map_err(internal)?;
                            Ok(Response::new(cri::PortForwardResponse { url }))
                        }
                    })
                    .await
                }
                _ => Status::unimplemented(path).into_http(),
            };
            Ok(response)
        })
    }
}

/// A CRI endpoint on a temp socket, serving until dropped.
struct Endpoint {
    stream: Arc<Service>,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start(stream: Service) -> Endpoint {
        let dir = tempfile::Builder::new()
            .prefix("yonggi-crictl-")
            .tempdir()
            .expect("temp dir");
        let listener = UnixListener::bind(dir.path().join("cri.sock")).expect("bind cri socket");
        let stream = Arc::new(stream);
        let cri = FakeCri(stream.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(cri)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        Endpoint {
            stream,
            dir,
            server,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }

    fn crictl(&self) -> tokio::process::Command {
        crictl_command(&self.socket())
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn crictl_command(socket: &Path) -> tokio::process::Command {
    assert!(
        Path::new(CRICTL).exists(),
        "crictl v1.32.0 is expected at {CRICTL}"
    );
    let endpoint = format!("unix://{}", socket.display());
    let mut cmd = tokio::process::Command::new(CRICTL);
    cmd.arg("--runtime-endpoint")
        .arg(&endpoint)
        .arg("--image-endpoint")
        .arg(&endpoint)
        .arg("--timeout")
        .arg("10s")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: tokio::process::Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn crictl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).await.expect("write crictl stdin");
    }
    within("crictl", child.wait_with_output())
        .await
        .expect("crictl output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs crictl v1.32.0 (cri-tools, not a Debian package) at /usr/local/bin/crictl; run with --ignored"]
async fn crictl_exec_over_spdy_and_websocket() {
    let endpoint = Endpoint::start(service().await).await;
    for transport in ["spdy", "websocket"] {
        let mut cmd = endpoint.crictl();
        cmd.args(["exec", "--transport", transport, "c1"]).args([
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]);
        let out = run(cmd, None).await;
        assert_eq!(text(&out.stdout), "out\n", "{transport}: {out:?}");
        assert!(text(&out.stderr).contains("err\n"), "{transport}: {out:?}");
        // client-go decoded the exit code from the status; crictl itself exits 1.
        assert!(
            text(&out.stderr).contains("command terminated with exit code 3"),
            "{transport}: {out:?}"
        );
        assert!(!out.status.success(), "{transport}: {out:?}");

        let mut cmd = endpoint.crictl();
        cmd.args(["exec", "-i", "--transport", transport, "c1", "sh", "-c"])
            .arg("read x; echo \"got $x\"");
        let out = run(cmd, Some(b"hello\n")).await;
        assert_eq!(text(&out.stdout), "got hello\n", "{transport}: {out:?}");
        assert!(out.status.success(), "{transport}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs crictl v1.32.0 (cri-tools, not a Debian package) at /usr/local/bin/crictl; run with --ignored"]
async fn crictl_exec_with_tty_under_a_terminal() {
    let endpoint = Endpoint::start(service().await).await;
    for transport in ["spdy", "websocket"] {
        // `script` gives crictl a terminal, as a person's shell would.
        let crictl = format!(
            "{CRICTL} --runtime-endpoint unix://{sock} --image-endpoint unix://{sock} --timeout 10s \
             exec -it --transport {transport} c1 sh -c 'read line; echo \"got $line\"; tty'",
            sock = endpoint.socket().display()
        );
        let mut cmd = tokio::process::Command::new("script");
        cmd.args(["-qefc", &crictl, "/dev/null"]).kill_on_drop(true);
        let out = run(cmd, Some(b"typed\n")).await;
        let stdout = text(&out.stdout);
        assert!(stdout.contains("got typed"), "{transport}: {out:?}");
        assert!(
            stdout.contains("/dev/pts/"),
            "{transport}: the command has a tty: {out:?}"
        );
        assert!(out.status.success(), "{transport}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs crictl v1.32.0 (cri-tools, not a Debian package) at /usr/local/bin/crictl; run with --ignored"]
async fn crictl_attach() {
    let endpoint = Endpoint::start(service().await).await;
    let mut cmd = endpoint.crictl();
    cmd.args(["attach", "-i", "c1"]);
    let out = run(cmd, Some(b"to the container\n")).await;
    assert_eq!(text(&out.stdout), "to the container\n", "{out:?}");
    assert!(out.status.success(), "{out:?}");
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs crictl v1.32.0 (cri-tools, not a Debian package) at /usr/local/bin/crictl; run with --ignored"]
async fn crictl_port_forward_over_spdy_and_websocket() {
    let (echo_port, echo) = echo_server().await;
    let endpoint = Endpoint::start(service().await).await;
    for transport in ["spdy", "websocket"] {
        let local = free_port().await;
        let mut cmd = endpoint.crictl();
        cmd.args(["port-forward", "--transport", transport, "pod"])
            .arg(format!("{local}:{echo_port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn crictl port-forward");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        within("forwarding starts", async {
            while let Some(line) = lines.next_line().await.expect("read crictl") {
                if line.contains("Forwarding from") {
                    return;
                }
            }
            panic!("crictl port-forward ended before forwarding");
        })
        .await;
        // Two connections in a row through the same forwarding session.
        for round in 0..2 {
            let mut conn = TcpStream::connect(("127.0.0.1", local))
                .await
                .expect("connect");
            let message = format!("{transport} round {round}");
            conn.write_all(message.as_bytes()).await.expect("send");
            let mut echoed = vec![0u8; message.len()];
            within("echo through crictl", conn.read_exact(&mut echoed))
                .await
                .expect("echo");
            assert_eq!(text(&echoed), message);
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while endpoint.stream.active_sessions() > 0 {
            assert!(
                Instant::now() < deadline,
                "{transport}: session outlived crictl"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    echo.abort();
}
