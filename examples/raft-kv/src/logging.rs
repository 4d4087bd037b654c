//! The `--log` and `--log-format` flags of every `raft-kv` command, and the tracing subscriber they
//! set up on stderr.
//!
//! The filter: `--log` if given, else the `RUST_LOG` environment variable if set and not empty, else
//! `info`; either takes `tracing-subscriber`'s `EnvFilter` syntax (`debug`,
//! `info,raft_core=debug`). An invalid filter is reported on stderr and `info` is used.
//!
//! The formats: `text` (the default: one line per event, the spans' fields before the message,
//! e.g. `raft{node=1}:term{term=3}: raft_core::engine: ...`), `pretty` (several lines per event, for
//! a terminal), `json` (one JSON object per line: `timestamp`, `level`, `fields` with `message`,
//! `target`, `span`, the innermost span with its fields, and `spans`, every span from the outermost
//! in, e.g. `[{"name":"raft","node":1},{"name":"term","term":3}]`).

use std::ffi::OsString;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The filter used when neither `--log` nor `RUST_LOG` gives one.
const DEFAULT_FILTER: &str = "info";

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, span fields before the message.
    #[default]
    Text,
    /// Several indented lines per event, for reading on a terminal.
    Pretty,
    /// One JSON object per line, span fields included (for log pipelines).
    Json,
}

impl LogFormat {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

/// The logging flags (see the [module docs](self)).
#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log filter for tracing on stderr (e.g. `info`, `debug`, `info,raft_core=debug`); takes
    /// precedence over the RUST_LOG environment variable; `info` if neither is given.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log line format on stderr: text (one line per event), pretty (multi-line), json (one JSON
    /// object per line, with the spans' fields: node id, term).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// The filter in force: `--log`, else `RUST_LOG` (`env_filter`, when set and not empty), else
    /// `info`.
    pub fn filter(&self, env_filter: Option<&str>) -> String {
        self.log
            .clone()
            .or_else(|| {
                env_filter
                    .filter(|f| !f.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| DEFAULT_FILTER.to_owned())
    }

    /// The flags that give a child process the same logging (the filter resolved here, so a
    /// child's own environment does not change it).
    pub fn to_args(&self) -> Vec<OsString> {
        let env = std::env::var("RUST_LOG").ok();
        vec![
            "--log".into(),
            self.filter(env.as_deref()).into(),
            "--log-format".into(),
            self.log_format.as_str().into(),
        ]
    }

    /// Installs the global tracing subscriber on stderr. Colors only on a terminal: log files (the
    /// cluster launcher's children, tests) stay plain.
    pub fn init(&self) {
        let env = std::env::var("RUST_LOG").ok();
        let directives = self.filter(env.as_deref());
        let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
            eprintln!("warning: invalid log filter {directives:?} ({e}); using {DEFAULT_FILTER:?}");
            EnvFilter::new(DEFAULT_FILTER)
        });
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder.with_ansi(ansi).init(),
            LogFormat::Pretty => builder.pretty().with_ansi(ansi).init(),
            LogFormat::Json => builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_ansi(false)
                .init(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(log: Option<&str>) -> LogArgs {
        LogArgs {
            log: log.map(str::to_owned),
            log_format: LogFormat::Json,
        }
    }

    #[test]
    fn the_flag_wins_over_rust_log_which_wins_over_the_default() {
        assert_eq!(args(Some("debug")).filter(Some("warn")), "debug");
        assert_eq!(
            args(None).filter(Some("warn,raft_core=trace")),
            "warn,raft_core=trace"
        );
        assert_eq!(
            args(None).filter(Some("  ")),
            "info",
            "an empty RUST_LOG is no filter"
        );
        assert_eq!(args(None).filter(None), "info");
    }

    #[test]
    fn children_get_the_resolved_filter_and_the_format() {
        let a = args(Some("debug")).to_args();
        assert_eq!(
            a,
            ["--log", "debug", "--log-format", "json"].map(OsString::from)
        );
    }
}
