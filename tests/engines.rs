//! The engines' last doors: bytecode, memory, waits that must end, and
//! `tools.call` chains that cannot be served.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Ws, runtime};
use serde_json::json;

const BYTECODE_MANIFEST: &str = r#"
[skill]
name = "bc"
version = "1.0.0"
description = "ships bytecode"
entry = "main.luau"
[[tools]]
name = "hi"
description = "would answer"
"#;

/// Real Luau bytecode (compiled by Luau 0.7 from
/// `local M = {} function M.hi() return 'bytecode ran' end return M`):
/// version byte 9 (a tab!), types version 3. Every byte is ASCII, so it
/// reads as a valid UTF-8 "script".
const LUAU_BYTECODE: &[u8] = &[
    9, 3, 2, 12, 98, 121, 116, 101, 99, 111, 100, 101, 32, 114, 97, 110, 2, 104, 105, 0, 2, 1, 0,
    0, 0, 0, 0, 2, 5, 0, 0, 0, 22, 0, 2, 0, 1, 3, 1, 0, 1, 2, 1, 24, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0,
    1, 2, 0, 7, 65, 0, 0, 0, 53, 0, 1, 0, 0, 0, 0, 0, 64, 1, 0, 0, 16, 1, 0, 89, 1, 0, 0, 0, 22, 0,
    2, 0, 2, 6, 0, 3, 2, 1, 0, 1, 0, 1, 24, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1,
];

#[test]
fn luau_bytecode_in_a_skill_file_is_refused() {
    let ws = Ws::new()
        .skill("bc", BYTECODE_MANIFEST, &[("main.luau", "return {}")])
        .policy("");
    let src = std::str::from_utf8(LUAU_BYTECODE).expect("ASCII bytecode");
    ws.write("skills/bc/main.luau", src);
    ws.call("bc.hi", json!({}))
        .err_contains(&["main.luau", "bytecode", "Luau source"]);
}

#[test]
fn bytecode_reached_through_require_is_refused() {
    let ws = Ws::new()
        .skill(
            "bc",
            BYTECODE_MANIFEST,
            &[(
                "main.luau",
                "local M = {}\nfunction M.hi() return require('./evil') end\nreturn M\n",
            )],
        )
        .policy("");
    ws.write(
        "skills/bc/evil.luau",
        std::str::from_utf8(LUAU_BYTECODE).expect("ASCII bytecode"),
    );
    ws.call("bc.hi", json!({}))
        .err_contains(&["evil.luau", "bytecode"]);
}

#[test]
fn a_file_starting_with_the_lua_signature_byte_is_refused() {
    let ws = Ws::new()
        .skill("bc", BYTECODE_MANIFEST, &[("main.luau", "return {}")])
        .policy("");
    ws.write("skills/bc/main.luau", "\x1bLua\u{0}local M = {} return M");
    ws.call("bc.hi", json!({}))
        .err_contains(&["main.luau", "bytecode"]);
}

// --- memory caps --------------------------------------------------------------

const MEM_MANIFEST_RHAI: &str = r#"
[skill]
name = "hog"
version = "1.0.0"
description = "allocates"
entry = "main.rhai"
[[tools]]
name = "keys"
description = "a map with long keys"
[[tools]]
name = "deep"
description = "recursion with big locals"
[[tools]]
name = "small"
description = "a few MB, under the cap"
"#;

const MEM_RHAI: &str = r#"
fn keys(args) {
    // Map keys are not counted by Rhai's own size limits.
    let m = #{};
    let long = "k";
    long.pad(8000, 'k');
    let i = 0;
    loop {
        m[long + i] = i;
        i += 1;
    }
}
fn grow(n) {
    // Each level keeps a 1 MiB string local: Rhai's limits look at one
    // value at a time, not at what all the frames hold together.
    let local = "x";
    local.pad(1000000, 'x');
    if n == 0 { return local.len(); }
    grow(n - 1) + local.len()
}
fn deep(args) { grow(500) }
fn small(args) {
    let a = [];
    for i in 0..2000 { let s = "y"; s.pad(1000, 'y'); a.push(s); }
    a.len()
}
"#;

