//! Telemetry: what keel measures about itself, and where it goes.
//!
//! - [`stats`] — per-skill telemetry (calls, errors, p50/p95/p99 latency per
//!   tool) since the process started, in memory and bounded; counted at the
//!   one place tool calls go through, `Kernel::call_tool_inner`, and read
//!   with `Kernel::skill_stats`.
//! - [`metrics`] — the Prometheus metrics (runs, tool calls and their
//!   latency, model requests and tokens, reloads, approvals waiting,
//!   engines alive, resident memory), owned by the kernel and rendered in
//!   the Prometheus text format by `Kernel::metrics_text`. Counted in the
//!   kernel (tool calls, reloads), the agent (runs), the model chain
//!   (requests, tokens) and the script pools (engines).
//! - [`logging`] — the log subscriber: text, or one JSON object per line
//!   with the ids of the spans in scope (`run_id`, `session_id`, `skill`,
//!   `tool`, and the gateway's `request_id`).
//!
//! Nothing here is global: the kernel owns its [`metrics::Metrics`] and
//! [`stats::CallStats`] and hands them to whoever counts. The one
//! process-wide figure is the number of engine states alive
//! (`script::live_instances`), which, like resident memory, is a fact
//! about the process.

pub mod logging;
pub mod metrics;
pub mod stats;

pub use logging::LogFormat;
pub use metrics::Metrics;
pub use stats::{CallOutcome, CallStats, SkillStats, ToolStats};
