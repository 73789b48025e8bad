//! The `yonggi` command. Modes that must not run inside a multi-threaded
//! process (the container monitor, namespace setup) are dispatched here,
//! before any async runtime exists.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use yonggi::config::{Config, DEFAULT_CONFIG_PATH, LogFormat};

#[derive(Parser)]
#[command(
    name = "yonggi",
    version,
    about = "A Kubernetes container runtime (CRI v1)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CRI RuntimeService and ImageService on the configured socket.
    Serve {
        /// Config file; without it /etc/yonggi/config.toml is read if present.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log filter (overrides RUST_LOG and the config), e.g. `debug`.
        #[arg(long)]
        log_level: Option<String>,
        /// Log format (overrides the config).
        #[arg(long, value_enum)]
        log_format: Option<Format>,
    },
    /// Internal: the per-container monitor, started by the daemon.
    #[command(hide = true)]
    Monitor {
        /// The container's state dir (config.json, monitor.json).
        state_dir: PathBuf,
    },
    /// Internal: run one process in a running container (ExecSync).
    #[command(hide = true)]
    Exec {
        /// The exec spec (JSON `runtime::exec::ExecSpec`).
        spec: PathBuf,
    },
    /// Internal: PID 1 of a pod's PID namespace (started by `serve`).
    #[command(name = "pod-init", hide = true)]
    PodInit {
        /// Network namespace file to join.
        #[arg(long)]
        net: Option<PathBuf>,
        /// IPC namespace file to join.
        #[arg(long)]
        ipc: Option<PathBuf>,
        /// UTS namespace file to join.
        #[arg(long)]
        uts: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            log_level,
            log_format,
        } => serve(config, log_level, log_format),
        // Before any runtime or thread: the monitor forks.
        Command::Monitor { state_dir } => yonggi::monitor::main(&state_dir),
        // Before any runtime or thread: it joins a mount namespace and forks.
        Command::Exec { spec } => yonggi::runtime::exec::main(&spec),
        // Single-threaded: no async runtime exists in this mode, ever.
        Command::PodInit { net, ipc, uts } => {
            yonggi::runtime::pid_holder::run(&yonggi::runtime::pid_holder::HolderArgs {
                net,
                ipc,
                uts,
            })
        }
    }
}

fn fail(err: &dyn std::error::Error) -> ExitCode {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    eprintln!("yonggi: {text}");
    ExitCode::FAILURE
}

fn serve(path: Option<PathBuf>, log_level: Option<String>, log_format: Option<Format>) -> ExitCode {
    let config = match &path {
        Some(path) => Config::load(path, true),
        None => Config::load(PathBuf::from(DEFAULT_CONFIG_PATH).as_path(), false),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let format = match log_format {
        Some(Format::Text) => LogFormat::Text,
        Some(Format::Json) => LogFormat::Json,
        None => config.log.format,
    };
    if let Err(e) = yonggi::logging::init(log_level.as_deref(), &config.log.level, format) {
        eprintln!("yonggi: {e}");
        return ExitCode::FAILURE;
    }
    // Before the runtime starts threads; see limit_malloc_arenas.
    yonggi::runtime::sys::limit_malloc_arenas(2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(yonggi::daemon::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %yonggi::cri::chain(&e), "yonggi failed");
            fail(&e)
        }
    }
}
