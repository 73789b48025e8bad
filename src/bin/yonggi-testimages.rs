//! `yonggi-testimages`: builds yonggi's busybox-based test images and pushes
//! them to a registry (test and operations tooling; `hack/critest.sh` uses it
//! to publish critest's images into a loopback registry).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use yonggi::testimages::{Auth, Pusher, Set, catalog};

#[derive(Parser)]
#[command(
    name = "yonggi-testimages",
    version,
    about = "Build and push yonggi's test images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push a set of test images to a registry (plain HTTP).
    Push {
        /// The registry, `host:port`.
        #[arg(long)]
        registry: String,
        /// Which images: the tests' own (`all`), critest's repository paths
        /// (`critest`), the large pull-benchmark image (`bench`), or the
        /// escaping layers (`hostile`). Repeat to push several.
        #[arg(long = "set", value_enum, default_value = "all")]
        sets: Vec<SetArg>,
        /// Basic-auth user name (the password comes from
        /// YONGGI_TESTIMAGES_PASSWORD).
        #[arg(long)]
        username: Option<String>,
    },
    /// List the repositories and tags of a set without pushing.
    List {
        #[arg(long = "set", value_enum, default_value = "all")]
        sets: Vec<SetArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SetArg {
    All,
    Critest,
    Bench,
    Hostile,
}

impl From<SetArg> for Set {
    fn from(arg: SetArg) -> Set {
        match arg {
            SetArg::All => Set::All,
            SetArg::Critest => Set::Critest,
            SetArg::Bench => Set::Bench,
            SetArg::Hostile => Set::Hostile,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Push {
            registry,
            sets,
            username,
        } => {
            let auth = match username {
                Some(username) => Auth::Basic {
                    username,
                    password: std::env::var("YONGGI_TESTIMAGES_PASSWORD")
                        .context("--username needs YONGGI_TESTIMAGES_PASSWORD")?,
                },
                None => Auth::Anonymous,
            };
            let pusher = Pusher::new(&registry, auth);
            for set in sets {
                let images = catalog::images(set.into()).context("building the test images")?;
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
            }
        }
        Command::List { sets } => {
            for set in sets {
                for image in catalog::images(set.into()).context("building the test images")? {
                    println!(
                        "{}:{} {}",
                        image.repository,
                        image.tags.join(","),
                        image.artifact.manifest().digest
                    );
                }
            }
        }
    }
    Ok(())
}
