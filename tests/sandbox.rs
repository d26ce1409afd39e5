//! Sandbox limits: runaway scripts end with a clear, uncatchable error
//! naming the skill, tool and limit, while other skills keep answering.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Ws, runtime};
use serde_json::json;

const RUNAWAY_MANIFEST: &str = r#"
[skill]
name = "runaway"
version = "1.0.0"
description = "misbehaves"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "spin"
description = "loops forever"
[[tools]]
name = "spin_signalled"
description = "says it is spinning (kv), then loops forever"
[[tools]]
name = "spin_pcall"
description = "loops forever inside pcall, retrying"
[[tools]]
name = "xpcall_spin"
description = "loops in xpcall with a looping handler"
[[tools]]
name = "string_bomb"
description = "allocates a huge string inside pcall"
[[tools]]
name = "table_bomb"
description = "grows a table without bound"
[[tools]]
name = "deep"
description = "recurses without end"
[[tools]]
name = "coroutine_spin"
description = "loops inside a coroutine"
[[tools]]
name = "coroutine_bomb"
description = "allocates without bound inside a coroutine, retrying"
[[tools]]
name = "coroutine_yield"
description = "a well-behaved coroutine that yields"
[[tools]]
name = "ok"
description = "answers"
"#;

const RUNAWAY_LUAU: &str = r#"
local M = {}
function M.spin() while true do end end
function M.spin_signalled() keel.kv.set("spinning", true) while true do end end
function M.spin_pcall()
  while true do
    pcall(function() while true do end end)
  end
end
function M.xpcall_spin()
  xpcall(function() while true do end end, function() while true do end end)
  return "escaped"
end
function M.string_bomb()
  local ok = pcall(function() return string.rep("x", 512 * 1024 * 1024) end)
  return { escaped = ok }
end
function M.table_bomb()
  local t = {}
  local ok = pcall(function()
    local i = 0
    while true do i += 1; t[i] = { i, i, i, i } end
  end)
  return { escaped = ok }
end
local function f(n) return f(n + 1) + 1 end
function M.deep() return f(1) end
function M.coroutine_spin()
  local co = coroutine.create(function() while true do end end)
  local ok = coroutine.resume(co)
  return { escaped = ok }
end
function M.coroutine_bomb()
  while true do
    local co = coroutine.create(function() return string.rep("x", 512 * 1024 * 1024) end)
    coroutine.resume(co)
  end
end
function M.coroutine_yield()
  local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
  local _, first = coroutine.resume(co, 1)
  local _, second = coroutine.resume(co, 10)
  local dead_ok, err = coroutine.resume(co)
  return { first = first, second = second, dead_ok = dead_ok, err = err }
end
function M.ok() return "ok" end
return M
"#;

const RHAI_MANIFEST: &str = r#"
[skill]
name = "rrun"
version = "1.0.0"
description = "misbehaves in rhai"
entry = "main.rhai"
[capabilities]
kv = true
[[tools]]
name = "spin"
description = "loops forever inside try"
[[tools]]
name = "spin_signalled"
description = "says it is spinning (kv), then loops forever"
[[tools]]
name = "deep"
description = "recurses"
[[tools]]
name = "grow"
description = "grows a string"
[[tools]]
name = "ok"
description = "answers"
"#;

const RHAI_SRC: &str = r#"
fn spin(args) { loop { try { loop { } } catch (e) { } } }
fn spin_signalled(args) { keel::kv::set("spinning", true); loop { } }
fn f(n) { f(n + 1) + 1 }
fn deep(args) { try { f(1) } catch (e) { "caught" } }
fn grow(args) { let s = "xxxxxxxx"; loop { try { s += s; } catch (e) { } } }
fn ok(args) { "ok" }
"#;

const OTHER_MANIFEST: &str = r#"
[skill]
name = "other"
version = "1.0.0"
description = "well behaved"
entry = "main.luau"
[[tools]]
name = "ping"
description = "answers"
"#;

fn ws() -> Ws {
    Ws::new()
        .skill("runaway", RUNAWAY_MANIFEST, &[("main.luau", RUNAWAY_LUAU)])
        .skill("rrun", RHAI_MANIFEST, &[("main.rhai", RHAI_SRC)])
        .skill(
            "other",
            OTHER_MANIFEST,
            &[(
                "main.luau",
                "local M = {} function M.ping() return 'pong' end return M",
            )],
        )
        .policy("[limits]\ntimeout_ms = 700\nmemory_mb = 32\n")
}