const MEM_MANIFEST_LUAU: &str = r#"
[skill]
name = "hogl"
version = "1.0.0"
description = "allocates"
entry = "main.luau"
[[tools]]
name = "keys"
description = "a table with long keys"
"#;

const MEM_LUAU: &str = r#"
local M = {}
function M.keys()
  local t = {}
  local long = string.rep("k", 8000)
  local i = 0
  while true do
    t[long .. i] = i
    i += 1
  end
end
return M
"#;

/// What a `keel call` child did, with its own peak RSS (from `wait4`).
struct Measured {
    status: i32,
    stderr: String,
    max_rss_mib: f64,
}

/// Runs `keel call` with a 3 GiB address-space cap (so that a regression
/// fails the test instead of exhausting the machine) and measures the
/// child's peak RSS.
fn call_measured(ws: &Ws, tool: &str) -> Measured {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut cmd = ws.keel();
    cmd.args(["call", tool, "{}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 3 << 30,
                rlim_max: 3 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped below by `wait4` (for its rusage), which std cannot see.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("spawn keel");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall on our own child, with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    Measured {
        status: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        },
        stderr,
        max_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

fn hog_ws() -> Ws {
    Ws::new()
        .skill("hog", MEM_MANIFEST_RHAI, &[("main.rhai", MEM_RHAI)])
        .skill("hogl", MEM_MANIFEST_LUAU, &[("main.luau", MEM_LUAU)])
        .policy(
            "[limits]\nmemory_mb = 64\ntimeout_ms = 60000\nmax_operations = 10000000000\nmax_call_depth = 1000\n",
        )
}

fn assert_stopped_by_memory(m: &Measured, what: &str) {
    eprintln!("{what}: peak RSS {:.1} MiB", m.max_rss_mib);
    assert_eq!(m.status, 1, "{what}: {}", m.stderr);
    assert!(
        m.stderr.contains("memory limit of 64 MiB"),
        "{what} was not stopped by the memory cap: {}",
        m.stderr
    );
    assert!(
        m.max_rss_mib < 300.0,
        "{what}: peak RSS {:.0} MiB under memory_mb = 64",
        m.max_rss_mib
    );
}

#[test]
fn a_rhai_map_with_long_keys_is_stopped_at_the_memory_cap() {
    let ws = hog_ws();
    let m = call_measured(&ws, "hog.keys");
    assert_stopped_by_memory(&m, "a Rhai map of long keys");
}

#[test]
fn rhai_recursion_holding_big_locals_is_stopped_at_the_memory_cap() {
    let ws = hog_ws();
    let m = call_measured(&ws, "hog.deep");
    assert_stopped_by_memory(&m, "Rhai recursion with 1 MiB locals");
}

#[test]
fn a_luau_table_with_long_keys_is_stopped_at_the_memory_cap() {
    let ws = hog_ws();
    let m = call_measured(&ws, "hogl.keys");
    assert_stopped_by_memory(&m, "a Luau table of long keys");
}

#[test]
fn a_call_under_the_memory_cap_is_not_stopped() {
    let ws = hog_ws();
    let out = ws.call("hog.small", json!({}));
    assert_eq!(out.ok(), json!(2000));
}

/// The kill is sticky: `try`/`catch` in the script cannot swallow it.
#[test]
fn rhai_try_catch_cannot_swallow_the_memory_kill() {
    let ws = Ws::new()
        .skill(
            "hog",
            MEM_MANIFEST_RHAI,
            &[(
                "main.rhai",
                &MEM_RHAI.replace(
                    "fn deep(args) { grow(500) }",
                    "fn deep(args) { let r = 0; try { r = grow(500); } catch (e) { r = -1; } loop { r += 1; } }",
                ),
            )],
        )
        .policy(
            "[limits]\nmemory_mb = 64\ntimeout_ms = 60000\nmax_operations = 10000000000\nmax_call_depth = 1000\n",
        );
    let m = call_measured(&ws, "hog.deep");
    assert_stopped_by_memory(&m, "recursion inside try/catch");
}

// --- every wait ends: cancellation and re-entry ------------------------------

const SLEEPER: &str = r#"
[skill]
name = "sleeper"
version = "1.0.0"
description = "sleeps"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "nap"
description = "sleeps ten minutes"
"#;

const SLEEPER_LUAU: &str = r#"
local M = {}
function M.nap()
  keel.kv.set("sleeping", true)
  local ok = pcall(keel.time.sleep, 600000)
  -- A cancelled sleep must end the call, not return to the script.
  keel.kv.set("woke", ok)
  return "slept"
end
return M
"#;

const SLEEPER_RHAI: &str = r#"
fn nap(args) {
    keel::kv::set("sleeping", true);
    try { keel::time::sleep(600000); } catch (e) { }
    keel::kv::set("woke", true);
    "slept"
}
"#;

struct Never;
impl keel::kernel::gate::Approver for Never {
    fn approve(&self, _: &keel::kernel::gate::ApprovalRequest) -> keel::kernel::gate::AskOutcome {
        keel::kernel::gate::AskOutcome::Denied
    }
}

/// Waits for `f` with a bound; the bound is a failure guard, not a speed
/// assertion (the sleep it guards against is ten minutes).
fn within(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sleep_is_cancelled(file: &str, src: &str) {
    let ws = Ws::new()
        .skill(
            "sleeper",
            &SLEEPER.replace("main.luau", file),
            &[(file, src)],
        )
        .policy("[policy]\nallow = [\"kv\"]\n\n[limits]\ntimeout_ms = 900000\n");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let cancelled = Arc::new(AtomicBool::new(false));
    let link = Arc::new(keel::host::RunLink {
        run_id: Some("r_test".into()),
        cancelled: cancelled.clone(),
        approver: Arc::new(Never),
    });
    let k2 = k.clone();
    let call =
        rt.spawn(async move { k2.call_tool_for("sleeper.nap", json!({}), Some(link)).await });
    let store = k.store().clone();
    let ws_path = k.workspace().to_path_buf();
    within(20, "the script to start sleeping", || {
        store
            .kv_get(&ws_path, "sleeper", "sleeping")
            .unwrap()
            .is_some()
    });
    cancelled.store(true, Ordering::Relaxed);
    within(20, "the cancelled sleep to end the call", || {
        call.is_finished()
    });
    let err = rt
        .block_on(call)
        .unwrap()
        .expect_err("a cancelled call returned a result")
        .to_string();
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(
        store.kv_get(&ws_path, "sleeper", "woke").unwrap(),
        None,
        "the script ran on after its run was cancelled"
    );
}

#[test]
fn luau_time_sleep_ends_when_the_run_is_cancelled() {
    sleep_is_cancelled("main.luau", SLEEPER_LUAU);
}

#[test]
fn rhai_time_sleep_ends_when_the_run_is_cancelled() {
    sleep_is_cancelled("main.rhai", SLEEPER_RHAI);
}

const PING: &str = r#"
[skill]
name = "ping"
version = "1.0.0"
description = "calls pong, which calls back"
entry = "main.luau"
[capabilities]
"tools.call" = ["pong.back"]
[[tools]]
name = "start"
description = "calls pong.back"
[[tools]]
name = "leaf"
description = "answers"
"#;

const PING_SRC: &str = r#"
local M = {}
function M.start() return keel.tools.call("pong.back", {}) end
function M.leaf() return "leaf" end
return M
"#;

const PONG: &str = r#"
[skill]
name = "pong"
version = "1.0.0"
description = "calls back into ping"
entry = "main.luau"
[capabilities]
"tools.call" = ["ping.leaf"]
[[tools]]
name = "back"
description = "calls ping.leaf"
"#;

const PONG_SRC: &str = r#"
local M = {}
function M.back() return keel.tools.call("ping.leaf", {}) end
return M
"#;

fn ping_pong(max_instances: usize) -> Ws {
    Ws::new()
        .skill("ping", PING, &[("main.luau", PING_SRC)])
        .skill("pong", PONG, &[("main.luau", PONG_SRC)])
        .policy(&format!(
            "[policy]\nallow = [\"tools.call:*\"]\n\n[limits]\ntimeout_ms = 600000\n\n[limits.skills.ping]\nmax_instances = {max_instances}\n"
        ))
}

/// ping.start → pong.back → ping.leaf with one engine for ping: the only
/// engine is held by ping.start, so ping.leaf could never start. It fails at
/// once, naming the chain (before the fix it waited out the 10 min deadline).
#[test]
fn a_tools_call_chain_back_into_a_skill_with_no_free_engine_fails_at_once() {
    let ws = ping_pong(1);
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| ws.call("ping.start", json!({})));
        within(60, "the re-entrant chain to fail", || h.is_finished());
        h.join().unwrap()
    });
    out.err_contains(&[
        "ping.start → pong.back → ping.leaf",
        "ping@1.0.0",
        "max_instances",
    ]);
}

/// With a second engine the same chain is served.
#[test]
fn a_tools_call_chain_back_into_a_skill_with_a_free_engine_is_served() {
    let ws = ping_pong(2);
    assert_eq!(ws.call("ping.start", json!({})).ok(), json!("leaf"));
}

// --- kv bound -------------------------------------------------------------------

const FILLER: &str = r#"
[skill]
name = "filler"
version = "1.0.0"
description = "fills its kv"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "fill"
description = "writes 100 KB values until refused"
"#;

const FILLER_SRC: &str = r#"
local M = {}
function M.fill()
  local v = string.rep("v", 100000)
  for i = 1, 1000 do
    local ok, e = pcall(keel.kv.set, "k" .. i, v)
    if not ok then return { stored = i - 1, error = e } end
  end
  return { stored = 1000 }
end
return M
"#;

#[test]
fn a_skills_kv_data_is_bounded_by_kv_mb_with_a_clear_error() {
    let ws = Ws::new()
        .skill("filler", FILLER, &[("main.luau", FILLER_SRC)])
        .policy("[policy]\nallow = [\"kv\"]\n\n[limits.skills.filler]\nkv_mb = 1\n");
    let out = ws.call("filler.fill", json!({})).ok();
    // 1 MiB holds ten values of 100,002 bytes (quotes included), not eleven.
    assert_eq!(out["stored"], json!(10), "{out}");
    let e = out["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("the limit is 1 MiB") && e.contains("kv_mb"),
        "{e}"
    );
}

// --- keel's own environment --------------------------------------------------------

/// A variable whose name or value is not UTF-8 in keel's environment does
/// not panic it (`std::env::vars` would); it is skipped with a warning.
#[test]
fn a_non_utf8_environment_variable_does_not_panic_keel() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let ws = Ws::new()
        .skill(
            "bc",
            BYTECODE_MANIFEST,
            &[(
                "main.luau",
                "local M = {}\nfunction M.hi() return 'hi' end\nreturn M\n",
            )],
        )
        .policy("");
    let out = ws
        .keel()
        .args(["call", "bc.hi", "{}"])
        .env("KEEL_BAD_VALUE", OsStr::from_bytes(b"caf\xe9"))
        .env(OsStr::from_bytes(b"KEEL_BAD_\xffNAME"), "x")
        .output()
        .expect("run keel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"hi\"");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("KEEL_BAD_VALUE") && stderr.contains("not valid UTF-8"),
        "no warning naming the variable: {stderr}"
    );
}
