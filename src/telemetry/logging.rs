//! Log output: text for a person, or one JSON object per line for a log
//! collector.
//!
//! Both formats carry the fields of the spans in scope, so a line logged
//! inside a tool call names its `skill` and `tool`, and one inside an agent
//! run its `run_id` and `session_id` (the spans are opened in
//! `Kernel::call_tool_inner` and `agent::run`; the gateway adds
//! `request_id`). The same field names are used everywhere (code, CLI,
//! config, docs, logs).
//!
//! - **Text**: fields go through [`crate::text::EscapedFields`], so text a
//!   skill logs cannot move the cursor or forge a second line.
//! - **JSON**: `{"timestamp", "level", "fields": {"message", …}, "span",
//!   "spans": [{"name", "run_id", …}, …]}` — tracing-subscriber's JSON
//!   formatter, which escapes by construction (serde), so a field cannot
//!   break the object or the line.

use std::str::FromStr;

/// How log lines are written (`--log-format`, `[telemetry] log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, fields escaped.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "`{other}` is not a log format; use \"text\" or \"json\""
            )),
        }
    }
}

/// What [`init`] needs.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// The filter when `KEEL_LOG` is unset (`warn`, `error`, …).
    pub default_level: String,
    /// The value of `KEEL_LOG`, if set (read by the caller: context is
    /// passed, not fetched).
    pub filter: Option<String>,
    /// Colour codes (text only; never in JSON).
    pub colour: bool,
}

/// Installs the process's log subscriber, writing to standard error. A
/// second call (a subscriber is already installed) changes nothing.
pub fn init(settings: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = settings
        .filter
        .as_deref()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.default_level));
    match settings.format {
        LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(settings.colour)
                .with_writer(std::io::stderr)
                .with_target(false)
                // Skills put text in log fields; a log line stays one
                // true line.
                .fmt_fields(crate::text::EscapedFields)
                .try_init();
        }
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_current_span(true)
                .with_span_list(true)
                .try_init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_say_what_is_allowed() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        let e = "JSON5".parse::<LogFormat>().unwrap_err();
        assert!(e.contains("\"text\" or \"json\""), "{e}");
    }
}
