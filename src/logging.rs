//! Structured logs through `tracing`: text or JSON on stderr.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. The filter comes from `--log-level` if
/// given, else `RUST_LOG` if set, else the config's `log.level`.
pub fn init(flag_level: Option<&str>, config_level: &str, format: LogFormat) -> Result<(), String> {
    let directive = match (flag_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => level.to_string(),
        (None, Ok(env)) if !env.is_empty() => env,
        _ => config_level.to_string(),
    };
    let filter =
        EnvFilter::try_new(&directive).map_err(|e| format!("log filter {directive:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
