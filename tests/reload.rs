//! Hot reload: edits take effect on the next call; broken edits never
//! replace a working version; dependents follow their dependencies.

mod common;

use std::time::{Duration, Instant};

use common::{Ws, runtime};
use keel::kernel::ReloadOutcome;
use serde_json::{Value, json};

const MANIFEST: &str = r#"
[skill]
name = "greet"
version = "1.0.0"
description = "greets"
entry = "main.luau"
[[tools]]
name = "hi"
description = "says hi"
[[tools]]
name = "slow"
description = "sleeps, then answers with its version"
"#;

fn src(word: &str) -> String {
    format!(
        "local M = {{}}\nfunction M.hi() return '{word}' end\nfunction M.slow() keel.time.sleep(600) return '{word}' end\nreturn M\n"
    )
}

fn call(k: &keel::Kernel, rt: &tokio::runtime::Runtime, tool: &str) -> Result<Value, String> {
    rt.block_on(k.call_tool(tool, json!({})))
        .map_err(|e| e.to_string())
}

/// Polls until `f` holds, for at most 10 s (the watcher is asynchronous).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

#[test]
fn edits_apply_to_the_next_call_and_broken_edits_keep_the_old_version() {
    let ws = Ws::new()
        .skill("greet", MANIFEST, &[("main.luau", &src("one"))])
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("one")));

    ws.write("skills/greet/main.luau", &src("two"));
    let report = k.reload();
    assert!(
        report
            .outcomes
            .iter()
            .any(|o| matches!(o, ReloadOutcome::Reloaded { skill } if skill == "greet@1.0.0")),
        "{report:?}"
    );
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("two")));

    // A syntax error on line 2: the old version keeps serving, and the
    // failure names the file and the line.
    ws.write(
        "skills/greet/main.luau",
        "local M = {}\nfunction M.hi( return 'three' end\nreturn M\n",
    );
    let report = k.reload();
    let failure = report
        .outcomes
        .iter()
        .find_map(|o| match o {
            ReloadOutcome::Failed { error, kept, .. } => Some((error.clone(), kept.clone())),
            _ => None,
        })
        .expect("a failed outcome");
    assert!(failure.0.contains("main.luau:2"), "{}", failure.0);
    assert_eq!(failure.1.as_deref(), Some("greet@1.0.0"));
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("two")));
    // The same broken file is not reported again by the next reload.
    let again = k.reload();
    assert!(again.is_empty(), "{again:?}");
    let listed =
        keel::commands::skills::format_skills(&k.skills(), &[], &|id| k.gate().pending_blocked(id));
    assert!(
        listed.contains("main.luau:2"),
        "the failure shows in /skills: {listed}"
    );

    // A broken manifest: same.
    ws.write(
        "skills/greet/skill.toml",
        &MANIFEST.replace("version = \"1.0.0\"", "version = \"1.0\""),
    );
    let report = k.reload();
    assert!(report.failed(), "{report:?}");
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("two")));

    // Fixing both recovers.
    ws.write("skills/greet/skill.toml", MANIFEST);
    ws.write("skills/greet/main.luau", &src("four"));
    let report = k.reload();
    assert!(!report.failed(), "{report:?}");
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("four")));
}

#[test]
fn a_load_error_at_top_level_keeps_the_old_version() {
    let ws = Ws::new()
        .skill("greet", MANIFEST, &[("main.luau", &src("one"))])
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("one")));
    ws.write("skills/greet/main.luau", "error('boom at load')\n");
    let report = k.reload();
    assert!(report.failed(), "{report:?}");
    assert!(format!("{report:?}").contains("boom at load"), "{report:?}");
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("one")));
    // A tool declared but missing from the script is a load error too.
    ws.write(
        "skills/greet/main.luau",
        "local M = {} function M.hi() return 'x' end return M\n",
    );
    let report = k.reload();
    assert!(
        format!("{report:?}").contains("no function `slow`"),
        "{report:?}"
    );
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("one")));
}

/// `greet` with kv, whose `slow` tool says (kv `entered`) that it is
/// running, then holds until the test sets kv `release` (bounded: it gives
/// up after about 20 s, well inside the 30 s call deadline).
const HOLD_MANIFEST: &str = r#"
[skill]
name = "greet"
version = "1.0.0"
description = "greets"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "hi"
description = "says hi"
[[tools]]
name = "slow"
description = "holds until released, then answers with its version"
"#;

