//! keel's skill-runtime figures, printed (not asserted).
//!
//! Run: `cargo bench --bench runtime` (BENCHMARKS.md records the results).
//! Figures include "RSS after 1,000 reloads of one skill" (the reload-leak
//! check) and the host-call cost with the counting allocator in place.
//! Each figure names its target from the issue.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// This process's resident set, from `/proc/self/status`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn kernel(root: &Path, rt: &tokio::runtime::Runtime) -> keel::Kernel {
    let config = keel::config::Config::load(&root.join("keel.toml")).expect("config");
    keel::Kernel::builder(config)
        .data_dir(root.join(".data"))
        .env(BTreeMap::new())
        .runtime(rt.handle().clone())
        .build()
        .expect("kernel")
}

const LUAU_MANIFEST: &str = r#"
[skill]
name = "bl"
version = "1.0.0"
entry = "main.luau"
[[tools]]
name = "noop"
description = "returns its argument"
parameters = { type = "object", properties = { x = { type = "number" } } }
[[tools]]
name = "host_loop"
description = "calls a trivial host function n times"
parameters = { type = "object", properties = { n = { type = "number" } }, required = ["n"] }
[[tools]]
name = "arg_loop"
description = "calls a host function with one argument n times"
parameters = { type = "object", properties = { n = { type = "number" } }, required = ["n"] }
[[tools]]
name = "empty_loop"
description = "loops n times"
parameters = { type = "object", properties = { n = { type = "number" } }, required = ["n"] }
"#;

const LUAU_SRC: &str = r#"
local M = {}
function M.noop(a) return a.x end
function M.host_loop(a)
  local now = keel.time.now
  for i = 1, a.n do now() end
  return a.n
end
function M.arg_loop(a)
  local decode = keel.json.decode
  for i = 1, a.n do decode("1") end
  return a.n
end
function M.empty_loop(a)
  local x = 0
  for i = 1, a.n do x += 1 end
  return x
end
return M
"#;

