//! Prometheus metrics: what keel counts, and the text a scrape gets.
//!
//! One [`Metrics`] per kernel, owned by it and passed to the parts that
//! count (never a global registry): two kernels in one process (tests)
//! keep separate figures. Counters and histograms are updated where things
//! happen (those with fixed label sets start at 0 for every label, so a
//! dashboard has a series before the first failure; those labelled by
//! skill, tool or model appear with their first count); gauges that describe the present (memory, engines alive,
//! approvals waiting) are read when the text is rendered.
//!
//! | metric | labels | counted where |
//! |---|---|---|
//! | `keel_runs_total` | `state` (done, failed, cancelled) | an agent run reaching its final state (`agent::run`) |
//! | `keel_tool_calls_total` | `skill`, `tool`, `outcome` | every tool call, whoever made it (`Kernel::call_tool_inner`) |
//! | `keel_tool_call_duration_seconds` | `skill`, `tool` | same, a histogram |
//! | `keel_model_requests_total` | `model`, `outcome` (ok, error, cancelled) | each request to a provider, retries included (`llm::chain`) |
//! | `keel_model_tokens_total` | `model`, `kind` (input, output) | tokens the provider reported for a request |
//! | `keel_reloads_total` | `outcome` (added, reloaded, removed, failed, held_back, fixed) | each skill a reload changed (`kernel::reload`) |
//! | `keel_config_reloads_total` | `outcome` (ok, failed) | each reload of keel.toml |
//! | `keel_approvals_pending` | — | approval requests waiting, read from the store at render |
//! | `keel_engine_instances` | — | script engine states alive in this process, at render |
//! | `process_resident_memory_bytes` | — | `/proc/self/statm` at render |
//!
//! # Bounded cardinality
//!
//! Label values come from bounded sets only: skill and tool names are those
//! installed (a call to a tool that does not exist is not counted here:
//! its name is whatever the caller typed), model names those configured,
//! outcomes and states fixed lists. A skill removed by a reload keeps its
//! series until the process ends (counters never go backwards).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::stats::CallOutcome;

