//! Structured logs through `tracing`: text or JSON on stderr.

use std::io::IsTerminal;

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
    let directive = scope_bare_level(&directive);
    let filter =
        EnvFilter::try_new(&directive).map_err(|e| format!("log filter {directive:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// A bare `debug` or `trace` is meant for yonggi's own events: the HTTP/2 and
/// gRPC crates would otherwise log every frame. Full directives pass through.
fn scope_bare_level(directive: &str) -> String {
    match directive.trim() {
        level @ ("debug" | "trace") => format!("info,yonggi={level}"),
        _ => directive.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::scope_bare_level;

    #[test]
    fn bare_verbose_levels_are_scoped_to_yonggi() {
        assert_eq!(scope_bare_level("debug"), "info,yonggi=debug");
        assert_eq!(scope_bare_level("trace"), "info,yonggi=trace");
        assert_eq!(scope_bare_level("info"), "info");
        assert_eq!(
            scope_bare_level("h2=debug,yonggi=trace"),
            "h2=debug,yonggi=trace"
        );
    }
}
