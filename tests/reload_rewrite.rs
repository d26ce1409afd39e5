//! An in-place rewrite (truncate, then write) seen half done does not fail
//! a call: the working version keeps serving, nothing is reported, and the
//! finished write is picked up.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Ws, runtime};
use keel::kernel::{KernelEvent, ReloadOutcome};
use serde_json::json;

const ONE_FILE: &str = "-- [skill]\n-- name = \"solo\"\n-- version = \"1.0.0\"\n-- description = \"one file\"\n-- [[tools]]\n-- name = \"hi\"\n-- description = \"answers\"\nlocal M = {}\nfunction M.hi() return 'WORD' end\nreturn M\n";

const FOLDER_MANIFEST: &str = "[skill]\nname = \"greet\"\nversion = \"1.0.0\"\ndescription = \"a folder\"\nentry = \"main.luau\"\n[[tools]]\nname = \"hi\"\ndescription = \"answers\"\n";

fn greet(word: &str) -> String {
    format!("local M = {{}}\nfunction M.hi() return '{word}' end\nreturn M\n")
}

fn ws() -> Ws {
    Ws::new()
        .file("scripts/solo.luau", &ONE_FILE.replace("WORD", "one"))
        .skill("greet", FOLDER_MANIFEST, &[("main.luau", &greet("one"))])
        .policy("")
}

#[test]
fn an_emptied_file_keeps_the_working_version_serving_without_a_report() {
    let ws = ws();
    let rt = runtime();
    let k = ws.kernel(&rt);
    let call = |t: &str| {
        rt.block_on(k.call_tool(t, json!({})))
            .map_err(|e| e.to_string())
    };
    assert_eq!(call("solo.hi"), Ok(json!("one")));
    assert_eq!(call("greet.hi"), Ok(json!("one")));

    // The truncate of an in-place rewrite, seen by a reload.
    ws.write("scripts/solo.luau", "");
    ws.write("skills/greet/main.luau", "");
    ws.write("skills/greet/skill.toml", "");
    let r = k.reload();
    assert!(
        r.outcomes.is_empty(),
        "a half-done rewrite was reported: {r:?}"
    );
    assert_eq!(r.incomplete.len(), 2, "{r:?}");
    assert_eq!(call("solo.hi"), Ok(json!("one")));
    assert_eq!(call("greet.hi"), Ok(json!("one")));

    // The write completes.
    ws.write("scripts/solo.luau", &ONE_FILE.replace("WORD", "two"));
    ws.write("skills/greet/skill.toml", FOLDER_MANIFEST);
    ws.write("skills/greet/main.luau", &greet("two"));
    let r = k.reload();
    assert!(!r.failed() && r.incomplete.is_empty(), "{r:?}");
    assert_eq!(call("solo.hi"), Ok(json!("two")));
    assert_eq!(call("greet.hi"), Ok(json!("two")));
}

/// A file that stays empty is believed once the watcher stops retrying.
#[test]
fn a_file_left_empty_is_taken_at_its_word_when_settled() {
    let ws = ws();
    let rt = runtime();
    let k = ws.kernel(&rt);
    ws.write("scripts/solo.luau", "");
    let r = k.reload_settled();
    assert!(
        r.outcomes
            .iter()
            .any(|o| matches!(o, ReloadOutcome::Removed { skill } if skill == "solo@1.0.0")),
        "{r:?}"
    );
}

/// Through the real watcher: a caller hammers the tool while the file is
/// rewritten in place, over and over; no call fails and no failure or
/// removal is reported.
#[test]
fn calls_never_fail_while_the_watcher_sees_in_place_rewrites() {
    let ws = ws();
    let rt = runtime();
    let k = ws.kernel(&rt);
    let mut events = k.subscribe();
    let _watch = keel::skill::watch::watch(&k).expect("watch");
    let stop = AtomicBool::new(false);
    let path = ws.path("scripts/solo.luau");
    std::thread::scope(|s| {
        let caller = s.spawn(|| {
            let mut calls = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let r = rt.block_on(k.call_tool("solo.hi", json!({})));
                assert!(r.is_ok(), "a call failed mid-rewrite: {r:?}");
                calls += 1;
            }
            calls
        });
        for i in 0..20 {
            // Truncate, wait (bounded) until the watcher has seen the empty
            // file and deferred it, then write. Reports already queued
            // (the watcher's retries of the previous round) are checked and
            // dropped first, so the one waited for is this round's.
            while let Ok(e) = events.try_recv() {
                if let KernelEvent::Reloaded(r) = e {
                    only_reloads(&r);
                }
            }
            std::fs::write(&path, "").unwrap();
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match events.recv().await {
                            Ok(KernelEvent::Reloaded(r)) if !r.incomplete.is_empty() => break,
                            Ok(KernelEvent::Reloaded(r)) => {
                                only_reloads(&r);
                            }
                            Ok(_) => {}
                            Err(e) => panic!("events: {e}"),
                        }
                    }
                })
                .await
                .expect("the watcher never saw the emptied file")
            });
            std::fs::write(&path, ONE_FILE.replace("WORD", &format!("v{i}"))).unwrap();
            // Wait (bounded) for that version to serve.
            let until = Instant::now() + Duration::from_secs(10);
            while rt.block_on(k.call_tool("solo.hi", json!({}))).ok()
                != Some(json!(format!("v{i}")))
            {
                assert!(Instant::now() < until, "v{i} never served");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(caller.join().unwrap() > 0);
    });
    while let Ok(e) = events.try_recv() {
        if let KernelEvent::Reloaded(r) = e {
            only_reloads(&r);
        }
    }
}

/// A report seen while a file is rewritten in place holds reloads only:
/// no failure, no removal.
fn only_reloads(r: &keel::kernel::ReloadReport) {
    for o in &r.outcomes {
        assert!(
            matches!(o, ReloadOutcome::Reloaded { .. }),
            "unexpected reload outcome during in-place rewrites: {o}"
        );
    }
}
