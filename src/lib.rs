//! keel: an agent kernel you extend with capability-gated Luau and Rhai skills.
//!
//! # Layout
//!
//! - [`agent`] — the agent: the model/tool loop over the kernel's tools,
//!   lanes per session, cancellation, approvals, the context guard, the run
//!   state machine and crash recovery.
//! - [`kernel`] — the [`Kernel`](kernel::Kernel): owns the store, the gate,
//!   the skill set and the event bus; tool calls and reloads start here.
//!   [`kernel::gate`] is the one place effects are checked.
//! - [`capability`] — pure: capability names and scopes, matching, policy
//!   decisions (deny > ask > allow); no I/O, no store.
//! - [`host`] — the host API, each function declared once with its
//!   capability and bound into both engines.
//! - [`sandbox`] — what confines the programs a skill runs (Landlock,
//!   no_new_privs, process groups, PID namespaces), built from the skill's
//!   grants; scrubbing keel's own environment block.
//! - [`script`] — the engines (Luau, Rhai) behind one trait; sandbox limits.
//! - [`skill`] — manifests, `SKILL.md` (the Agent Skills format),
//!   discovery, dependency resolution, the loaded set, built-in skills,
//!   file watching.
//! - [`tool`] — tool names, argument validation, call errors, and keel's
//!   own tools (`skills.activate`, `skills.read`, `tools.search`).
//! - [`llm`] — model providers (OpenAI-compatible, Anthropic) over SSE with
//!   tool calling, and fallback chains with retries and cooldowns.
//! - [`store`] — SQLite: grants, audit log, key-value data, sessions, runs,
//!   the transcript, approvals, token usage.
//! - [`config`] — `keel.toml`.
//! - [`gateway`] — `keel serve`: the HTTP API, event streams (SSE), the
//!   token, `Host`/`Origin` checks and rate limits in front of them.
//! - [`telemetry`] — per-skill call figures, Prometheus metrics, and the
//!   log subscriber (text or JSON lines with the ids in scope).
//! - [`commands`] — one implementation per command shared by the CLI and
//!   the console (`keel grant` and `/grant`), rendering text or JSON.
//! - [`repl`] — the console and the terminal side of talking to the agent
//!   (also used by `keel ask`).
//! - [`paths`] — resolving paths on disk (symlinks followed), handed to
//!   `capability` so it stays pure.
//! - [`text`] — the one escape for text that reaches a terminal or a text
//!   log (control characters and bidi overrides made visible).
//! - [`docs`] — the host API reference and editor definitions, generated
//!   from the host declarations.
//!
//! The one rule: every effect a script can cause passes through a host
//! function, and every host function checks its capability at the gate.

pub mod agent;
pub mod capability;
pub mod commands;
pub mod config;
pub mod docs;
pub mod gateway;
pub mod host;
pub mod kernel;
pub mod llm;
pub mod paths;
pub mod repl;
pub mod sandbox;
pub mod script;
pub mod skill;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tool;

pub use kernel::Kernel;
