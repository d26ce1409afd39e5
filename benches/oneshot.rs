//! A one-shot `keel ask` and an idle console, whole process from start to
//! exit, with the real binary against a zero-latency local fake model:
//! figures printed, not asserted (issue 10 §5; BENCHMARKS.md records them).
//!
//! Run: `cargo bench --bench oneshot`. The binary measured is the one cargo
//! built for the bench (bench profile); `KEEL_BENCH_BINS=a:b:…` measures
//! other binaries instead (say `target/release/keel`, `target/dist/keel`,
//! or an older copy), their runs interleaved so that a busy machine slows
//! them alike.
//!
//! The fake model is the tests' (`tests/common/model.rs`, the OpenAI
//! streaming format over HTTP on 127.0.0.1), in a child process (this
//! benchmark re-executed with `--fake-model`) so that nothing of it counts
//! against keel. Each `keel` is started directly by this process and
//! reaped with `wait4`, whose `rusage` gives the child's own CPU time and
//! peak RSS. (A child's `ru_maxrss` also covers the parent's pages it
//! shared before `exec`, so this process stays small: its own peak is
//! printed as the floor under which the figure means nothing.)
//!
//! The machine is shared: CPU time and RSS are the robust figures; wall
//! time is printed with the load average it was taken under.

#[path = "common/keel.rs"]
mod common;
#[path = "common/console.rs"]
mod console;
#[path = "../tests/common/model.rs"]
mod model;