fn hold_src(word: &str) -> String {
    format!(
        "local M = {{}}\nfunction M.hi() return '{word}' end\nfunction M.slow()\n  keel.kv.set('entered', '{word}')\n  for _ = 1, 4000 do\n    if keel.kv.get('release') then return '{word}' end\n    keel.time.sleep(5)\n  end\n  return 'never released'\nend\nreturn M\n"
    )
}

#[test]
fn a_call_in_flight_finishes_on_the_old_version() {
    let ws = Ws::new()
        .skill("greet", HOLD_MANIFEST, &[("main.luau", &hold_src("old"))])
        .policy("[policy]\nallow = [\"kv\"]\n");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let store = k.store().clone();
    let here = k.workspace().to_path_buf();
    let k2 = k.clone();
    let in_flight = rt.spawn(async move { k2.call_tool("greet.slow", json!({})).await });
    // The slow call is inside the old engine before the swap...
    eventually("the slow call to enter the old version", || {
        store.kv_get(&here, "greet", "entered").ok().flatten() == Some("\"old\"".into())
    });
    ws.write("skills/greet/main.luau", &hold_src("new"));
    let report = k.reload();
    assert!(
        report
            .outcomes
            .iter()
            .any(|o| matches!(o, ReloadOutcome::Reloaded { skill } if skill == "greet@1.0.0")),
        "{report:?}"
    );
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("new")));
    // ...and still there after it: the swap neither waited for it nor
    // ended it.
    assert!(
        !in_flight.is_finished(),
        "the held call ended before release"
    );
    store
        .kv_set(&here, "greet", "release", "true", u64::MAX)
        .expect("release");
    let old = rt.block_on(in_flight).expect("join").expect("slow call");
    assert_eq!(old, json!("old"));
}

#[test]
fn editing_a_dependency_reloads_its_dependents() {
    let lib = r#"
[skill]
name = "text"
version = "1.0.0"
entry = "main.luau"
"#;
    let app = r#"
[skill]
name = "app"
version = "1.0.0"
entry = "main.luau"
[dependencies]
text = "^1"
[[tools]]
name = "go"
description = "uses text"
"#;
    let ws = Ws::new()
        .skill(
            "text",
            lib,
            &[(
                "main.luau",
                "return { word = function() return 'alpha' end }",
            )],
        )
        .skill(
            "app",
            app,
            &[(
                "main.luau",
                // Uses its dependency while it loads, not only when called.
                "local t = require('text') local w = assert(t.word, 'text.word is missing') return { go = function() return w() end }",
            )],
        )
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    assert_eq!(call(&k, &rt, "app.go"), Ok(json!("alpha")));
    ws.write(
        "skills/text/main.luau",
        "return { word = function() return 'beta' end }",
    );
    k.reload();
    assert_eq!(call(&k, &rt, "app.go"), Ok(json!("beta")));
    // A dependency that fails to load keeps the working pair.
    ws.write("skills/text/main.luau", "error('text is broken')");
    let report = k.reload();
    assert!(report.failed(), "{report:?}");
    assert_eq!(call(&k, &rt, "app.go"), Ok(json!("beta")));
    // A dependency that loads but breaks its dependent's load (it removes
    // what the dependent uses): the failure is pinned on the dependency's
    // edit, and the working pair keeps serving.
    ws.write("skills/text/main.luau", "return {}");
    let report = k.reload();
    let (origin, error, kept) = report
        .outcomes
        .iter()
        .find_map(|o| match o {
            ReloadOutcome::Failed {
                origin,
                error,
                kept,
            } => Some((origin.clone(), error.clone(), kept.clone())),
            _ => None,
        })
        .expect("a failure");
    assert_eq!(
        origin,
        keel::skill::Origin::Folder(ws.path("skills/text")),
        "{report:?}"
    );
    assert!(
        error.contains("app@1.0.0 fails to load with this version"),
        "{error}"
    );
    assert_eq!(kept.as_deref(), Some("text@1.0.0"));
    assert_eq!(call(&k, &rt, "app.go"), Ok(json!("beta")));
}

/// A skill `reader` whose one tool reads a file, with the given
/// `[capabilities]` lines.
fn reader_manifest(caps: &str) -> String {
    format!(
        "[skill]\nname = \"reader\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[capabilities]\n{caps}\n[[tools]]\nname = \"read\"\ndescription = \"reads\"\nparameters = {{ type = \"object\", properties = {{ path = {{ type = \"string\" }} }}, required = [\"path\"] }}\n"
    )
}

const READER_SRC: &str = "local M = {} function M.read(a) return keel.fs.read(a.path) end return M";

