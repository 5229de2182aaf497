//! Logging: every event of the daemon goes through `tracing`, written by
//! `tracing-subscriber`.
//!
//! Invariants:
//! - The filter comes from `SLUICE_LOG`, else `RUST_LOG`, else the
//!   configuration's `daemon.log_level` (default `info`); a filter that does
//!   not parse is an error naming where it came from, never silently ignored.
//! - Events at `WARN` and `ERROR` go to stderr, the others to stdout, in both
//!   formats, so start-up lines (`port … xdp=…`, `running`, `stopped`) are on
//!   stdout and refusals on stderr.
//! - The text format has no colours unless stdout is a terminal.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// The environment variables read for the filter, first found wins.
pub const ENV_FILTERS: [&str; 2] = ["SLUICE_LOG", "RUST_LOG"];

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A filter did not parse.
    #[error("{origin}: bad log filter `{filter}`: {message}")]
    Filter {
        /// `SLUICE_LOG`, `RUST_LOG` or `daemon.log_level`.
        origin: String,
        /// The filter as given.
        filter: String,
        /// What the parser said.
        message: String,
    },
    /// A subscriber was already installed.
    #[error("logging is already set up: {0}")]
    AlreadySet(String),
}

/// Picks the filter: the first non-empty variable of [`ENV_FILTERS`] in
/// `env`, else `configured` (from `daemon.log_level`); with its origin.
pub fn choose_filter(env: impl Fn(&str) -> Option<String>, configured: &str) -> (String, String) {
    for var in ENV_FILTERS {
        if let Some(v) = env(var).filter(|v| !v.trim().is_empty()) {
            return (var.to_string(), v);
        }
    }
    ("daemon.log_level".to_string(), configured.to_string())
}

/// Parses a filter, naming its origin when it does not parse.
pub fn parse_filter(origin: &str, filter: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| LoggingError::Filter {
            origin: origin.to_string(),
            filter: filter.to_string(),
            message: e.to_string(),
        })
}

/// Installs the process's subscriber: the filter from the environment or
/// `configured_level`, written as `format`.
pub fn init(configured_level: &str, format: LogFormat) -> Result<(), LoggingError> {
    let (origin, filter) = choose_filter(|v| std::env::var(v).ok(), configured_level);
    install(parse_filter(&origin, &filter)?, format)
}

/// Installs a text subscriber for errors met before (or while) the
/// configured one could be: the environment's filter if it parses, else
/// `info`. Does nothing if a subscriber is already installed.
pub fn init_fallback() {
    let filter = init_filter_from_env().unwrap_or_else(|| EnvFilter::new("info"));
    let _ = install(filter, LogFormat::Text);
}

fn init_filter_from_env() -> Option<EnvFilter> {
    let (origin, filter) = choose_filter(|v| std::env::var(v).ok(), "info");
    parse_filter(&origin, &filter).ok()
}

fn install(filter: EnvFilter, format: LogFormat) -> Result<(), LoggingError> {
    let writer = std::io::stderr
        .with_max_level(tracing::Level::WARN)
        .or_else(std::io::stdout);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| LoggingError::AlreadySet(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_configuration() {
        let env = |v: &str| (v == "RUST_LOG").then(|| "debug".to_string());
        assert_eq!(
            choose_filter(env, "warn"),
            ("RUST_LOG".into(), "debug".into())
        );
        let env = |v: &str| Some(format!("{v}-value"));
        assert_eq!(choose_filter(env, "warn").0, "SLUICE_LOG");
        let env = |v: &str| (v == "SLUICE_LOG").then(|| "  ".to_string());
        assert_eq!(
            choose_filter(env, "warn"),
            ("daemon.log_level".into(), "warn".into())
        );
    }

    #[test]
    fn a_bad_filter_names_where_it_came_from() {
        assert!(parse_filter("daemon.log_level", "sluiced=debug,info").is_ok());
        let e = parse_filter("daemon.log_level", "sluiced=loud").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("daemon.log_level: bad log filter `sluiced=loud`"),
            "{e}"
        );
    }
}
