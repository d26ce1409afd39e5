//! Reloading a skill frees its old version: engines, sources and all.
//!
//! The bug this pins: an engine state lives in its skill version's pool,
//! and the engine's `require` (Luau) or module resolver (Rhai) held that
//! same version strongly — a cycle, so every reload kept ~250 KB forever.
//! These tests hold a `Weak` to the old version and fail if it survives the
//! swap once the calls on it are done; the RSS test reloads one skill 1,000
//! times and checks the process's resident memory comes back
//! (`tests/reload_rss.rs`).

mod common;

use std::sync::{Arc, Weak};

use common::{Ws, runtime};
use keel::skill::LoadedSkill;
use serde_json::json;

use common::leaky::*;

fn version_of(k: &keel::Kernel, name: &str) -> Weak<LoadedSkill> {
    let set = k.skills();
    let s = set
        .skills
        .values()
        .find(|s| s.identity.name == name)
        .unwrap_or_else(|| panic!("{name} is not loaded: {:?}", set.failures));
    Arc::downgrade(s)
}

fn old_version_is_dropped(ws: Ws, skill: &str, file: &str, src: fn(usize) -> String) {
    let rt = runtime();
    let k = ws.kernel(&rt);
    let tool = format!("{skill}.hi");
    rt.block_on(k.call_tool(&tool, json!({}))).unwrap();
    let old = version_of(&k, skill);
    ws.write(file, &src(2));
    let report = k.reload();
    assert!(!report.failed(), "{report:?}");
    rt.block_on(k.call_tool(&tool, json!({}))).unwrap();
    let new = version_of(&k, skill);
    assert!(
        !Weak::ptr_eq(&old, &new),
        "the reload did not make a new version"
    );
    assert!(
        old.upgrade().is_none(),
        "the old version of {skill} is still alive after the swap ({} strong refs): something holds it in a cycle",
        old.strong_count()
    );
}

#[test]
fn a_reloaded_luau_version_is_dropped() {
    let ws = Ws::new()
        .skill(
            "leaky",
            LUAU_MANIFEST,
            &[("main.luau", &luau_src(1)), ("util.luau", LUAU_UTIL)],
        )
        .skill("lib", LIB_MANIFEST, &[("main.luau", LIB_SRC)])
        .policy("");
    old_version_is_dropped(ws, "leaky", "skills/leaky/main.luau", luau_src);
}

#[test]
fn a_reloaded_rhai_version_is_dropped() {
    let ws = Ws::new()
        .skill(
            "leakyr",
            RHAI_MANIFEST,
            &[("main.rhai", &rhai_src(1)), ("util.rhai", RHAI_UTIL)],
        )
        .policy("");
    old_version_is_dropped(ws, "leakyr", "skills/leakyr/main.rhai", rhai_src);
}

/// A dependency reloaded under a dependent: both old versions go.
#[test]
fn a_reloaded_dependency_and_its_dependents_old_versions_are_dropped() {
    let ws = Ws::new()
        .skill(
            "leaky",
            LUAU_MANIFEST,
            &[("main.luau", &luau_src(1)), ("util.luau", LUAU_UTIL)],
        )
        .skill("lib", LIB_MANIFEST, &[("main.luau", LIB_SRC)])
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    rt.block_on(k.call_tool("leaky.hi", json!({}))).unwrap();
    let old_lib = version_of(&k, "lib");
    let old_leaky = version_of(&k, "leaky");
    ws.write(
        "skills/lib/main.luau",
        "local M = {}\nfunction M.word() return 'lib2' end\nreturn M\n",
    );
    assert!(!k.reload().failed());
    assert_eq!(
        rt.block_on(k.call_tool("leaky.hi", json!({}))).unwrap(),
        json!("2lib2")
    );
    assert!(old_leaky.upgrade().is_none(), "old dependent survived");
    assert!(old_lib.upgrade().is_none(), "old dependency survived");
}
