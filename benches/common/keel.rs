//! What the benchmarks that run the real `keel` binary share: workspaces,
//! the fake model in a child process, reading a child's memory, medians.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// A workspace with the model configured and the built-in skills, plus
/// `skills` small Luau skills of one tool each, and `extra` appended to
/// keel.toml.
pub fn workspace(base_url: &str, skills: usize, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    write(
        &root,
        "keel.toml",
        &format!(
            "[models.main]\nprovider = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"fake\"\n{extra}"
        ),
    );
    for i in 0..skills {
        let name = format!("skill{i:02}");
        write(
            &root,
            &format!("skills/{name}/skill.toml"),
            &format!(
                "[skill]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"Echoes its text back ({i})\"\nentry = \"main.luau\"\n\n\
                 [[tools]]\nname = \"echo\"\ndescription = \"Returns the text it is given\"\n\
                 parameters = {{ type = \"object\", properties = {{ text = {{ type = \"string\" }} }}, required = [\"text\"] }}\n"
            ),
        );
        write(
            &root,
            &format!("skills/{name}/main.luau"),
            "local M = {}\nfunction M.echo(a) return { text = a.text } end\nreturn M\n",
        );
    }
    (dir, root)
}

/// `bin` in the workspace, with its own data dir and no model from the
/// environment.
pub fn keel(bin: &Path, root: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(root)
        .env("KEEL_DATA_DIR", root.join(".data"))
        .env_remove("KEEL_LOG")
        .env_remove("KEEL_TOKEN")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY");
    cmd
}

/// A field of `/proc/PID/status` in kB (`VmRSS:`, `VmHWM:`), -1 if gone.
pub fn proc_status_kb(pid: u32, field: &str) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(-1)
}

pub fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

/// The value at fraction `q` (0.99: p99) of `v`.
pub fn quantile<T: Copy + Ord>(mut v: Vec<T>, q: f64) -> T {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn mb(kb: i64) -> f64 {
    kb as f64 / 1024.0
}

pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts the fake model in a child process (this benchmark re-executed
/// with `--fake-model`); returns it and its base URL.
pub fn fake_model_process() -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--fake-model")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("fake model process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("base url");
    (child, line.trim().to_string())
}

/// In the child [`fake_model_process`] starts: serves the model `start`
/// makes (it returns the model, kept alive, and its base URL) until the
/// parent closes standard input. True if this process was that child.
pub fn serve_fake_model_if_child<M>(start: impl FnOnce() -> (M, String)) -> bool {
    use std::io::{Read, Write};
    if !std::env::args().any(|a| a == "--fake-model") {
        return false;
    }
    let (_model, url) = start();
    println!("{url}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    true
}

/// The binaries to measure: `KEEL_BENCH_BINS` (a PATH-style list), else
/// `built` (the one cargo built for the bench).
pub fn bins(built: &str) -> Vec<PathBuf> {
    match std::env::var_os("KEEL_BENCH_BINS") {
        Some(list) => std::env::split_paths(&list).collect(),
        None => vec![PathBuf::from(built)],
    }
}