#[test]
fn capability_escalation_in_an_edit_is_not_granted() {
    let ws = Ws::new()
        .skill(
            "reader",
            &reader_manifest("\"fs.read\" = [\"./public\"]"),
            &[("main.luau", READER_SRC)],
        )
        .file("public/a.txt", "public")
        .file("private/b.txt", "private")
        // The operator allows everything by default: only the first-seen
        // rule keeps an escalated manifest in check.
        .policy("[policy]\ndefault = \"allow\"\n");
    assert_eq!(
        ws.call("reader.read", json!({"path": "public/a.txt"})).ok(),
        json!("public")
    );
    ws.write(
        "skills/reader/skill.toml",
        &reader_manifest("\"fs.read\" = [\"./public\", \"./private\"]"),
    );
    ws.call("reader.read", json!({"path": "private/b.txt"}))
        .err_contains(&[
            "fs.read:./private",
            "not granted",
            "keel grant reader fs.read:./private",
        ]);
    // The old capability still works.
    assert_eq!(
        ws.call("reader.read", json!({"path": "public/a.txt"})).ok(),
        json!("public")
    );
    let skills = ws.run(&["skills"]);
    assert!(
        skills.stdout.contains("not granted yet: fs.read:./private"),
        "{}",
        skills.stdout
    );
    // A global allow rule is not the operator's say-so for this skill...
    let ws = ws.policy("[policy]\ndefault = \"allow\"\nallow = [\"fs.read:./private\"]\n");
    ws.call("reader.read", json!({"path": "private/b.txt"}))
        .err_contains(&["not granted"]);
    // ...a rule in the skill's own section is,
    let ws = ws.policy(
        "[policy]\ndefault = \"allow\"\n[policy.skills.reader]\nallow = [\"fs.read:./private\"]\n",
    );
    assert_eq!(
        ws.call("reader.read", json!({"path": "private/b.txt"}))
            .ok(),
        json!("private")
    );
    // The listing says "not granted yet" only for what is blocked: the
    // global rule did not unblock it, the skill's own section did.
    let skills = ws.run(&["skills"]);
    assert!(
        !skills.stdout.contains("not granted yet"),
        "{}",
        skills.stdout
    );
    // ...and so is an explicit grant.
    let ws = ws.policy("[policy]\ndefault = \"allow\"\n");
    ws.call("reader.read", json!({"path": "private/b.txt"}))
        .err_contains(&["not granted", "[policy.skills.reader]"]);
    assert!(
        ws.run(&["skills"])
            .stdout
            .contains("not granted yet: fs.read:./private")
    );
    assert_eq!(ws.run(&["grant", "reader", "fs.read:./private"]).status, 0);
    assert_eq!(
        ws.call("reader.read", json!({"path": "private/b.txt"}))
            .ok(),
        json!("private")
    );
    let skills = ws.run(&["skills"]);
    assert!(
        !skills.stdout.contains("not granted yet"),
        "{}",
        skills.stdout
    );
}

#[test]
fn the_watcher_picks_up_edits_additions_and_deletions() {
    let ws = Ws::new()
        .skill("greet", MANIFEST, &[("main.luau", &src("one"))])
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let mut events = k.subscribe();
    let _watcher = keel::skill::watch::watch(&k).expect("watch");
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("one")));

    ws.write("skills/greet/main.luau", &src("two"));
    eventually("edit to be served", || {
        call(&k, &rt, "greet.hi") == Ok(json!("two"))
    });

    // Editors that write a temp file and rename it into place.
    let tmp = ws.path("skills/greet/.main.luau.tmp");
    std::fs::write(&tmp, src("three")).expect("write tmp");
    std::fs::rename(&tmp, ws.path("skills/greet/main.luau")).expect("rename");
    eventually("renamed-in file to be served", || {
        call(&k, &rt, "greet.hi") == Ok(json!("three"))
    });

    // Half-written file: the working version keeps serving throughout.
    while events.try_recv().is_ok() {}
    std::fs::write(
        ws.path("skills/greet/main.luau"),
        "local M = {}\nfunction M.hi()",
    )
    .expect("half");
    // Wait for the watcher to see the half-written file and reject it
    // (its reload event says so), then check the old version serves.
    eventually("the watcher to reject the half-written file", || {
        while let Ok(e) = events.try_recv() {
            if let keel::kernel::KernelEvent::Reloaded(r) = e
                && r.outcomes.iter().any(|o| {
                    matches!(o, ReloadOutcome::Failed { kept: Some(kept), .. } if kept == "greet@1.0.0")
                })
            {
                return true;
            }
        }
        false
    });
    assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("three")));
    ws.write("skills/greet/main.luau", &src("four"));
    eventually("completed write to be served", || {
        call(&k, &rt, "greet.hi") == Ok(json!("four"))
    });

    // Adding a skill folder loads it; deleting one unloads it.
    ws.write(
        "skills/extra/skill.toml",
        &MANIFEST.replace("\"greet\"", "\"extra\""),
    );
    ws.write("skills/extra/main.luau", &src("extra"));
    eventually("new skill to load", || {
        call(&k, &rt, "extra.hi") == Ok(json!("extra"))
    });
    std::fs::remove_dir_all(ws.path("skills/extra")).expect("rm");
    eventually("deleted skill to unload", || {
        call(&k, &rt, "extra.hi").is_err_and(|e| e.contains("no tool `extra.hi`"))
    });
}

