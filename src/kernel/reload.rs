//! Reloading skills: build the new set on the side, validate what changed,
//! then swap.
//!
//! A changed or new skill version is compiled and its load phase run in a
//! fresh engine before the swap. A version that fails to parse, compile, load
//! or resolve never replaces the working one: the previous candidate from the
//! same place is put back and the failure is reported (file, line, message).
//! Skills that depend on a changed skill get new versions too, since their
//! engines hold the old dependency's code. Calls in flight keep their own
//! `Arc` of the old version and finish on it.
//!
//! A rewrite in place (truncate, then write) can be seen half done: a
//! script or manifest that was there and is now empty. That is not a new
//! version, and not a removal: the working version keeps serving, nothing
//! is reported, and the report lists the origin as `incomplete` so the
//! watcher looks again after the debounce. Only [`Kernel::reload_settled`]
//! (when the file stays empty) takes an emptied file at its word.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Kernel, KernelEvent};
use crate::skill::{Candidate, Origin, SkillFailure, SkillSet};

/// What happened to one skill in a reload.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// A new skill was loaded.
    Added { skill: String },
    /// A changed skill now serves its new version.
    Reloaded { skill: String },
    /// A skill was removed (its files are gone).
    Removed { skill: String },
    /// The new version failed; `kept` is the version still serving, if any.
    Failed {
        origin: Origin,
        error: String,
        kept: Option<String>,
    },
    /// A new copy claims a skill name that belongs to other origins here:
    /// it is not loaded until the operator accepts it.
    HeldBack { origin: Origin, reason: String },
    /// A skill whose last change failed is whole again: its files are back
    /// to the version that kept serving (so nothing new loads), and the
    /// failure no longer stands.
    Fixed { skill: String },
}

/// The result of one reload.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    pub outcomes: Vec<ReloadOutcome>,
    /// Skills seen mid-rewrite (a file of theirs emptied): their working
    /// version was kept without a word; look again shortly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<Origin>,
}

impl ReloadReport {
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, ReloadOutcome::Failed { .. }))
    }
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Added { skill } => write!(f, "loaded {skill}"),
            Self::Reloaded { skill } => write!(f, "reloaded {skill}"),
            Self::Removed { skill } => write!(f, "unloaded {skill}"),
            Self::Failed { error, kept, .. } => match kept {
                Some(k) => write!(f, "reload failed, still serving {k}: {error}"),
                None => write!(f, "load failed: {error}"),
            },
            Self::HeldBack { reason, .. } => write!(f, "new claimant held back: {reason}"),
            Self::Fixed { skill } => write!(f, "fixed: {skill} is whole again (still serving it)"),
        }
    }
}

fn by_origin(set: &SkillSet) -> BTreeMap<Origin, &Candidate> {
    set.candidates
        .iter()
        .map(|c| (c.source.origin.clone(), c))
        .collect()
}