#[test]
fn luau_runaways_are_stopped_with_the_limit_named() {
    let ws = ws();
    let cases = [
        ("runaway.spin", "wall-clock deadline"),
        ("runaway.spin_pcall", "wall-clock deadline"),
        ("runaway.xpcall_spin", "wall-clock deadline"),
        ("runaway.string_bomb", "memory limit"),
        ("runaway.table_bomb", "memory limit"),
        ("runaway.deep", "call depth"),
        ("runaway.coroutine_spin", "wall-clock deadline"),
        ("runaway.coroutine_bomb", "memory limit"),
    ];
    for (tool, limit) in cases {
        ws.call(tool, json!({}))
            .err_contains(&[tool, "runaway@1.0.0", limit, "keel.toml"]);
    }
    // The skill still works afterwards: killed states are replaced.
    assert_eq!(ws.call("runaway.ok", json!({})).ok(), json!("ok"));
    // Coroutines themselves still behave as Lua's do.
    let r = ws.call("runaway.coroutine_yield", json!({})).ok();
    assert_eq!(
        (
            r["first"].clone(),
            r["second"].clone(),
            r["dead_ok"].clone()
        ),
        (json!(2), json!(20), json!(false)),
        "{r}"
    );
    assert!(r["err"].as_str().unwrap_or("").contains("resum"), "{r}");
}

#[test]
fn rhai_runaways_are_stopped_even_inside_try() {
    let ws = ws();
    ws.call("rrun.spin", json!({}))
        .err_contains(&["rrun.spin", "wall-clock deadline"]);
    ws.call("rrun.deep", json!({}))
        .err_contains(&["rrun.deep", "call depth"]);
    ws.call("rrun.grow", json!({}))
        .err_contains(&["rrun.grow", "memory limit"]);
    assert_eq!(ws.call("rrun.ok", json!({})).ok(), json!("ok"));
}

#[test]
fn operation_budget_is_enforced() {
    let ws = ws().policy("[limits]\ntimeout_ms = 20000\nmax_operations = 100000\n");
    ws.call("runaway.spin", json!({}))
        .err_contains(&["operation budget of 100000"]);
    ws.call("rrun.spin", json!({}))
        .err_contains(&["operation budget of 100000"]);
}

struct Never;
impl keel::kernel::gate::Approver for Never {
    fn approve(&self, _: &keel::kernel::gate::ApprovalRequest) -> keel::kernel::gate::AskOutcome {
        keel::kernel::gate::AskOutcome::Denied
    }
}

/// Waits (bounded) for `f`; the bound is a failure guard, not a speed
/// assertion: what it guards against lasts ten minutes.
async fn guarded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

#[test]
fn other_skills_keep_answering_while_one_runs_away() {
    // The runaways would spin for ten minutes: every answer below comes
    // while they are provably still spinning, and they end by cancellation.
    let ws = ws().policy("[policy]\nallow = [\"kv\"]\n[limits]\ntimeout_ms = 600000\n");
    let rt = runtime();
    let kernel = ws.kernel(&rt);
    let store = kernel.store().clone();
    let here = kernel.workspace().to_path_buf();
    let cancelled = Arc::new(AtomicBool::new(false));
    let link = Arc::new(keel::host::RunLink {
        run_id: Some("r_test".into()),
        cancelled: cancelled.clone(),
        approver: Arc::new(Never),
    });
    rt.block_on(async {
        let (k, l) = (kernel.clone(), link.clone());
        let spinning = tokio::spawn(async move {
            k.call_tool_for("runaway.spin_signalled", json!({}), Some(l))
                .await
        });
        let (k, l) = (kernel.clone(), link.clone());
        let rspinning = tokio::spawn(async move {
            k.call_tool_for("rrun.spin_signalled", json!({}), Some(l))
                .await
        });
        // Both runaways are inside their loops before anything else runs.
        for skill in ["runaway", "rrun"] {
            guarded("the runaway to start spinning", async {
                while store
                    .kv_get(&here, skill, "spinning")
                    .ok()
                    .flatten()
                    .is_none()
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
        for _ in 0..20 {
            let pong = guarded(
                "other.ping (it must not wait behind the runaway)",
                kernel.call_tool("other.ping", json!({})),
            )
            .await
            .expect("ping");
            assert_eq!(pong, json!("pong"));
        }
        // The runaway skill itself serves a second call on another engine.
        let ok = guarded(
            "runaway.ok on a second engine",
            kernel.call_tool("runaway.ok", json!({})),
        )
        .await
        .expect("ok");
        assert_eq!(ok, json!("ok"));
        assert!(
            !spinning.is_finished() && !rspinning.is_finished(),
            "the runaways should still be running"
        );
        cancelled.store(true, Ordering::Relaxed);
        for (name, h) in [("runaway", spinning), ("rrun", rspinning)] {
            let err = guarded("the cancelled runaway to end", h)
                .await
                .expect("join")
                .expect_err("runaway must fail");
            assert!(err.to_string().contains("cancelled"), "{name}: {err}");
        }
    });
}

#[test]
fn a_sleep_past_the_deadline_ends_the_call_uncatchably() {
    let ws = Ws::new()
        .skill(
            "sleepy",
            r#"
[skill]
name = "sleepy"
version = "1.0.0"
entry = "main.luau"
[[tools]]
name = "nap"
description = "sleeps too long inside pcall"
"#,
            &[(
                "main.luau",
                "local M = {} function M.nap() local ok = pcall(keel.time.sleep, 60000) return { escaped = ok } end return M",
            )],
        )
        .policy("[limits]\ntimeout_ms = 300\n");
    ws.call("sleepy.nap", json!({}))
        .err_contains(&["sleepy.nap", "wall-clock deadline of 300 ms"]);
}
