//! `yonggi-bench`: the lifecycle benchmark, against any CRI endpoint.
//!
//! `hack/bench.sh` drives it: it publishes the images (`push`), runs the
//! workload against yonggi and, with `--compare containerd`, against a
//! containerd on temp roots (`run`), then joins the results (`table`).
//! The workload is described in README, "Performance".

mod cri;
mod images;
mod procfs;
mod report;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "yonggi-bench", version, about = "CRI lifecycle benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push busybox, the ~100 MB pull image and a pause image to a registry.
    Push {
        /// `host:port`, plain HTTP.
        #[arg(long)]
        registry: String,
    },
    /// Run the workload against one CRI endpoint and write its results.
    Run(RunArgs),
    /// Join result files into one table (a ratio column for two).
    Table {
        /// When it ran, for the heading.
        #[arg(long)]
        date: String,
        /// Also write the table (markdown) here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra lines for the heading (e.g. versions).
        #[arg(long = "note")]
        notes: Vec<String>,
        results: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// `unix:///path/to.sock`.
    #[arg(long)]
    endpoint: String,
    /// Column name in the table.
    #[arg(long)]
    name: String,
    /// The daemon's pid; default: the owner of the socket (`ss -xlp`).
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Processes whose command line contains this count as the runtime's
    /// per-pod helpers (monitors, holders, shims): a path only this
    /// runtime instance uses.
    #[arg(long)]
    helper_match: String,
    #[arg(long, default_value_t = 50)]
    lifecycles: usize,
    #[arg(long, default_value_t = 100)]
    parallel: usize,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    #[arg(long, default_value = "docker.io/yonggi-test/busybox:latest")]
    image: String,
    #[arg(long, default_value = "docker.io/yonggi-test/big:latest")]
    big_image: String,
    /// Images pulled before anything is measured (containerd's pause).
    #[arg(long = "pre-pull")]
    pre_pull: Vec<String>,
    /// Parent cgroup of the pods (cgroupfs form), removed by the caller.
    #[arg(long)]
    cgroup_parent: String,
    /// The results, JSON.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("yonggi-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("yonggi-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)`: ran, but something failed (told in the results).
async fn dispatch(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Push { registry } => images::push(&registry).await.map(|()| true),
        Command::Run(args) => run(args).await,
        Command::Table {
            date,
            out,
            notes,
            results,
        } => {
            let mut runs = Vec::new();
            for path in &results {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let run: report::Run = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                runs.push(run);
            }
            let mut text = format!("Run {date} on {}.\n", procfs::machine());
            for run in &runs {
                text.push_str(&format!("- {}: {}\n", run.runtime, run.version));
            }
            for note in notes {
                text.push_str(&format!("- {note}\n"));
            }
            text.push('\n');
            text.push_str(&report::table(&runs));
            print!("{text}");
            if let Some(out) = out {
                std::fs::write(&out, &text)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            Ok(!runs.iter().any(report::Run::failed))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    eprintln!("yonggi-bench: {}", procfs::machine());
    let daemon_pid = match args.daemon_pid {
        Some(pid) => pid,
        None => procfs::socket_owner(&args.endpoint)?,
    };
    let clients = cri::connect(&args.endpoint).await?;
    let mut out = report::Run::new(&args.name);
    let mut rt = clients.runtime.clone();
    let version = rt
        .version(k8s_cri::v1::VersionRequest::default())
        .await
        .context("Version")?
        .into_inner();
    out.version = format!("{} {}", version.runtime_name, version.runtime_version);
    let run_id = format!("{}-{}", args.name, std::process::id());
    let options = workload::Options {
        spec: cri::PodSpec {
            run_id: run_id.clone(),
            cgroup_parent: args.cgroup_parent,
            image: args.image,
        },
        big_image: args.big_image,
        pre_pull: args.pre_pull,
        lifecycles: args.lifecycles,
        parallel: args.parallel,
        concurrency: args.concurrency,
        daemon_pid,
        helper_match: args.helper_match,
    };
    eprintln!(
        "yonggi-bench: {} ({}, pid {daemon_pid}): {} lifecycles, {} pods in parallel",
        args.name, out.version, options.lifecycles, options.parallel
    );
    workload::run(&clients, &options, &mut out).await;
    // Whatever a failure left behind goes, and a clean run leaves nothing.
    let left = match workload::sweep(&clients, &run_id).await {
        Ok(0) => report::Value::Num(0.0),
        Ok(n) => report::Value::Failed(format!("{n} pods were left behind")),
        Err(cri::StepError::Unimplemented(rpc)) => report::Value::Unimplemented(rpc.into()),
        Err(e) => report::Value::Failed(e.to_string()),
    };
    out.push(
        "leftover",
        "pods left after the workload",
        report::Unit::Count,
        left,
    );
    let json = serde_json::to_string_pretty(&out).context("serializing the results")?;
    std::fs::write(&args.out, json).with_context(|| format!("writing {}", args.out.display()))?;
    print!("{}", report::table(std::slice::from_ref(&out)));
    Ok(!out.failed())
}