#[test]
fn editing_keel_toml_puts_the_new_policy_in_force_and_a_broken_one_changes_nothing() {
    let manifest = "[skill]\nname = \"counter\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[capabilities]\n\"kv\" = true\n[[tools]]\nname = \"bump\"\ndescription = \"counts\"\n";
    let src = "local M = {} function M.bump() local n = (keel.kv.get('n') or 0) + 1 keel.kv.set('n', n) return n end return M";
    let ws = Ws::new()
        .skill("counter", manifest, &[("main.luau", src)])
        .policy("[policy]\ndefault = \"deny\"\n");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let mut events = k.subscribe();
    let _watcher = keel::skill::watch::watch(&k).expect("watch");
    assert!(call(&k, &rt, "counter.bump").is_err_and(|e| e.contains("policy default `deny`")));

    ws.write(
        "keel.toml",
        "[skills]\nbuiltin = false\n[policy]\ndefault = \"deny\"\nallow = [\"kv\"]\n",
    );
    eventually("the new policy to allow kv", || {
        call(&k, &rt, "counter.bump") == Ok(json!(1))
    });

    // A broken file keeps the policy in force and says why.
    while events.try_recv().is_ok() {}
    ws.write("keel.toml", "[policy]\nallow = [\"kv\"\n");
    let mut seen = None;
    eventually("a config error event", || {
        while let Ok(e) = events.try_recv() {
            if let keel::kernel::KernelEvent::ConfigReloaded(Err(msg)) = e {
                seen = Some(msg);
            }
        }
        seen.is_some()
    });
    assert!(
        seen.unwrap_or_default().contains("keel.toml:"),
        "the error names the file and line"
    );
    assert_eq!(call(&k, &rt, "counter.bump"), Ok(json!(2)));
}

#[test]
fn a_broader_new_declaration_does_not_shadow_an_approved_one() {
    let ws = Ws::new()
        .skill(
            "reader",
            &reader_manifest("\"fs.read\" = [\"./public\"]"),
            &[("main.luau", READER_SRC)],
        )
        .file("public/a.txt", "public")
        .file("secret.txt", "secret")
        .policy("[policy]\ndefault = \"allow\"\n");
    assert_eq!(
        ws.call("reader.read", json!({"path": "public/a.txt"})).ok(),
        json!("public")
    );
    // The new, broader rule comes first in the list.
    ws.write(
        "skills/reader/skill.toml",
        &reader_manifest("\"fs.read\" = [\".\", \"./public\"]"),
    );
    assert_eq!(
        ws.call("reader.read", json!({"path": "public/a.txt"})).ok(),
        json!("public")
    );
    ws.call("reader.read", json!({"path": "secret.txt"}))
        .err_contains(&["fs.read:.", "not granted"]);
}

/// What the agent is told about a skill (its SKILL.md) reloads like code:
/// the next prompt lists the new description, and activating the skill
/// gives the new body.
#[test]
fn an_edited_skill_md_is_in_the_next_prompt() {
    let ws = Ws::new()
        .skill("greet", MANIFEST, &[("main.luau", &src("one"))])
        .file(
            "skills/greet/SKILL.md",
            "---\nname: greet\ndescription: Greets.\n---\nSay hi with greet.hi.\n",
        )
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let prompt = |k: &keel::Kernel| keel::agent::prompt::system_prompt(None, "/ws", &k.skills());
    let body = |k: &keel::Kernel| keel::tool::native::activate(&k.skills(), "greet").unwrap();
    assert!(prompt(&k).contains("- greet: Greets.\n"));
    assert!(
        !prompt(&k).contains("Say hi"),
        "the body waits for activation"
    );
    assert!(body(&k).contains("Say hi with greet.hi."));
    ws.write(
        "skills/greet/SKILL.md",
        "---\nname: greet\ndescription: Greets twice.\n---\nAlways greet twice.\n",
    );
    k.reload();
    let p = prompt(&k);
    assert!(p.contains("- greet: Greets twice.\n"), "{p}");
    let b = body(&k);
    assert!(
        b.contains("Always greet twice.") && !b.contains("Say hi"),
        "{b}"
    );
    assert!(!b.contains("description: Greets"), "front matter stays out");
}

