//! Per-skill telemetry: calls, errors and latency percentiles of each tool,
//! since the process started.
//!
//! Counted at the one place every tool call goes through
//! (`Kernel::call_tool_inner`), so a call from the agent, the CLI, the
//! console, the gateway or another script's `keel.tools.call` is counted
//! the same way. Calls are kept per *skill name*, not per version: the
//! figures run on across hot reloads of a skill, which is what an operator
//! watching "is notes healthy" wants. A nested `keel.tools.call` is counted
//! for both tools, and the outer call's time includes the inner one's.
//!
//! # Latency: a log-linear histogram
//!
//! Memory is bounded and independent of the number of calls: each tool
//! keeps one fixed array of [`BUCKETS`] counters (2.4 KiB), allocated on
//! its first call, so the total is bounded by the tools installed. A
//! latency in microseconds below 16 has a bucket of its own (exact);
//! above, each power of two is split into 8 equal buckets, so a bucket is
//! at most 1/8 as wide as its lower edge. Latencies past 2^40 µs (about
//! 12.7 days) share the last bucket.
//!
//! A percentile is the nearest-rank percentile (the smallest recorded
//! latency with at least q of all calls at or below it), reported as the
//! *upper edge* of the bucket that holds it: never below the true value,
//! and at most 12.5 % above it. Percentiles of a whole skill merge its
//! tools' histograms (same buckets), so they are as precise as a tool's.
//!
//! This module is pure bookkeeping: no clock, no I/O (the caller measures).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two (as a shift): 2^3 = 8.
const SUB_BITS: u32 = 3;
/// Latencies below this many µs get a bucket each.
const EXACT: u64 = 1 << (SUB_BITS + 1);
/// The largest power of two with buckets of its own.
const MAX_EXP: u32 = 40;
/// How many buckets a histogram has.
pub const BUCKETS: usize =
    EXACT as usize + ((MAX_EXP - SUB_BITS - 1) as usize) * (1 << SUB_BITS) as usize + 1;

/// How a tool call ended, as counted (and as the `outcome` label of
/// `keel_tool_calls_total`). A fixed set, so label cardinality stays
/// bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallOutcome {
    /// The tool returned a result.
    Ok,
    /// The arguments did not match the tool's schema; nothing ran.
    InvalidArguments,
    /// The skill is disabled; nothing ran.
    Disabled,
    /// A sandbox limit (time, memory, instructions) ended the call.
    Limit,
    /// Every engine of the skill was busy (or a `tools.call` chain could
    /// never get one).
    Busy,
    /// Any other failure: the script raised an error, a capability was
    /// denied, the result could not be converted, keel failed.
    Error,
}

impl CallOutcome {
    /// Every outcome, in label order.
    pub const ALL: [CallOutcome; 6] = [
        Self::Ok,
        Self::InvalidArguments,
        Self::Disabled,
        Self::Limit,
        Self::Busy,
        Self::Error,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::InvalidArguments => "invalid_arguments",
            Self::Disabled => "disabled",
            Self::Limit => "limit",
            Self::Busy => "busy",
            Self::Error => "error",
        }
    }

    /// How a tool call's result is counted.
    pub fn of<T>(result: &Result<T, crate::tool::ToolError>) -> Self {
        use crate::script::ScriptError;
        use crate::tool::ToolError;
        match result {
            Ok(_) => Self::Ok,
            Err(ToolError::InvalidArguments { .. }) => Self::InvalidArguments,
            Err(ToolError::SkillDisabled { .. }) => Self::Disabled,
            Err(ToolError::Script { error, .. }) => match error {
                ScriptError::Limit { .. } => Self::Limit,
                ScriptError::Busy { .. } | ScriptError::Reentrant(_) => Self::Busy,
                _ => Self::Error,
            },
            Err(_) => Self::Error,
        }
    }
}

/// The bucket a latency of `us` microseconds falls in.
fn bucket_of(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros()).min(MAX_EXP);
    if exp == MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + ((exp - SUB_BITS - 1) as usize) * (1 << SUB_BITS) as usize + sub as usize
}