/// Whether `path` exists as an empty file.
fn is_empty_file(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Whether `new` (what discovery made of `old`'s origin now, if anything)
/// looks like `old` caught between the truncate and the write of an
/// in-place rewrite: its manifest file is empty, or one of its scripts is
/// empty where the working version's was not.
fn caught_mid_write(old: &Candidate, new: Option<&Candidate>) -> bool {
    if matches!(old.source.origin, Origin::Builtin(_)) {
        return false;
    }
    match new {
        None => is_empty_file(&old.source.manifest_path),
        Some(n) => n.source.files.iter().any(|(rel, text)| {
            text.is_empty() && old.source.files.get(rel).is_some_and(|t| !t.is_empty())
        }),
    }
}

fn label(c: &Candidate) -> String {
    // The Agent Skills format has no versions: an instructions skill is
    // its name.
    if c.source.kind == crate::skill::SkillKind::Instructions {
        return c.manifest.name.clone();
    }
    format!("{}@{}", c.manifest.name, c.manifest.version)
}

impl Kernel {
    /// Rescans every skill, validates what changed, swaps the new set in and
    /// reports. Reloads are serialised. A skill caught mid-rewrite keeps its
    /// working version (see the module docs).
    pub fn reload(&self) -> Arc<ReloadReport> {
        self.reload_inner(true)
    }

    /// Like [`reload`](Self::reload), but an emptied file is taken as meant:
    /// for the watcher, once a file has stayed empty past its retries.
    pub fn reload_settled(&self) -> Arc<ReloadReport> {
        self.reload_inner(false)
    }

    fn reload_inner(&self, defer_emptied: bool) -> Arc<ReloadReport> {
        let _serial = self.0.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.skills();
        let old_by_origin = by_origin(&old);
        let (mut candidates, mut scan_failures) =
            crate::skill::discover(&self.search_path(), &self.scope_base());

        let mut report = ReloadReport::default();
        if defer_emptied {
            for (origin, old_c) in &old_by_origin {
                let new = candidates.iter().find(|c| &c.source.origin == origin);
                if caught_mid_write(old_c, new) {
                    candidates.retain(|c| &c.source.origin != origin);
                    scan_failures.retain(|f| &f.origin != origin);
                    candidates.push((*old_c).clone());
                    report.incomplete.push(origin.clone());
                }
            }
        }
        // A failure already reported by the previous reload (the same broken
        // file, still on disk) stays in the set but is not reported again
        // each time some other skill changes.
        let known = |origin: &Origin, error: &str| {
            old.failures
                .iter()
                .any(|f| &f.origin == origin && f.error == error)
        };
        let mut kept_failures: Vec<SkillFailure> = Vec::new();
        let mut failed_origins: BTreeSet<Origin> = BTreeSet::new();
        // A skill whose manifest no longer parses keeps its old version.
        for f in scan_failures {
            let kept = old_by_origin.get(&f.origin).map(|c| {
                candidates.push((*c).clone());
                label(c)
            });
            failed_origins.insert(f.origin.clone());
            if !known(&f.origin, &f.error) {
                report.outcomes.push(ReloadOutcome::Failed {
                    origin: f.origin.clone(),
                    error: f.error.clone(),
                    kept,
                });
            }
            kept_failures.push(f);
        }

        // Validate new and changed versions; put back the old candidate for
        // each that fails, and go again (its dependents must be rebuilt on
        // the old one). Each round removes at least one changed candidate,
        // so this ends.
        let mut validated: BTreeSet<(Origin, u64)> = BTreeSet::new();
        let mut set;
        loop {
            set = self.assemble(candidates.clone(), kept_failures.clone(), Some(&old));
            let mut reverted = false;
            // Dependencies first: a dependency's closure is strictly smaller
            // than any dependent's, so a failure is pinned on the skill that
            // changed, not on the unchanged skill that loads it.
            let mut order: Vec<_> = set.skills.values().cloned().collect();
            order.sort_by_key(|s| s.closure().len());
            for skill in &order {
                let unchanged = old
                    .skills
                    .get(&skill.id)
                    .is_some_and(|o| Arc::ptr_eq(o, skill));
                let key = (skill.source.origin.clone(), skill.source.fingerprint);
                // An instructions skill has no code: its SKILL.md was
                // checked when it was found.
                if unchanged
                    || skill.is_instructions()
                    || validated.contains(&key) && skill.pool.live() > 0
                {
                    continue;
                }
                let error = match self.instantiate(skill) {
                    Ok(instance) => {
                        skill.pool.offer(instance);
                        validated.insert(key);
                        continue;
                    }
                    Err(e) => e.to_string(),
                };
                // Undo every change this skill loads (itself included): a
                // changed skill gets its previous version back, a new one is
                // left out. Each undone change is reported where it was
                // made. With nothing to undo, the skill itself is left out.
                let mut record =
                    |origin: &Origin, skill_id: String, error: String, kept: Option<String>| {
                        failed_origins.insert(origin.clone());
                        if !known(origin, &error) {
                            report.outcomes.push(ReloadOutcome::Failed {
                                origin: origin.clone(),
                                error: error.clone(),
                                kept,
                            });
                        }
                        kept_failures.push(SkillFailure {
                            skill: Some(skill_id),
                            origin: origin.clone(),
                            error,
                        });
                    };
                let mut undone = false;
                for s in skill.closure() {
                    let origin = &s.source.origin;
                    let why = if Arc::ptr_eq(&s, skill) {
                        error.clone()
                    } else {
                        format!("{} fails to load with this version: {error}", skill.id)
                    };
                    match old_by_origin.get(origin).copied() {
                        Some(c) if c.source.fingerprint == s.source.fingerprint => continue,
                        Some(c) => {
                            candidates.retain(|x| &x.source.origin != origin);
                            candidates.push(c.clone());
                            record(origin, s.id.to_string(), why, Some(label(c)));
                        }
                        None => {
                            candidates.retain(|x| &x.source.origin != origin);
                            record(origin, s.id.to_string(), why, None);
                        }
                    }
                    undone = true;
                }
                if !undone {
                    let origin = &skill.source.origin;
                    candidates.retain(|x| &x.source.origin != origin);
                    record(origin, skill.id.to_string(), error, None);
                }
                reverted = true;
                break;
            }
            if !reverted {
                break;
            }
        }

        // What changed, by origin.
        let new_by_origin = by_origin(&set);
        for (origin, c) in &new_by_origin {
            match old_by_origin.get(origin) {
                None => report
                    .outcomes
                    .push(ReloadOutcome::Added { skill: label(c) }),
                Some(o) if o.source.fingerprint != c.source.fingerprint => report
                    .outcomes
                    .push(ReloadOutcome::Reloaded { skill: label(c) }),
                // Unchanged, but its origin's failure is gone: the broken
                // edit was undone. Without this the person who fixed it
                // hears nothing.
                Some(_)
                    if old.failures.iter().any(|f| &f.origin == origin)
                        && !failed_origins.contains(origin) =>
                {
                    report
                        .outcomes
                        .push(ReloadOutcome::Fixed { skill: label(c) })
                }
                Some(_) => {}
            }
        }
        for (origin, c) in &old_by_origin {
            if !new_by_origin.contains_key(origin) && !failed_origins.contains(origin) {
                report
                    .outcomes
                    .push(ReloadOutcome::Removed { skill: label(c) });
            }
        }
        // A copy newly held back as a claimant of a known name is shown
        // where the operator is, once.
        for c in &set.claimants {
            let known = old
                .claimants
                .iter()
                .any(|o| o.origin == c.origin && o.reason == c.reason);
            if !known {
                report.outcomes.push(ReloadOutcome::HeldBack {
                    origin: c.origin.clone(),
                    reason: c.reason.clone(),
                });
            }
        }
        self.0.skills.store(Arc::new(set));
        self.0.metrics.reloaded(&report);
        let report = Arc::new(report);
        // A report with only `incomplete` is sent too (front ends show
        // nothing for it): whoever waits on the watcher can see it looked.
        if !report.is_empty() || !report.incomplete.is_empty() {
            // Where a front end shows reloads (the console), the log keeps
            // them at info level so they are not printed twice.
            let shown = self.0.events.receiver_count() > 0;
            for o in &report.outcomes {
                match o {
                    ReloadOutcome::Failed { .. } | ReloadOutcome::HeldBack { .. } if !shown => {
                        tracing::warn!("{o}")
                    }
                    _ => tracing::info!("{o}"),
                }
            }
            let _ = self.0.events.send(KernelEvent::Reloaded(report.clone()));
        }
        report
    }
}