/// Upper bounds (seconds) of the tool-call latency histogram: from a
/// trivial script call (µs) to a tool that runs a program for a minute.
pub const TOOL_SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The `content-type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolCallLabels {
    skill: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    skill: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How a request to a model provider ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelOutcome {
    /// The provider answered.
    Ok,
    /// The provider failed (a retry or the next model may follow).
    Error,
    /// The request was abandoned before it ended (the run was cancelled
    /// or timed out).
    Cancelled,
}

impl ModelOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }
}

type HistogramFamily = Family<ToolLabels, Histogram, fn() -> Histogram>;

fn tool_histogram() -> Histogram {
    Histogram::new(TOOL_SECONDS_BUCKETS.iter().copied())
}

/// The series of one tool: its latency histogram, and its call counter
/// per outcome, each made on the outcome's first count (so the text shows
/// only outcomes that happened). Counting on it takes no lock and makes no
/// allocation once the outcome's counter exists.
pub struct ToolSeries {
    calls: Family<ToolCallLabels, Counter>,
    skill: String,
    tool: String,
    by_outcome: [std::sync::OnceLock<Counter>; CallOutcome::ALL.len()],
    seconds: Histogram,
}

impl ToolSeries {
    pub fn record(&self, outcome: CallOutcome, took: Duration) {
        let i = CallOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.by_outcome[i]
            .get_or_init(|| {
                self.calls
                    .get_or_create(&ToolCallLabels {
                        skill: self.skill.clone(),
                        tool: self.tool.clone(),
                        outcome: outcome.name(),
                    })
                    .clone()
            })
            .inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

/// keel's metrics (see the module docs for the list).
pub struct Metrics {
    registry: Registry,
    runs: Family<StateLabels, Counter>,
    tool_calls: Family<ToolCallLabels, Counter>,
    tool_seconds: HistogramFamily,
    model_requests: Family<ModelLabels, Counter>,
    model_tokens: Family<TokenLabels, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
    config_reloads: Family<OutcomeLabels, Counter>,
    approvals_pending: Gauge,
    engine_instances: Gauge,
    resident_memory: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let runs = Family::<StateLabels, Counter>::default();
        registry.register(
            "keel_runs",
            "Agent runs that reached a final state, by state (done, failed, cancelled)",
            runs.clone(),
        );
        let tool_calls = Family::<ToolCallLabels, Counter>::default();
        registry.register(
            "keel_tool_calls",
            "Tool calls by skill, tool and outcome (ok, error, invalid_arguments, disabled, limit, busy), from every caller",
            tool_calls.clone(),
        );
        let tool_seconds: HistogramFamily = Family::new_with_constructor(tool_histogram);
        registry.register(
            "keel_tool_call_duration_seconds",
            "Time a tool call took, from its arguments being checked to its result, by skill and tool",
            tool_seconds.clone(),
        );
        let model_requests = Family::<ModelLabels, Counter>::default();
        registry.register(
            "keel_model_requests",
            "Requests to model providers by configured model name and outcome (ok, error, cancelled); each retry is a request",
            model_requests.clone(),
        );
        let model_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "keel_model_tokens",
            "Tokens the model providers reported, by model and kind (input, output)",
            model_tokens.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "keel_reloads",
            "Skill changes applied or refused by hot reloads, by outcome (added, reloaded, removed, failed, held_back, fixed)",
            reloads.clone(),
        );
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "keel_config_reloads",
            "Reloads of keel.toml by outcome (ok, failed)",
            config_reloads.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "keel_approvals_pending",
            "Approval requests waiting for an answer",
            approvals_pending.clone(),
        );
        let engine_instances = Gauge::default();
        registry.register(
            "keel_engine_instances",
            "Script engine states (Luau and Rhai) alive in this process, idle or serving",
            engine_instances.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size of this process in bytes",
            resident_memory.clone(),
        );
        // Series of fixed label sets exist from the start at 0, so a
        // dashboard's rate() has something to work on before the first
        // failure (a family with no series is not rendered at all).
        for state in ["done", "failed", "cancelled"] {
            let _ = runs.get_or_create(&StateLabels { state });
        }
        for outcome in [
            "added",
            "reloaded",
            "removed",
            "failed",
            "held_back",
            "fixed",
        ] {
            let _ = reloads.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["ok", "failed"] {
            let _ = config_reloads.get_or_create(&OutcomeLabels { outcome });
        }
        Self {
            registry,
            runs,
            tool_calls,
            tool_seconds,
            model_requests,
            model_tokens,
            reloads,
            config_reloads,
            approvals_pending,
            engine_instances,
            resident_memory,
        }
    }

    /// An agent run reached its final state (`done`, `failed`,
    /// `cancelled`).
    pub fn run_finished(&self, state: crate::store::RunState) {
        self.runs
            .get_or_create(&StateLabels {
                state: state.name(),
            })
            .inc();
    }

    /// A call of `tool` (`skill.tool`) of an installed skill ended.
    pub fn tool_call(&self, skill: &str, tool: &str, outcome: CallOutcome, took: Duration) {
        self.tool_series(skill, tool).record(outcome, took);
    }

    /// The series of one tool, to keep and count on without looking the
    /// labels up again (the per-call path keeps one per tool).
    pub fn tool_series(&self, skill: &str, tool: &str) -> ToolSeries {
        ToolSeries {
            calls: self.tool_calls.clone(),
            skill: skill.to_string(),
            tool: tool.to_string(),
            by_outcome: Default::default(),
            seconds: self
                .tool_seconds
                .get_or_create(&ToolLabels {
                    skill: skill.to_string(),
                    tool: tool.to_string(),
                })
                .clone(),
        }
    }

    /// One request to a provider ended; `tokens` are what it reported
    /// (input, output), if anything.
    pub fn model_request(&self, model: &str, outcome: ModelOutcome, tokens: Option<(u64, u64)>) {
        self.model_requests
            .get_or_create(&ModelLabels {
                model: model.to_string(),
                outcome: outcome.name(),
            })
            .inc();
        if let Some((input, output)) = tokens {
            for (kind, n) in [("input", input), ("output", output)] {
                self.model_tokens
                    .get_or_create(&TokenLabels {
                        model: model.to_string(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
    }

    /// A reload's report: one count per skill it changed or refused.
    pub fn reloaded(&self, report: &crate::kernel::ReloadReport) {
        use crate::kernel::ReloadOutcome as O;
        for o in &report.outcomes {
            let outcome = match o {
                O::Added { .. } => "added",
                O::Reloaded { .. } => "reloaded",
                O::Removed { .. } => "removed",
                O::Failed { .. } => "failed",
                O::HeldBack { .. } => "held_back",
                O::Fixed { .. } => "fixed",
            };
            self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
        }
    }

    /// keel.toml was reloaded (`ok`) or kept (`failed`).
    pub fn config_reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.config_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the number of approval requests waiting (the kernel reads it
    /// from the store before rendering).
    pub fn set_approvals_pending(&self, n: u64) {
        self.approvals_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format (version 0.0.4), every
    /// metric with its HELP and TYPE. Reads the process's resident memory
    /// and the engine states alive now.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        self.engine_instances
            .set(i64::try_from(crate::script::live_instances()).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// This process's resident set size, from `/proc/self/statm` (pages, its
/// second field); `None` where there is no such file.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric family is in the text with HELP and TYPE, even before
    /// anything was counted, and counted series show with their labels.
    #[test]
    fn every_metric_has_help_and_counted_series_show() {
        let m = Metrics::new();
        m.tool_call(
            "notes",
            "notes.add",
            CallOutcome::Ok,
            Duration::from_millis(3),
        );
        m.model_request("main", ModelOutcome::Ok, Some((10, 4)));
        m.run_finished(crate::store::RunState::Done);
        m.set_approvals_pending(2);
        let text = m.render();
        for name in [
            "keel_runs_total",
            "keel_tool_calls_total",
            "keel_tool_call_duration_seconds",
            "keel_model_requests_total",
            "keel_model_tokens_total",
            "keel_reloads_total",
            "keel_config_reloads_total",
            "keel_approvals_pending",
            "keel_engine_instances",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert!(
            text.contains(
                r#"keel_tool_calls_total{skill="notes",tool="notes.add",outcome="ok"} 1"#
            )
        );
        assert!(text.contains(r#"keel_model_tokens_total{model="main",kind="input"} 10"#));
        assert!(text.contains(r#"keel_runs_total{state="done"} 1"#));
        assert!(text.contains("keel_approvals_pending 2"));
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
    }

    /// A model name is the operator's text: quotes, backslashes and line
    /// breaks in it cannot end the label or add a line.
    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.model_request("a\"b\\c\nd", ModelOutcome::Error, None);
        let text = m.render();
        assert!(
            text.contains(r#"keel_model_requests_total{model="a\"b\\c\nd",outcome="error"} 1"#),
            "{text}"
        );
    }
}
