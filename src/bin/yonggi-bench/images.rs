//! The images the workload uses, published into a (loopback) registry.

use anyhow::Context;
use yonggi::testimages::catalog::{self, names};
use yonggi::testimages::{Auth, ImageConfig, Pusher, Set, TestImage};

/// Repository and tag of the sandbox image containerd is configured with;
/// yonggi needs none.
pub const PAUSE: (&str, &str) = ("pause", "3.9");

/// busybox as a pause image. It must exit on SIGTERM like the real one: as
/// PID 1 it has no default signal actions, hence the trap.
fn pause() -> anyhow::Result<TestImage> {
    let config = ImageConfig {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done".into(),
        ],
        ..ImageConfig::default()
    };
    Ok(TestImage {
        repository: PAUSE.0.into(),
        tags: vec![PAUSE.1.into()],
        artifact: yonggi::testimages::Artifact::Image(catalog::busybox_image(config, vec![])?),
    })
}

/// Pushes busybox, the ~100 MB pull image and the pause image to
/// `registry` (`host:port`, plain HTTP) and prints what it pushed.
pub async fn push(registry: &str) -> anyhow::Result<()> {
    let mut images = Vec::new();
    images.extend(catalog::find(Set::All, names::BUSYBOX, "latest")?);
    images.extend(catalog::find(Set::Bench, names::BIG, "latest")?);
    images.push(pause()?);
    let pusher = Pusher::new(registry, Auth::Anonymous);
    let published = catalog::publish(&pusher, &images)
        .await
        .with_context(|| format!("pushing to {registry}"))?;
    for p in published {
        println!(
            "{registry}/{}:{} {}",
            p.repository,
            p.tags.join(","),
            p.digest
        );
    }
    Ok(())
}