/// The largest latency (µs) bucket `i` holds: what a percentile in it is
/// reported as.
fn upper_edge(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    if i >= BUCKETS - 1 {
        return u64::MAX;
    }
    let k = i - EXACT as usize;
    let exp = (k >> SUB_BITS) as u32 + SUB_BITS + 1;
    let sub = (k & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + (sub + 1) * width - 1
}

/// A latency histogram (see the module docs for its buckets).
#[derive(Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)] += 1;
        self.total += 1;
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The nearest-rank `q`-quantile (0 < q ≤ 1) in microseconds, as the
    /// upper edge of its bucket; `None` when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_edge(i));
            }
        }
        Some(upper_edge(BUCKETS - 1))
    }

    /// The `q`-quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile_us(q).map(|us| us as f64 / 1000.0)
    }
}

/// One tool's tally, and its Prometheus series (looked up once).
struct ToolTally {
    outcomes: BTreeMap<CallOutcome, u64>,
    latency: LatencyHistogram,
    series: Option<super::metrics::ToolSeries>,
}

/// A tool's figures, as the API shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ToolStats {
    pub calls: u64,
    /// Calls that did not end [`CallOutcome::Ok`].
    pub errors: u64,
    /// Calls by outcome (`ok`, `error`, `invalid_arguments`, …); outcomes
    /// never seen are left out.
    pub outcomes: BTreeMap<CallOutcome, u64>,
    /// Latency percentiles in milliseconds (upper bucket edges, see the
    /// module docs); `None` before the first call.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A skill's figures: its tools' summed, and each tool's.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SkillStats {
    pub skill: String,
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Per tool (`skill.tool`), only tools called at least once.
    pub tools: BTreeMap<String, ToolStats>,
}

fn tool_stats(outcomes: &BTreeMap<CallOutcome, u64>, h: &LatencyHistogram) -> ToolStats {
    let calls: u64 = outcomes.values().sum();
    ToolStats {
        calls,
        errors: calls - outcomes.get(&CallOutcome::Ok).copied().unwrap_or(0),
        outcomes: outcomes.clone(),
        p50_ms: h.quantile_ms(0.50),
        p95_ms: h.quantile_ms(0.95),
        p99_ms: h.quantile_ms(0.99),
    }
}

/// Tallies of every tool called since the process started, by skill.
#[derive(Default)]
pub struct CallStats {
    /// skill name → tool (`skill.tool`) → tally.
    skills: Mutex<HashMap<String, BTreeMap<String, ToolTally>>>,
}

impl CallStats {
    /// Counts one call of `tool` (`skill.tool`) of `skill`, here and (when
    /// given) in the Prometheus metrics.
    pub fn record(
        &self,
        skill: &str,
        tool: &str,
        outcome: CallOutcome,
        latency: Duration,
        metrics: Option<&super::Metrics>,
    ) {
        let mut skills = self.skills.lock().unwrap_or_else(|p| p.into_inner());
        let tools = match skills.get_mut(skill) {
            Some(t) => t,
            None => skills.entry(skill.to_string()).or_default(),
        };
        let tally = match tools.get_mut(tool) {
            Some(t) => t,
            None => tools.entry(tool.to_string()).or_insert_with(|| ToolTally {
                outcomes: BTreeMap::new(),
                latency: LatencyHistogram::default(),
                series: metrics.map(|m| m.tool_series(skill, tool)),
            }),
        };
        *tally.outcomes.entry(outcome).or_default() += 1;
        tally.latency.record(latency);
        if let Some(series) = &tally.series {
            series.record(outcome, latency);
        }
    }

    /// The figures of skill `name` (all zero if it was never called).
    pub fn skill(&self, name: &str) -> SkillStats {
        let skills = self.skills.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = SkillStats {
            skill: name.to_string(),
            ..Default::default()
        };
        let Some(tools) = skills.get(name) else {
            return out;
        };
        let mut all = LatencyHistogram::default();
        for (tool, tally) in tools {
            let s = tool_stats(&tally.outcomes, &tally.latency);
            out.calls += s.calls;
            out.errors += s.errors;
            all.merge(&tally.latency);
            out.tools.insert(tool.clone(), s);
        }
        out.p50_ms = all.quantile_ms(0.50);
        out.p95_ms = all.quantile_ms(0.95);
        out.p99_ms = all.quantile_ms(0.99);
        out
    }

