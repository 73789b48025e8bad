//! A real OCI registry (Debian's `docker-registry`, i.e. distribution 2.8)
//! on 127.0.0.1, a random port and temp storage, and the test images pushed
//! into it with `yonggi::testimages`.
//!
//! ```ignore
//! let registry = Registry::start();
//! registry.push_test_images().await; // every image of Set::All
//! let image = registry.reference(names::BUSYBOX, "latest"); // 127.0.0.1:PORT/yonggi-test/busybox:latest
//! // or, for upstream names served from here:
//! registry.push_set(Set::Critest).await;
//! let daemon = Daemon::start_with(DaemonOptions {
//!     extra_config: registry.mirror_config("registry.k8s.io"),
//! });
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yonggi::testimages::{Auth, Published, Pusher, Set, TestImage, catalog};

/// The registry binary from the `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry. Dropping it stops the process by PID (SIGTERM, then
/// SIGKILL) and removes its storage.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    credentials: Option<(String, String)>,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

impl Registry {
    /// An open registry: anyone may pull and push.
    pub fn start() -> Registry {
        Registry::launch(None)
    }

    /// A registry that answers 401 without these Basic credentials.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::launch(Some((user.to_string(), password.to_string())))
    }

    fn launch(credentials: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("yonggi-registry-")
            .tempdir()
            .expect("temp dir for the registry");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("registry storage dir");
        let auth = match &credentials {
            Some((user, password)) => {
                // The minimum cost: the registry checks the hash on every
                // request, and these are throwaway test credentials.
                let hash = bcrypt::hash_with_result(password, 4)
                    .expect("bcrypt hash")
                    .format_for_version(bcrypt::Version::TwoY);
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: yonggi-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let log_path = dir.path().join("registry.log");
        let mut registry = Registry {
            child: None,
            port: 0,
            credentials,
            log_path,
            dir,
        };
        // The port is picked by binding :0 and released before the registry
        // binds it, so another process may take it in between: retry then.
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                 \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: yonggi-test-secret\n\
                 {auth}",
                storage = storage.display(),
            );
            let config_path = registry.dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let log = std::fs::File::create(&registry.log_path).expect("registry log");
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                // REGISTRY_* variables would override the file.
                .env_clear()
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("registry log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("spawn {REGISTRY_BIN} (hack/install-deps.sh installs it): {e}")
                });
            registry.child = Some(child);
            registry.port = port;
            if registry.wait_ready() {
                return registry;
            }
            registry.stop();
        }
        panic!("the registry did not start; log:\n{}", registry.log());
    }

    /// `127.0.0.1:PORT`, as image references and the pusher want it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, e.g. for a registry mirror entry.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A pusher with this registry's credentials.
    pub fn pusher(&self) -> Pusher {
        let auth = match &self.credentials {
            Some((username, password)) => Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            None => Auth::Anonymous,
        };
        Pusher::new(&self.host(), auth)
    }

    /// Pushes the given images; panics with the registry log on failure.
    pub async fn push(&self, images: &[TestImage]) -> Vec<Published> {
        match catalog::publish(&self.pusher(), images).await {
            Ok(published) => published,
            Err(e) => panic!(
                "push to the test registry: {}\nregistry log:\n{}",
                chain(&e),
                self.log()
            ),
        }
    }

    /// Pushes every image of `set`.
    pub async fn push_set(&self, set: Set) -> Vec<Published> {
        let images = catalog::images(set).expect("build the test images");
        self.push(&images).await
    }

    /// Pushes every image of [`Set::All`] (`yonggi-test/...`).
    pub async fn push_test_images(&self) -> Vec<Published> {
        self.push_set(Set::All).await
    }

    /// yonggi config (TOML) that makes `upstream` (e.g. `registry.k8s.io`)
    /// resolve from this registry only; for `DaemonOptions::extra_config`.
    pub fn mirror_config(&self, upstream: &str) -> String {
        format!(
            "[registries.\"{upstream}\"]\nmirrors = [\"{}\"]\nmirrors_replace_upstream = true\n",
            self.url()
        )
    }

    /// `127.0.0.1:PORT/<repository>:<tag>`.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.host())
    }

    /// Polls `GET /v2/` until it answers (200, or 401 with auth on).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if let Some(status) = http_status(self.port, "/v2/") {
                return status == 200 || status == 401;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(raw) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
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

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

/// The status code of a plain `GET`, or None if nothing answers yet. Blocking
/// std I/O so it works in and out of an async runtime.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The error and its causes: `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
