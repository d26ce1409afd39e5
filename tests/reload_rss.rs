//! 1,000 reloads of one skill leave the process's resident memory where it
//! was. Its own test binary, so no other test allocates in the same process
//! while RSS is measured.

mod common;

use common::{Ws, runtime};
use serde_json::json;

use common::leaky::*;

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