/// Undoing a broken edit (the files go back to the version that kept
/// serving) is reported as fixed, for a broken script and for a broken
/// manifest: nothing new loads, but the person who fixed it is told.
/// While it is broken, `keel call` says why instead of "no tool".
#[test]
fn undoing_a_broken_edit_says_fixed() {
    let ws = Ws::new()
        .skill("greet", MANIFEST, &[("main.luau", &src("one"))])
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    for (file, good, broken) in [
        ("skills/greet/main.luau", src("one"), "return {".to_string()),
        (
            "skills/greet/skill.toml",
            MANIFEST.to_string(),
            "[skill\n".to_string(),
        ),
    ] {
        ws.write(file, &broken);
        let r = k.reload();
        assert!(r.failed(), "{file}: {r:?}");
        assert_eq!(call(&k, &rt, "greet.hi"), Ok(json!("one")), "{file}");
        // A reload with the file still broken says nothing new.
        assert!(k.reload().outcomes.is_empty(), "{file}");
        ws.write(file, &good);
        let r = k.reload();
        assert!(
            matches!(r.outcomes.as_slice(), [ReloadOutcome::Fixed { skill }] if skill == "greet@1.0.0"),
            "{file}: {r:?}"
        );
        assert_eq!(
            r.outcomes[0].to_string(),
            "fixed: greet@1.0.0 is whole again (still serving it)"
        );
        assert!(k.reload().outcomes.is_empty(), "{file}: said twice");
    }
}

/// A tool of a skill that did not load (a missing dependency, a manifest
/// that does not parse) says why, not "no tool".
#[test]
fn calling_a_tool_of_a_skill_that_did_not_load_says_why() {
    let ws = Ws::new()
        .skill(
            "needy",
            "[skill]\nname = \"needy\"\nversion = \"1.0.0\"\ndescription = \"d\"\nentry = \"main.luau\"\n[dependencies]\nmissing = \"^1\"\n[[tools]]\nname = \"go\"\ndescription = \"go\"\n",
            &[("main.luau", "return { go = function() return 1 end }")],
        )
        .skill("mangled", "[skill\n", &[("main.luau", "return {}")])
        .policy("");
    ws.run(&["call", "needy.go"]).err_contains(&[
        "no tool `needy.go`: skill needy@1.0.0 did not load",
        "dependency `missing` is not installed",
    ]);
    ws.run(&["call", "mangled.go"]).err_contains(&[
        "no tool `mangled.go`: skill mangled did not load",
        "skill.toml:1",
    ]);
    ws.run(&["call", "nothing.go"])
        .err_contains(&["no tool `nothing.go`; see `keel tools`"]);
}

/// A search folder that did not exist at start (`scripts/`, before the
/// first one-file skill) is watched once it appears: a skill written into
/// it loads, and later edits in it are seen too.
#[test]
fn a_scripts_folder_created_after_start_is_watched() {
    let ws = Ws::new()
        .skill("greet", MANIFEST, &[("main.luau", &src("one"))])
        .policy("");
    assert!(!ws.path("scripts").exists());
    let rt = runtime();
    let k = ws.kernel(&rt);
    let _watcher = keel::skill::watch::watch(&k).expect("watch");
    let one_file = |word: &str| {
        format!(
            "-- [skill]\n-- name = \"solo\"\n-- version = \"1.0.0\"\n-- description = \"one file\"\n-- [[tools]]\n-- name = \"hi\"\n-- description = \"answers\"\nlocal M = {{}}\nfunction M.hi() return '{word}' end\nreturn M\n"
        )
    };
    std::fs::create_dir(ws.path("scripts")).unwrap();
    ws.write("scripts/solo.luau", &one_file("first"));
    eventually("the new folder's skill to load", || {
        call(&k, &rt, "solo.hi") == Ok(json!("first"))
    });
    ws.write("scripts/solo.luau", &one_file("second"));
    eventually("an edit in the new folder to be served", || {
        call(&k, &rt, "solo.hi") == Ok(json!("second"))
    });
}