use std::io::{BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{fake_model_process, keel, load, mb, median, ms, proc_status_kb, workspace};
use model::{FakeModel, Reply, Wire};

/// Runs per binary and figure (the figures are medians of 15).
const RUNS: usize = 21;
/// Skills installed for the "+20 skills" figures.
const SKILLS: usize = 20;
/// What the fake model answers.
const ANSWER: &str = "Hello! How can I help?";

/// What `wait4` says about one finished child.
struct Finished {
    wall: Duration,
    cpu: Duration,
    max_rss_kb: i64,
    success: bool,
}

/// Waits for `child` with `wait4`, returning its wall time since `started`,
/// its CPU time (user + system) and its peak RSS.
fn reap(child: &Child, started: Instant) -> Finished {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Finished {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kb: usage.ru_maxrss,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}

/// One `keel ask hello`, answer to /dev/null.
// Reaped by `reap` with `wait4` (for its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn ask(bin: &Path, root: &Path) -> Finished {
    let started = Instant::now();
    let child = keel(bin, root)
        .args(["ask", "hello"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keel ask");
    reap(&child, started)
}

/// What the console costs: time to its prompt line, RSS after a second
/// idle, and the whole process's CPU time and peak RSS.
struct Console {
    ready: Duration,
    idle_rss_kb: i64,
    /// Of which private memory (heap, stacks, relocated data) and mapped
    /// file pages (mostly keel's own code, shared and clean).
    idle_anon_kb: i64,
    idle_file_kb: i64,
    done: Finished,
}

// Reaped by `reap` with `wait4` (for its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn console(bin: &Path, root: &Path) -> Console {
    let started = Instant::now();
    let mut child = keel(bin, root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the console");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let ready =
        console::time_to_prompt(&mut out, started).expect("the console printed its prompt line");
    // Idle: the figure is what the console holds while a person reads.
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_kb = proc_status_kb(child.id(), "VmRSS:");
    let idle_anon_kb = proc_status_kb(child.id(), "RssAnon:");
    let idle_file_kb = proc_status_kb(child.id(), "RssFile:");
    drop(child.stdin.take());
    // Drain what it prints on the way out, so it never blocks on a full pipe.
    let _ = out.read_to_end(&mut Vec::new());
    Console {
        ready,
        idle_rss_kb,
        idle_anon_kb,
        idle_file_kb,
        done: reap(&child, started),
    }
}

/// Median wall, CPU and peak RSS over runs, and their ranges.
fn summary(runs: &[Finished]) -> String {
    let wall: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    let cpu: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
    let rss: Vec<i64> = runs.iter().map(|r| r.max_rss_kb).collect();
    format!(
        "wall p50 {:.1} ms (min {:.1}), CPU p50 {:.1} ms (min {:.1}), max RSS p50 {:.1} MB (max {:.1})",
        ms(median(wall.clone())),
        ms(*wall.iter().min().expect("runs")),
        ms(median(cpu.clone())),
        ms(*cpu.iter().min().expect("runs")),
        mb(median(rss.clone())),
        mb(*rss.iter().max().expect("runs")),
    )
}

fn main() {
    if common::serve_fake_model_if_child(|| {
        let model = FakeModel::with_handler(Wire::OpenAi, |_| Reply::text(ANSWER));
        let url = model.base_url();
        (model, url)
    }) {
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let bins = common::bins(env!("CARGO_BIN_EXE_keel"));
    let (mut server, base_url) = fake_model_process();
    let (_d0, plain) = workspace(&base_url, 0, "");
    let (_d1, many) = workspace(&base_url, SKILLS, "");

    // The answer arrives, and the run is done (exit 0), with every binary.
    for bin in &bins {
        let out = keel(bin, &plain)
            .args(["ask", "hello"])
            .output()
            .expect("keel ask");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(ANSWER),
            "{}: keel ask failed: {}{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    println!("load average before: {}", load());
    for (label, root) in [
        ("built-in skills", &plain),
        ("built-ins + 20 skills", &many),
    ] {
        let mut runs: Vec<Vec<Finished>> = bins.iter().map(|_| Vec::new()).collect();
        for round in 0..RUNS + 2 {
            for (i, bin) in bins.iter().enumerate() {
                let r = ask(bin, root);
                assert!(r.success, "{}: keel ask failed", bin.display());
                // The first two rounds warm the page cache and the database.
                if round >= 2 {
                    runs[i].push(r);
                }
            }
        }
        for (bin, runs) in bins.iter().zip(&runs) {
            println!(
                "O1 one-shot `keel ask hello`, {label} ({}; {RUNS} runs): {} (target <= 20 ms wall, <= 10 MB)",
                bin.display(),
                summary(runs)
            );
        }
    }

    let mut consoles: Vec<Vec<Console>> = bins.iter().map(|_| Vec::new()).collect();
    for round in 0..RUNS.min(15) + 1 {
        for (i, bin) in bins.iter().enumerate() {
            let c = console(bin, &many);
            if round >= 1 {
                consoles[i].push(c);
            }
        }
    }
    for (bin, runs) in bins.iter().zip(consoles) {
        let ready = median(runs.iter().map(|c| c.ready).collect());
        let idle = median(runs.iter().map(|c| c.idle_rss_kb).collect());
        let idle_max = runs.iter().map(|c| c.idle_rss_kb).max().unwrap_or(0);
        let anon = median(runs.iter().map(|c| c.idle_anon_kb).collect());
        let file = median(runs.iter().map(|c| c.idle_file_kb).collect());
        let done: Vec<Finished> = runs.into_iter().map(|c| c.done).collect();
        println!(
            "O2 console with built-ins + 20 skills ({}; {} runs): ready p50 {:.1} ms, idle RSS after 1 s p50 {:.1} MB (max {:.1}; anonymous {:.1} MB, file pages {:.1} MB); whole process to exit: {} (target ready <= 15 ms, idle <= 8 MB)",
            bin.display(),
            done.len(),
            ms(ready),
            mb(idle),
            mb(idle_max),
            mb(anon),
            mb(file),
            summary(&done)
        );
    }
    println!(
        "load average after: {}; this process's peak RSS {:.1} MB (a child's max RSS below it means nothing)",
        load(),
        mb(proc_status_kb(std::process::id(), "VmHWM:"))
    );
    drop(server.stdin.take());
    let _ = server.wait();
}
