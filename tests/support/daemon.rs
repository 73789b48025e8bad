//! A yonggi daemon on a temp root and temp socket, and a CRI client for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The `yonggi` binary cargo built for these tests.
pub fn yonggi_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_yonggi"))
}

/// A running daemon. Dropping it stops the daemon (SIGTERM, then SIGKILL) and
/// removes its temp root.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    pub stderr_path: PathBuf,
}

/// Options for a test daemon; `extra_config` is appended to the generated TOML.
#[derive(Default, Clone)]
pub struct DaemonOptions {
    pub extra_config: String,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(DaemonOptions::default())
    }

    pub fn start_with(options: DaemonOptions) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("yonggi-test-")
            .tempdir()
            .expect("temp dir for the daemon");
        let socket = dir.path().join("run/yonggi.sock");
        let config_path = dir.path().join("config.toml");
        let config = format!(
            "root = \"{root}\"\nstate_dir = \"{state}\"\nsocket = \"{socket}\"\nshutdown_grace_seconds = 5\n{extra}\n",
            root = dir.path().join("root").display(),
            state = dir.path().join("run").display(),
            socket = socket.display(),
            extra = options.extra_config,
        );
        std::fs::write(&config_path, config).expect("write test config");
        let mut daemon = Daemon {
            child: None,
            socket,
            config_path,
            stderr_path: dir.path().join("daemon.log"),
            dir,
        };
        daemon.spawn();
        daemon
    }

    /// Starts (or restarts) the process on the same root and socket.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("daemon log file");
        let child = Command::new(yonggi_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn yonggi serve");
        self.child = Some(child);
        wait_for_socket(&self.socket, self.child.as_mut(), &self.stderr_path);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Sends `signal` and waits for the process to exit; returns its status.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        nix::sys::signal::kill(pid, signal).expect("signal daemon");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait daemon") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit after {signal}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(raw) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_socket(socket: &Path, child: Option<&mut Child>, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!(
                "yonggi exited with {status} before serving; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "yonggi did not open {} within 30s; log:\n{}",
        socket.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A tonic channel over the unix socket.
pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("static endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect to the yonggi socket")
}

/// Fails loudly when a test that needs root runs without it.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (namespaces, mounts, cgroups); run the suite as root, as CI does"
    );
}