const RHAI_SRC: &str = r#"
fn noop(a) { a.x }
fn host_loop(a) { for i in 0..a.n { keel::time::now(); } a.n }
fn arg_loop(a) { for i in 0..a.n { keel::json::decode("1"); } a.n }
fn empty_loop(a) { let x = 0; for i in 0..a.n { x += 1; } x }
"#;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `skill.tool` looping `n` times (after one warm-up run) and the
/// skill's empty loop of the same length, on an engine thread: their
/// difference is what the loop body's host call costs.
fn loop_against_empty(k: &keel::Kernel, skill: &str, tool: &str, n: u64) -> (Duration, Duration) {
    let (k2, skill, tool) = (k.clone(), skill.to_string(), tool.to_string());
    k.on_engine_thread(move || {
        let run = |tool: &str| {
            let t = Instant::now();
            k2.call_tool_blocking(&format!("{skill}.{tool}"), json!({ "n": n }), None)
                .expect("loop");
            t.elapsed()
        };
        run(&tool);
        (run(&tool), run("empty_loop"))
    })
    .expect("engine thread")
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    write(
        &root,
        "keel.toml",
        "[skills]\nbuiltin = false\n[limits]\ntimeout_ms = 60000\nmax_operations = 10000000000\n",
    );
    write(&root, "skills/bl/skill.toml", LUAU_MANIFEST);
    write(&root, "skills/bl/main.luau", LUAU_SRC);
    write(
        &root,
        "skills/br/skill.toml",
        &LUAU_MANIFEST
            .replace("\"bl\"", "\"br\"")
            .replace("main.luau", "main.rhai"),
    );
    write(&root, "skills/br/main.rhai", RHAI_SRC);
    #[cfg(target_os = "linux")]
    bench_exec(&root);
    // `cargo bench --bench runtime -- exec`: the exec sandbox figure alone.
    if std::env::args().skip(1).any(|a| a == "exec") {
        return;
    }
    let rt = runtime();
    let k = kernel(&root, &rt);

    println!("# keel skill runtime benchmarks\n");

    // 1. Host function cost, deadline armed (the calls run as tools). The
    // function is `keel.time.now`, whose own work is one clock read; that
    // read is timed alone too, so the binding's share can be told apart.
    let clock = {
        let n = 5_000_000u32;
        let t = Instant::now();
        let mut acc = 0u128;
        for _ in 0..n {
            acc = acc.wrapping_add(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
        }
        std::hint::black_box(acc);
        t.elapsed().as_secs_f64() / f64::from(n) * 1e9
    };
    println!("clock read (SystemTime::now) alone: {clock:.0} ns");
    for (skill, target) in [("bl", 80.0), ("br", 300.0)] {
        let n = 2_000_000u64;
        let (with, without) = loop_against_empty(&k, skill, "host_loop", n);
        let per = (with.as_secs_f64() - without.as_secs_f64()) / n as f64 * 1e9;
        println!(
            "host call keel.time.now from {}: {per:.0} ns per call, of which the binding {:.0} ns (loop with calls {:.0} ns/iter, empty loop {:.0} ns/iter; target <= {target} ns)",
            if skill == "bl" { "Luau" } else { "Rhai" },
            per - clock,
            with.as_secs_f64() / n as f64 * 1e9,
            without.as_secs_f64() / n as f64 * 1e9,
        );
    }

    // 1c. A host call that reads an argument (`keel.json.decode("1")`):
    // what converting and parsing one typed argument adds to the binding.
    for skill in ["bl", "br"] {
        let n = 1_000_000u64;
        let (with, without) = loop_against_empty(&k, skill, "arg_loop", n);
        let per = (with.as_secs_f64() - without.as_secs_f64()) / n as f64 * 1e9;
        println!(
            "host call keel.json.decode(\"1\") from {}: {per:.0} ns per call",
            if skill == "bl" { "Luau" } else { "Rhai" },
        );
    }

    // 2. End-to-end tool call: validate, enter engine, return.
    for (skill, target) in [("bl", 20.0), ("br", 50.0)] {
        let k2 = k.clone();
        let mut times = k
            .on_engine_thread(move || {
                let mut v = Vec::with_capacity(20_000);
                for i in 0..20_000 {
                    let t = Instant::now();
                    k2.call_tool_blocking(&format!("{skill}.noop"), json!({ "x": i }), None)
                        .expect("noop");
                    v.push(t.elapsed());
                }
                v
            })
            .expect("engine thread");
        times.sort();
        println!(
            "tools.call {} (engine thread): p50 {:.1} us, p99 {:.1} us (target p50 <= {target} us)",
            if skill == "bl" { "Luau" } else { "Rhai" },
            us(pct(&times, 0.5)),
            us(pct(&times, 0.99))
        );
        let mut times: Vec<Duration> = (0..5_000)
            .map(|i| {
                let t = Instant::now();
                rt.block_on(k.call_tool(&format!("{skill}.noop"), json!({ "x": i })))
                    .expect("noop");
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "tools.call {} from async (incl. thread hop): p50 {:.1} us, p99 {:.1} us",
            if skill == "bl" { "Luau" } else { "Rhai" },
            us(pct(&times, 0.5)),
            us(pct(&times, 0.99))
        );
    }

    // 3. First call of a skill not yet loaded, and memory per engine.
    for lang in ["luau", "rhai"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path().canonicalize().expect("canonical");
        write(&r, "keel.toml", "[skills]\nbuiltin = false\n");
        let mut fifty = String::from("local M = {}\n");
        for i in 0..45 {
            fifty.push_str(&format!("local function h{i}(x) return x + {i} end\n"));
        }
        fifty.push_str("function M.noop(a) return h1(a.x or 0) end\nreturn M\n");
        for i in 0..30 {
            let name = format!("s{i}");
            let m = LUAU_MANIFEST.replace("\"bl\"", &format!("\"{name}\""));
            if lang == "luau" {
                write(&r, &format!("skills/{name}/skill.toml"), &m);
                write(&r, &format!("skills/{name}/main.luau"), &fifty);
            } else {
                write(
                    &r,
                    &format!("skills/{name}/skill.toml"),
                    &m.replace("main.luau", "main.rhai"),
                );
                write(&r, &format!("skills/{name}/main.rhai"), RHAI_SRC);
            }
        }
        // The manifest's other tools must exist in the Luau module too.
        if lang == "luau" {
            for i in 0..30 {
                let src = fifty.replace(
                    "return M\n",
                    "function M.host_loop(a) return 0 end\nfunction M.arg_loop(a) return 0 end\nfunction M.empty_loop(a) return 0 end\nreturn M\n",
                );
                write(&r, &format!("skills/s{i}/main.luau"), &src);
            }
        }
        let k = kernel(&r, &rt);
        let k2 = k.clone();
        let mut times = k
            .on_engine_thread(move || {
                (0..30)
                    .map(|i| {
                        let t = Instant::now();
                        k2.call_tool_blocking(&format!("s{i}.noop"), json!({ "x": 1 }), None)
                            .expect("first call");
                        t.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
            .expect("engine thread");
        times.sort();
        let mem: Vec<usize> = k
            .skills()
            .skills
            .values()
            .filter_map(|s| k.instantiate(s).ok().map(|i| i.memory_used()))
            .collect();
        let avg_mem = mem.iter().sum::<usize>() / mem.len().max(1);
        println!(
            "first call of an unloaded {lang} skill (~50 lines): p50 {:.0} us, max {:.0} us (target <= 1000 us){}",
            us(pct(&times, 0.5)),
            us(*times.last().expect("times")),
            if lang == "luau" {
                format!(
                    "; engine memory {} KiB per skill (target <= 600 KB)",
                    avg_mem / 1024
                )
            } else {
                String::new()
            }
        );
    }

    // 4. Hot reload: file write -> new version serving, over 50 edits.
    {
        let _watcher = keel::skill::watch::watch(&k).expect("watch");
        let mut times = Vec::new();
        for i in 0..50 {
            let src = LUAU_SRC.replace("return a.x end", &format!("return {i} end"));
            let t = Instant::now();
            write(&root, "skills/bl/main.luau", &src);
            loop {
                if rt.block_on(k.call_tool("bl.noop", json!({ "x": -1 }))).ok() == Some(json!(i)) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "reload never arrived"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            times.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        times.sort();
        println!(
            "hot reload, write -> new version serving (50 edits): p50 {:.0} ms, p99 {:.0} ms (target p50 <= 100 ms, p99 <= 250 ms)",
            us(pct(&times, 0.5)) / 1000.0,
            us(pct(&times, 0.99)) / 1000.0
        );
    }

    // 4b. RSS after 1,000 reloads of one skill (each followed by a call, so
    // every version gets a warm engine). Before the reload-leak fix each
    // reload kept ~250 KB for good.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path().canonicalize().expect("canonical");
        write(&r, "keel.toml", "[skills]\nbuiltin = false\n");
        write(&r, "skills/bl/skill.toml", LUAU_MANIFEST);
        write(&r, "skills/bl/main.luau", LUAU_SRC);
        let k = kernel(&r, &rt);
        let cycle = |i: usize| {
            let src = LUAU_SRC.replace("return a.x end", &format!("return {i} end"));
            write(&r, "skills/bl/main.luau", &src);
            assert!(!k.reload().failed(), "reload failed");
            assert_eq!(
                rt.block_on(k.call_tool("bl.noop", json!({ "x": -1 })))
                    .expect("call"),
                json!(i)
            );
        };
        for i in 0..50 {
            cycle(i);
        }
        let start = rss_kib();
        let t = Instant::now();
        for i in 50..1050 {
            cycle(i);
        }
        let took = t.elapsed();
        let end = rss_kib();
        println!(
            "RSS after 1,000 reloads of one skill: {:.1} MB -> {:.1} MB ({:+.1} MB; {:.2} ms per reload + call) (target: within a few MB)",
            start as f64 / 1024.0,
            end as f64 / 1024.0,
            (end as f64 - start as f64) / 1024.0,
            took.as_secs_f64() * 1000.0 / 1000.0
        );
    }

    // 5. `keel tools --json` with 100 skills installed: wall time and peak RSS.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path().canonicalize().expect("canonical");
        write(&r, "keel.toml", "[skills]\nbuiltin = false\n");
        for i in 0..100 {
            let name = format!("s{i}");
            write(
                &r,
                &format!("skills/{name}/skill.toml"),
                &LUAU_MANIFEST.replace("\"bl\"", &format!("\"{name}\"")),
            );
            write(&r, &format!("skills/{name}/main.luau"), LUAU_SRC);
        }
        let bin = env!("CARGO_BIN_EXE_keel");
        let run = || {
            let t = Instant::now();
            let out = std::process::Command::new(bin)
                .args(["tools", "--json"])
                .current_dir(&r)
                .env("KEEL_DATA_DIR", r.join(".data"))
                .output()
                .expect("keel tools");
            assert!(out.status.success());
            t.elapsed()
        };
        run();
        let mut times: Vec<Duration> = (0..20).map(|_| run()).collect();
        times.sort();
        // Peak RSS through GNU time: a direct child's own rusage would
        // include this (large) benchmark process's pages from before exec.
        let rss = std::process::Command::new("/usr/bin/time")
            .args(["-f", "%M", bin, "tools", "--json"])
            .current_dir(&r)
            .env("KEEL_DATA_DIR", r.join(".data"))
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .and_then(|l| l.trim().parse::<f64>().ok())
            })
            .map(|kb| format!("{:.1} MB", kb / 1024.0))
            .unwrap_or_else(|| "unknown (install GNU time: apt-get install time)".into());
        println!(
            "keel tools --json, 100 skills: p50 {:.1} ms wall, max RSS {rss} (target <= 50 ms, <= 20 MB)",
            us(pct(&times, 0.5)) / 1000.0,
        );
    }
}

/// Figure 6, run first: a fork copies the calling process's page tables,
/// so it is measured before the other figures grow this process.
#[cfg(target_os = "linux")]
// 6. exec of /bin/true: bare spawn, the Landlock ruleset alone, and the
// whole confined spawn (ruleset + process group + user/PID namespaces,
// joining the skill's held network namespace without net.http +
// no_new_privs + restrict_self). Target: the sandbox setup adds <= ~1 ms.
// `cargo bench --bench runtime -- exec` prints this figure alone.
fn bench_exec(root: &Path) {
    {
        let program = std::path::PathBuf::from("/bin/true")
            .canonicalize()
            .expect("/bin/true");
        let spec = keel::sandbox::Spec {
            read: vec![root.to_path_buf()],
            write: vec![root.join("out")],
            execute: vec![program.clone()],
            excluded: vec![
                root.join("keel.toml"),
                root.join("skills"),
                root.join(".data"),
            ],
            network: false,
            owner: keel::sandbox::Owner {
                workspace: root.to_path_buf(),
                skill: "bench".into(),
            },
        };
        let n = 200;
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut times: Vec<Duration> = (0..n)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect();
            times.sort();
            times
        };
        let bare = time(&mut || {
            let st = std::process::Command::new(&program).status().expect("true");
            assert!(st.success());
        });
        let ruleset = time(&mut || {
            let c = keel::sandbox::prepare(&spec, keel::sandbox::Mode::Required).expect("prepare");
            std::hint::black_box(c);
        });
        let confined_with = |spec: &keel::sandbox::Spec| {
            let spec = spec.clone();
            move || {
                let c =
                    keel::sandbox::prepare(&spec, keel::sandbox::Mode::Required).expect("prepare");
                let mut cmd = std::process::Command::new(&spec.execute[0]);
                c.apply(&mut cmd);
                let st = cmd.status().expect("confined true");
                assert!(st.success());
            }
        };
        let confined = time(&mut confined_with(&spec));
        let with_net = keel::sandbox::Spec {
            network: true,
            ..spec.clone()
        };
        let confined_net = time(&mut confined_with(&with_net));
        println!("{}", keel::sandbox::status());
        for (name, t) in [
            ("exec /bin/true, no sandbox", &bare),
            ("Landlock ruleset build alone", &ruleset),
            (
                "exec /bin/true, sandboxed (no net: joins the skill's network namespace)",
                &confined,
            ),
            (
                "exec /bin/true, sandboxed (skill has net.http)",
                &confined_net,
            ),
        ] {
            println!(
                "{name}: p50 {:.0} us, p99 {:.0} us (n = {n})",
                us(pct(t, 0.5)),
                us(pct(t, 0.99))
            );
        }
        println!(
            "sandbox overhead per exec (p50): {:.0} us without net, {:.0} us with net (target <= ~1000 us)",
            us(pct(&confined, 0.5)) - us(pct(&bare, 0.5)),
            us(pct(&confined_net, 0.5)) - us(pct(&bare, 0.5)),
        );
    }
}