    /// The names of every skill called since the process started.
    pub fn skills(&self) -> Vec<String> {
        let skills = self.skills.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = skills.keys().cloned().collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_line_and_stay_within_an_eighth() {
        // Every bucket's upper edge is the next one's lower edge minus one,
        // and each value lands in a bucket whose edge is ≥ it and at most
        // 12.5 % above.
        let mut prev_edge: Option<u64> = None;
        for i in 0..BUCKETS - 1 {
            let edge = upper_edge(i);
            if let Some(p) = prev_edge {
                assert_eq!(bucket_of(p + 1), i, "lower edge of bucket {i}");
            }
            assert_eq!(bucket_of(edge), i, "upper edge of bucket {i}");
            prev_edge = Some(edge);
        }
        let mut v = 1u64;
        while v < 1 << MAX_EXP {
            for x in [v, v + v / 3, v + v / 2, 2 * v - 1] {
                let e = upper_edge(bucket_of(x));
                assert!(e >= x, "{x} reported as {e}");
                assert!((e - x) as f64 <= x as f64 / 8.0, "{x} reported as {e}");
            }
            v *= 2;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(1 << MAX_EXP), BUCKETS - 1);
    }

    /// The reported percentiles against the exact nearest-rank ones over
    /// many pseudo-random latencies spanning six decades.
    #[test]
    fn percentiles_are_never_below_and_at_most_an_eighth_above_the_exact_ones() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for n in [1usize, 2, 3, 10, 99, 1000, 20_000] {
            let mut h = LatencyHistogram::default();
            let mut exact = Vec::with_capacity(n);
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let us = 1 + (seed % 1_000_000) * (seed >> 60) / 3;
                exact.push(us);
                h.record(Duration::from_micros(us));
            }
            exact.sort_unstable();
            for q in [0.5, 0.95, 0.99, 1.0] {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                let want = exact[rank - 1];
                let got = h.quantile_us(q).unwrap();
                assert!(got >= want, "n={n} q={q}: {got} < {want}");
                assert!(
                    (got - want) as f64 <= want as f64 / 8.0,
                    "n={n} q={q}: {got} vs {want}"
                );
            }
        }
        assert_eq!(LatencyHistogram::default().quantile_us(0.5), None);
    }

    #[test]
    fn a_skill_sums_its_tools_and_counts_errors_by_outcome() {
        let s = CallStats::default();
        for i in 0..90 {
            s.record(
                "notes",
                "notes.add",
                CallOutcome::Ok,
                Duration::from_micros(100 + i),
                None,
            );
        }
        for _ in 0..10 {
            s.record(
                "notes",
                "notes.list",
                CallOutcome::Error,
                Duration::from_millis(50),
                None,
            );
        }
        s.record(
            "notes",
            "notes.add",
            CallOutcome::Disabled,
            Duration::ZERO,
            None,
        );
        let st = s.skill("notes");
        assert_eq!((st.calls, st.errors), (101, 11));
        assert_eq!(st.tools["notes.add"].calls, 91);
        assert_eq!(st.tools["notes.add"].outcomes[&CallOutcome::Disabled], 1);
        assert_eq!(st.tools["notes.list"].errors, 10);
        // 90 of 101 calls took ~0.1 ms, 10 took 50 ms.
        assert!(st.p50_ms.unwrap() < 0.2, "{st:?}");
        assert!(st.p95_ms.unwrap() >= 50.0, "{st:?}");
        assert!(st.p99_ms.unwrap() <= 50.0 * 1.125, "{st:?}");
        let none = s.skill("other");
        assert_eq!((none.calls, none.p50_ms), (0, None));
        assert_eq!(s.skills(), ["notes"]);
    }
}
