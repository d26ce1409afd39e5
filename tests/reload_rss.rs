//! 1,000 reloads of one skill leave the process's resident memory where it
//! was. Its own test binary, so no other test allocates in the same process
//! while RSS is measured.

mod common;

use common::{Ws, runtime};
use serde_json::json;

const LUAU_MANIFEST: &str = r#"
[skill]
name = "leaky"
version = "1.0.0"
description = "reloaded many times"
entry = "main.luau"
[dependencies]
lib = "^1"
[[tools]]
name = "hi"
description = "answers"
"#;

const LIB_MANIFEST: &str = r#"
[skill]
name = "lib"
version = "1.0.0"
description = "a dependency"
entry = "main.luau"
"#;

const LIB_SRC: &str = "local M = {}\nfunction M.word() return 'lib' end\nreturn M\n";

fn luau_src(n: usize) -> String {
    format!(
        "local util = require('./util')\nlocal lib = require('lib')\nlocal M = {{}}\nfunction M.hi() return util.n() + {n} .. lib.word() end\nreturn M\n"
    )
}

const LUAU_UTIL: &str = "local U = {}\nfunction U.n() return 1 end\nreturn U\n";

const RHAI_MANIFEST: &str = r#"
[skill]
name = "leakyr"
version = "1.0.0"
description = "reloaded many times"
entry = "main.rhai"
[[tools]]
name = "hi"
description = "answers"
"#;

fn rhai_src(n: usize) -> String {
    format!("import \"./util\" as util;\nfn hi(args) {{ util::n() + {n} }}\n")
}

const RHAI_UTIL: &str = "fn n() { 1 }\n";

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// 1,000 reloads of one skill, each followed by a call (so each version
/// gets a warm engine), must not grow the process by more than a few MB.
/// Before the fix this grew by ~250 MB.
#[test]
fn a_thousand_reloads_of_one_skill_do_not_grow_rss() {
    let ws = Ws::new()
        .skill(
            "leaky",
            LUAU_MANIFEST,
            &[("main.luau", &luau_src(0)), ("util.luau", LUAU_UTIL)],
        )
        .skill("lib", LIB_MANIFEST, &[("main.luau", LIB_SRC)])
        .skill(
            "leakyr",
            RHAI_MANIFEST,
            &[("main.rhai", &rhai_src(0)), ("util.rhai", RHAI_UTIL)],
        )
        .policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let cycle = |i: usize| {
        ws.write("skills/leaky/main.luau", &luau_src(i));
        ws.write("skills/leakyr/main.rhai", &rhai_src(i));
        let report = k.reload();
        assert!(!report.failed(), "{report:?}");
        assert_eq!(
            rt.block_on(k.call_tool("leaky.hi", json!({}))).unwrap(),
            json!(format!("{}lib", i + 1))
        );
        assert_eq!(
            rt.block_on(k.call_tool("leakyr.hi", json!({}))).unwrap(),
            json!(i + 1)
        );
    };
    // Warm up: allocator arenas, SQLite caches, thread stacks.
    for i in 1..=50 {
        cycle(i);
    }
    let start = rss_kib();
    for i in 51..=1050 {
        cycle(i);
    }
    let end = rss_kib();
    let grown_mib = (end.saturating_sub(start)) as f64 / 1024.0;
    eprintln!("RSS {start} kB -> {end} kB after 1,000 reloads of two skills (+{grown_mib:.1} MiB)");
    assert!(
        grown_mib < 8.0,
        "RSS grew by {grown_mib:.1} MiB over 1,000 reloads ({start} kB -> {end} kB): reloaded versions are kept"
    );
}
