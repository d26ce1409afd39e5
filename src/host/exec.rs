//! `keel.exec`: run a program, gated by `exec`.
//!
//! A program is run from an argv list, never through a shell: arguments
//! reach it byte for byte, so `;`, `|`, `$(...)` and backticks mean nothing
//! special. The program is checked before anything else happens:
//!
//! - a bare name (`git`) is checked by name, then looked up on the `PATH`
//!   the kernel was given (empty and relative entries are skipped, so the
//!   current directory is never searched);
//! - a path must be absolute; it is canonicalised and the canonical path is
//!   what the gate checks, so a rule has to name the exact file
//!   (`exec:/usr/bin/git`), and a symlink cannot smuggle in another program.
//!
//! The child starts with an empty environment plus only the variables the
//! skill declared (`env:NAME` or `env:*`) and the policy allows outright —
//! a variable whose policy says `ask` is not passed, because prompting for
//! every variable on every run would be noise nobody can judge.
//!
//! Output is read on separate threads, so a child that writes a lot to both
//! streams cannot deadlock against keel; each stream keeps at most
//! [`MAX_OUTPUT`] bytes and the rest is read and dropped. Every run has a
//! time limit (the script's `timeout_ms`, capped by the call's deadline);
//! the wait also ends as soon as the run is cancelled.
//!
//! The child runs in an OS sandbox built from the skill's grants
//! ([`crate::sandbox`]): its own process group (and PID namespace where the
//! kernel allows), `no_new_privs`, and Landlock limiting it to the folders
//! the skill may read and write, the programs it may run, and the network
//! only if it holds `net.http`. When the call ends — the program exited,
//! the time ran out, or the run was cancelled — the whole group is killed
//! before the program is reaped, so nothing it started outlives the call.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Args, CallCtx, HostError, HostFn, Millis, json_type, opt, p};
use crate::capability::{CapabilityKind, Target};

/// The most bytes kept from each of stdout and stderr.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;

pub const FUNCTIONS: &[HostFn] = &[HostFn {
    namespace: "exec",
    name: "run",
    params: &[
        p("argv", "{string}"),
        opt(
            "opts",
            "{ cwd: string?, stdin: string?, timeout_ms: number? }",
        ),
    ],
    returns: "{ status: number, success: boolean, stdout: string, stderr: string, truncated: boolean, signal: number? }",
    capability: Some(CapabilityKind::Exec),
    doc: "Runs a program with arguments, without a shell: `argv[1]` is the program (a name \
          looked up on PATH, or an absolute path) and the rest are passed to it unchanged. \
          The skill needs `exec` for the program (`exec:git`, or the exact canonical path \
          for an absolute one). Options: `cwd` (a directory the skill may read; default the \
          workspace), `stdin` (a string written to the program's input), `timeout_ms` (the \
          program is killed when it runs out; never beyond the call's deadline). The \
          program sees only the environment variables the skill declared with `env` and \
          the policy allows. Returns `status` (the exit code, -1 if killed by a signal, \
          with `signal` set), `success`, `stdout` and `stderr` (text, at most 4 MiB each) \
          and `truncated` (true if output was cut). A non-zero exit is a result, not an \
          error.",
    luau_example: r#"local r = keel.exec.run({ "git", "log", "-1", "--format=%s" }, { cwd = "./repo", timeout_ms = 5000 })
if not r.success then error("git failed: " .. r.stderr) end
print(r.stdout)"#,
    rhai_example: r#"let r = keel::exec::run(["git", "log", "-1", "--format=%s"], #{ cwd: "./repo", timeout_ms: 5000 });
if !r.success { throw `git failed: ${r.stderr}`; }
print(r.stdout);"#,
    call: run,
}];

fn run(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let (argv, opts) = parse_run_args(args)?;
    let prog = argv[0].as_str();
    let what = format!("exec `{prog}`");

    let program = resolve_program(ctx, prog)?;
    let cwd = match &opts.cwd {
        Some(cwd) => checked_cwd(ctx, cwd)?,
        None => ctx.kernel.workspace().to_path_buf(),
    };
    let env = child_env(ctx);

    let remaining = ctx.remaining()?;
    let requested = opts.timeout_ms.map_or(Duration::MAX, |m| m.0);
    let limit = requested.min(remaining);
    let call_bound = remaining <= requested;

    let spec = sandbox_spec(ctx, &program);
    let mode = crate::sandbox::Mode::from_setting(
        ctx.kernel
            .env()
            .get("KEEL_EXEC_SANDBOX")
            .map(String::as_str),
    );
    let confinement = crate::sandbox::prepare(&spec, mode)
        .map_err(|e| HostError::Failed(format!("{what}: {e}")))?;

    let mut cmd = Command::new(&program);
    #[cfg(unix)]
    {
        // The program sees the name it was called by, as from a shell.
        use std::os::unix::process::CommandExt as _;
        cmd.arg0(prog);
    }
    cmd.args(&argv[1..]).env_clear().envs(env).current_dir(&cwd);
    confinement.apply(&mut cmd);

    tracing::debug!(
        skill = %ctx.skill.name,
        program = %program.display(),
        cwd = %cwd.display(),
        sandbox_rules = confinement.rules,
        sandboxed = confinement.enforced,
        "exec"
    );
    let outcome = run_child(
        &mut cmd,
        opts.stdin.map(String::into_bytes),
        limit,
        MAX_OUTPUT,
        &|| ctx.cancelled(),
    )
    .map_err(|e| match e {
        RunError::Cancelled => HostError::Deadline,
        RunError::TimedOut { .. } if call_bound => HostError::Deadline,
        RunError::TimedOut { after_exit } => HostError::Failed(format!(
            "{what}: timed out after {} ms{}",
            limit.as_millis(),
            if after_exit {
                ": the program exited, but a process it started kept its output open"
            } else {
                " (the program was killed)"
            }
        )),
        RunError::Spawn(e) => HostError::Failed(format!(
            "{what}: could not start `{}`: {e}",
            program.display()
        )),
        RunError::Io(msg) => HostError::Failed(format!("{what}: {msg}")),
    })?;
    tracing::debug!(
        skill = %ctx.skill.name,
        program = %program.display(),
        status = ?outcome.status.code(),
        "exec finished"
    );
    Ok(outcome.into_json())
}

// ---------------------------------------------------------------------------
// Arguments and options

/// The argv list, and any options written in the same table
/// (`keel.exec.run{ "git", "status", cwd = "./sub" }`).
fn parse_argv(v: Option<&Value>) -> Result<(Vec<String>, Map<String, Value>), HostError> {
    let mut opts = Map::new();
    let items: Vec<&Value> = match v {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Object(map)) => {
            // A Luau table with both list items and named fields.
            let mut positional: Vec<(usize, &Value)> = Vec::new();
            for (k, v) in map {
                match k.parse::<usize>() {
                    Ok(i) if i >= 1 => positional.push((i, v)),
                    _ => {
                        opts.insert(k.clone(), v.clone());
                    }
                }
            }
            positional.sort_by_key(|(i, _)| *i);
            if positional.iter().enumerate().any(|(n, (i, _))| *i != n + 1) {
                return Err(HostError::BadArgument(
                    "expected a list of strings without holes (the program and its arguments)"
                        .to_string(),
                ));
            }
            positional.into_iter().map(|(_, v)| v).collect()
        }
        other => {
            return Err(HostError::BadArgument(format!(
                "expected a list of strings (the program and its arguments, \
                 e.g. {{ \"git\", \"status\" }}), got {}",
                other.map_or("nothing", json_type)
            )));
        }
    };
    if items.is_empty() {
        return Err(HostError::BadArgument(
            "the list must name at least the program, e.g. { \"git\", \"status\" }".to_string(),
        ));
    }
    let argv = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| arg_string(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    if argv[0].is_empty() {
        return Err(HostError::BadArgument(
            "the program name (argv item 1) is empty".to_string(),
        ));
    }
    Ok((argv, opts))
}

/// One argv item: a string, or a number written as a script would print it.
fn arg_string(i: usize, v: &Value) -> Result<String, HostError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            // Luau numbers are floats; `2` should still be "2", not "2.0".
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        other => {
            return Err(HostError::BadArgument(format!(
                "argv item {} must be a string, got {}",
                i + 1,
                json_type(other)
            )));
        }
    };
    if s.contains('\0') {
        return Err(HostError::BadArgument(format!(
            "argv item {} contains a NUL byte, which no program can receive",
            i + 1
        )));
    }
    Ok(s)
}

/// `keel.exec.run(argv, opts)`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    argv: Argv,
    opts: Option<RunOptions>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RunOptions {
    /// A directory the skill may read; default the workspace.
    cwd: Option<String>,
    /// Written to the program's input.
    stdin: Option<String>,
    /// Never beyond the call's deadline.
    timeout_ms: Option<Millis>,
}

impl RunOptions {
    /// These options, each overridden by `later`'s when it sets it.
    fn overridden_by(self, later: Option<RunOptions>) -> RunOptions {
        match later {
            None => self,
            Some(l) => RunOptions {
                cwd: l.cwd.or(self.cwd),
                stdin: l.stdin.or(self.stdin),
                timeout_ms: l.timeout_ms.or(self.timeout_ms),
            },
        }
    }
}

/// The argv list, and any options written in the same table.
struct Argv {
    argv: Vec<String>,
    inline: RunOptions,
}

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = Value::deserialize(d)?;
        let (argv, inline) = parse_argv(Some(&v)).map_err(D::Error::custom)?;
        let inline = if inline.is_empty() {
            RunOptions::default()
        } else {
            RunOptions::deserialize(Value::Object(inline)).map_err(D::Error::custom)?
        };
        Ok(Argv { argv, inline })
    }
}

/// The program and its arguments, and the options: those in the `opts`
/// table override those written in the argv table.
fn parse_run_args(args: Args) -> Result<(Vec<String>, RunOptions), HostError> {
    let RunArgs {
        argv: Argv { argv, inline },
        opts,
    } = args.parse()?;
    Ok((argv, inline.overridden_by(opts)))
}

// ---------------------------------------------------------------------------
// Checks

/// Checks the program with the gate and finds the file to run.
fn resolve_program(ctx: &CallCtx, prog: &str) -> Result<PathBuf, HostError> {
    if !prog.contains('/') {
        ctx.check(CapabilityKind::Exec, Target::Name(prog))?;
        let path_var = ctx.kernel.env().get("PATH").map(String::as_str);
        return find_on_path(prog, path_var).ok_or_else(|| {
            HostError::Failed(match path_var {
                Some(_) => format!("exec `{prog}`: program `{prog}` not found on PATH"),
                None => format!(
                    "exec `{prog}`: program `{prog}` not found on PATH (keel's environment \
                     has no PATH; give an absolute path instead)"
                ),
            })
        });
    }
    let path = Path::new(prog);
    if !path.is_absolute() {
        return Err(HostError::BadArgument(format!(
            "program `{prog}` must be a bare name looked up on PATH (\"git\") or an \
             absolute path (\"/usr/bin/git\")"
        )));
    }
    match path.canonicalize() {
        Ok(canonical) => {
            let Some(name) = canonical.to_str() else {
                return Err(HostError::Failed(format!(
                    "exec `{prog}`: its canonical path is not valid UTF-8, so no rule can name it"
                )));
            };
            ctx.check(CapabilityKind::Exec, Target::Name(name))?;
            if !is_executable_file(&canonical) {
                return Err(HostError::Failed(format!(
                    "exec `{prog}`: `{name}` is not an executable file"
                )));
            }
            Ok(canonical)
        }
        Err(_) => {
            // Ask the gate before saying "not found", so a skill cannot probe
            // which files exist outside what it was granted.
            let lexical = crate::capability::paths::normalize_lexically(path);
            ctx.check(
                CapabilityKind::Exec,
                Target::Name(lexical.to_str().unwrap_or(prog)),
            )?;
            Err(HostError::Failed(format!(
                "exec `{prog}`: program `{prog}` not found"
            )))
        }
    }
}

/// The first executable regular file named `name` in the `PATH` entries.
/// Empty and relative entries are skipped: they would search the kernel's
/// current directory, which is nobody's intent for a sandboxed skill.
fn find_on_path(name: &str, path_var: Option<&str>) -> Option<PathBuf> {
    path_var?
        .split(':')
        .map(Path::new)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// The working directory: inside something the skill may read, and existing.
fn checked_cwd(ctx: &CallCtx, cwd: &str) -> Result<PathBuf, HostError> {
    let path = ctx.resolve_path(cwd)?;
    ctx.check(CapabilityKind::FsRead, Target::Path(&path))?;
    if !path.is_dir() {
        return Err(HostError::Failed(format!(
            "cwd `{cwd}` is not an existing directory"
        )));
    }
    Ok(path)
}

/// What the child may reach: what the gate allows outright
/// ([`Gate::sandbox_roots`](crate::kernel::gate::Gate::sandbox_roots)), the
/// program itself, and the other programs the skill may run found on PATH.
fn sandbox_spec(ctx: &CallCtx, program: &Path) -> crate::sandbox::Spec {
    let roots = ctx.kernel.gate().sandbox_roots(&ctx.caller(None));
    let mut spec = crate::sandbox::Spec {
        execute: vec![program.to_path_buf()],
        read: roots.read,
        write: roots.write,
        excluded: roots.excluded,
        network: roots.network,
        owner: crate::sandbox::Owner {
            workspace: ctx.kernel.workspace().to_path_buf(),
            skill: ctx.skill.name.clone(),
        },
    };
    let path_var = ctx.kernel.env().get("PATH").map(String::as_str);
    for name in &roots.programs {
        let found = if name.starts_with('/') {
            Path::new(name).canonicalize().ok()
        } else {
            find_on_path(name, path_var).and_then(|p| p.canonicalize().ok())
        };
        if let Some(p) = found
            && !spec.execute.contains(&p)
        {
            spec.execute.push(p);
        }
    }
    spec
}

/// The environment for the child: what the gate lets a program see
/// ([`Gate::child_env`](crate::kernel::gate::Gate::child_env)).
fn child_env(ctx: &CallCtx) -> Vec<(String, String)> {
    ctx.kernel
        .gate()
        .child_env(&ctx.caller(None), ctx.kernel.env())
}

// ---------------------------------------------------------------------------
// Running

/// Output of one stream, capped.
#[derive(Debug, Default, Clone, PartialEq)]
struct Capture {
    data: Vec<u8>,
    truncated: bool,
}

impl Capture {
    /// Keeps what fits under `cap`; remembers that the rest was dropped.
    fn push(&mut self, chunk: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.data.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: Capture,
    stderr: Capture,
}

impl Outcome {
    fn signal(&self) -> Option<i32> {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt as _;
            self.status.signal()
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    fn into_json(self) -> Value {
        let mut out = json!({
            "status": self.status.code().unwrap_or(-1),
            "success": self.status.success(),
            "stdout": self.stdout.text(),
            "stderr": self.stderr.text(),
            "truncated": self.stdout.truncated || self.stderr.truncated,
        });
        if let (Some(sig), Value::Object(map)) = (self.signal(), &mut out) {
            map.insert("signal".into(), sig.into());
        }
        out
    }
}

#[derive(Debug)]
enum RunError {
    /// The limit passed; `after_exit` if the program had exited but its
    /// output was still held open by something it started.
    TimedOut {
        after_exit: bool,
    },
    /// The run the call belongs to was cancelled.
    Cancelled,
    Spawn(std::io::Error),
    Io(String),
}

/// Runs `cmd` to completion, until `limit`, or until `cancelled` says so,
/// feeding it `stdin` and capturing up to `cap` bytes of each output stream.
/// `cmd` must lead its own process group ([`crate::sandbox::Confinement`]
/// sets that up): the group is killed when the program ends, so whatever
/// it started ends with it.
fn run_child(
    cmd: &mut Command,
    stdin: Option<Vec<u8>>,
    limit: Duration,
    cap: usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<Outcome, RunError> {
    let deadline = Instant::now() + limit;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;

    let readers = (|| {
        let out = spawn_reader(child.stdout.take(), cap, "keel-exec-stdout")?;
        let err = spawn_reader(child.stderr.take(), cap, "keel-exec-stderr")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // On its own thread: a child that does not read its input must
            // not stop us reading its output. A broken pipe just means the
            // child did not want the rest.
            thread::Builder::new()
                .name("keel-exec-stdin".into())
                .spawn(move || {
                    let _ = pipe.write_all(&input);
                })?;
        }
        Ok::<_, std::io::Error>((out, err))
    })();
    let (out_rx, err_rx) = match readers {
        Ok(r) => r,
        Err(e) => {
            kill_and_reap(&mut child);
            return Err(RunError::Io(format!(
                "could not start the output readers: {e}"
            )));
        }
    };

    let status = wait_until(&mut child, deadline, cancelled)?;
    let stdout = receive_until(&out_rx, deadline, cancelled)?;
    let stderr = receive_until(&err_rx, deadline, cancelled)?;
    Ok(Outcome {
        status,
        stdout,
        stderr,
    })
}

fn spawn_reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    cap: usize,
    name: &str,
) -> std::io::Result<mpsc::Receiver<Capture>> {
    let (tx, rx) = mpsc::channel();
    match pipe {
        None => {
            let _ = tx.send(Capture::default());
        }
        Some(mut pipe) => {
            thread::Builder::new().name(name.into()).spawn(move || {
                let _ = tx.send(read_capped(&mut pipe, cap));
            })?;
        }
    }
    Ok(rx)
}

/// Reads to the end, keeping at most `cap` bytes; the rest is drained so
/// the writer never blocks on a full pipe.
fn read_capped(r: &mut impl Read, cap: usize) -> Capture {
    let mut capture = Capture::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => capture.push(&buf[..n], cap),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    capture
}

/// Waits for the program to exit, the deadline, or cancellation; polls
/// with short sleeps so cancellation is seen within ~25 ms. However it
/// ends, the process group is killed before the program is reaped.
fn wait_until(
    child: &mut Child,
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
) -> Result<ExitStatus, RunError> {
    let mut pause = Duration::from_millis(1);
    loop {
        match exited(child) {
            Ok(true) => {
                crate::sandbox::kill_group(child.id());
                return child
                    .wait()
                    .map_err(|e| RunError::Io(format!("could not wait for the program: {e}")));
            }
            Ok(false) => {}
            Err(e) => {
                kill_and_reap(child);
                return Err(RunError::Io(format!("could not wait for the program: {e}")));
            }
        }
        if cancelled() {
            kill_and_reap(child);
            return Err(RunError::Cancelled);
        }
        let now = Instant::now();
        if now >= deadline {
            kill_and_reap(child);
            return Err(RunError::TimedOut { after_exit: false });
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// Whether the program has exited, without reaping it: while it is a
/// zombie its pid (and so its process group id) cannot be reused, so
/// killing the group afterwards cannot hit a stranger.
#[cfg(unix)]
fn exited(child: &mut Child) -> std::io::Result<bool> {
    let pid: libc::id_t = child.id();
    loop {
        // SAFETY: waitid writes only into `info`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: after a successful waitid, si_pid is set (0 if no child
        // changed state).
        return Ok(unsafe { info.si_pid() } != 0);
    }
}

#[cfg(not(unix))]
fn exited(child: &mut Child) -> std::io::Result<bool> {
    child.try_wait().map(|s| s.is_some())
}

/// Waits for an output reader; gives up at the deadline or on
/// cancellation (checked every 25 ms).
fn receive_until(
    rx: &mpsc::Receiver<Capture>,
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
) -> Result<Capture, RunError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(25))) {
            Ok(c) => return Ok(c),
            Err(mpsc::RecvTimeoutError::Timeout) if cancelled() => {
                return Err(RunError::Cancelled);
            }
            Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                return Err(RunError::TimedOut { after_exit: true });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(RunError::Io(
                    "the output reader stopped unexpectedly".into(),
                ));
            }
        }
    }
}

/// Kills the program's whole process group, then reaps the program.
fn kill_and_reap(child: &mut Child) {
    crate::sandbox::kill_group(child.id());
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(r: Result<impl std::fmt::Debug, HostError>) -> String {
        match r {
            Err(HostError::BadArgument(m)) => m,
            other => panic!("expected BadArgument, got {other:?}"),
        }
    }

    #[test]
    fn argv_is_a_list_of_strings() {
        let (argv, opts) = parse_argv(Some(&json!(["git", "status", "-s"]))).unwrap();
        assert_eq!(argv, ["git", "status", "-s"]);
        assert!(opts.is_empty());
        let (argv, _) = parse_argv(Some(&json!(["sleep", 2.0, 1.5, -3]))).unwrap();
        assert_eq!(argv, ["sleep", "2", "1.5", "-3"]);
    }

    #[test]
    fn a_mixed_table_holds_argv_and_options() {
        let (argv, opts) = parse_argv(
            Some(&json!({ "1": "git", "2": "status", "cwd": "./sub", "10": "x", "3": "a", "4": "b", "5": "c", "6": "d", "7": "e", "8": "f", "9": "g" })),
        )
        .unwrap();
        assert_eq!(
            argv,
            ["git", "status", "a", "b", "c", "d", "e", "f", "g", "x"]
        );
        assert_eq!(opts.get("cwd"), Some(&json!("./sub")));
        let m = bad(parse_argv(Some(&json!({ "1": "git", "3": "x" }))));
        assert!(m.contains("without holes"), "{m}");
    }

    #[test]
    fn bad_argv_is_explained() {
        assert!(bad(parse_argv(None)).contains("got nothing"));
        assert!(bad(parse_argv(Some(&json!("git status")))).contains("got string"));
        assert!(bad(parse_argv(Some(&json!([])))).contains("at least the program"));
        assert!(bad(parse_argv(Some(&json!({ "cwd": "x" })))).contains("at least the program"));
        assert!(
            bad(parse_argv(Some(&json!(["git", true]))))
                .contains("argv item 2 must be a string, got boolean")
        );
        assert!(bad(parse_argv(Some(&json!(["", "x"])))).contains("empty"));
        assert!(bad(parse_argv(Some(&json!(["a", "b\u{0}c"])))).contains("NUL"));
    }

    #[test]
    fn shell_metacharacters_are_ordinary_arguments() {
        let args = [";", "$(id)", "`id`", "|", "a b", "*", "&&", ">x"];
        let mut input = vec![json!("echo")];
        input.extend(args.iter().map(|a| json!(a)));
        let (argv, _) = parse_argv(Some(&Value::Array(input))).unwrap();
        assert_eq!(&argv[1..], args);
    }

    #[test]
    fn options_are_parsed_and_checked() {
        let run = |values: Vec<Value>| parse_run_args(Args::new(FUNCTIONS[0].params, values));
        let (_, o) = run(vec![
            json!(["ls"]),
            json!({ "cwd": "./sub", "stdin": "hi", "timeout_ms": 250 }),
        ])
        .unwrap();
        assert_eq!(
            o,
            RunOptions {
                cwd: Some("./sub".into()),
                stdin: Some("hi".into()),
                timeout_ms: Some(Millis(Duration::from_millis(250))),
            }
        );
        let bad_opts = |opts: Value| bad(run(vec![json!(["ls"]), opts]));
        let m = bad_opts(json!({ "cwd": 1 }));
        assert!(
            m.contains("`opts.cwd` must be a string, got number 1"),
            "{m}"
        );
        assert!(bad_opts(json!({ "timeout_ms": 0 })).contains("positive"));
        assert!(bad_opts(json!({ "timeout_ms": "5" })).contains("got string"));
        let m = bad_opts(json!({ "stdn": "x" }));
        assert!(
            m.contains("opts: unknown field `stdn` (did you mean `stdin`?), expected one of `cwd`, `stdin`, `timeout_ms`"),
            "{m}"
        );
        // Options in the argv table are checked the same way, and the
        // `opts` table overrides them.
        let m = bad(run(vec![json!({ "1": "ls", "cwdd": "x" })]));
        assert!(
            m.contains("argv: unknown field `cwdd` (did you mean `cwd`?)"),
            "{m}"
        );
        let (argv, o) = run(vec![
            json!({ "1": "ls", "cwd": "a", "stdin": "s" }),
            json!({ "cwd": "b" }),
        ])
        .unwrap();
        assert_eq!(argv, ["ls"]);
        assert_eq!(
            (o.cwd.as_deref(), o.stdin.as_deref()),
            (Some("b"), Some("s"))
        );
        // An empty Luau table (`{}`) arrives as an empty list: no options.
        let (_, o) = run(vec![json!(["ls"]), json!([])]).unwrap();
        assert_eq!(o, RunOptions::default());
        let m = bad(run(vec![json!(null)]));
        assert!(m.contains("argv: expected a list of strings"), "{m}");
    }

    #[cfg(unix)]
    fn write_file(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, "#!/bin/sh\necho fake\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn path_lookup_finds_the_first_executable_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        for dir in [&a, &b, &c] {
            std::fs::create_dir(dir).unwrap();
        }
        write_file(&a.join("tool"), 0o644); // not executable
        std::fs::create_dir(b.join("tool")).unwrap(); // a directory
        write_file(&c.join("tool"), 0o755);
        let path = format!("{}:{}:{}", a.display(), b.display(), c.display());
        assert_eq!(find_on_path("tool", Some(&path)), Some(c.join("tool")));
        assert_eq!(find_on_path("missing", Some(&path)), None);
        assert_eq!(find_on_path("tool", None), None);
        // Empty and relative entries (the current directory) are never searched.
        let rel = format!(":.:{}", a.display());
        write_file(&a.join("tool"), 0o755);
        assert_eq!(find_on_path("tool", Some(&rel)), Some(a.join("tool")));
        assert_eq!(find_on_path("tool", Some("::.")), None);
    }

    #[test]
    fn output_beyond_the_cap_is_dropped_and_flagged() {
        let mut c = Capture::default();
        c.push(b"hello", 8);
        assert!(!c.truncated);
        c.push(b"world", 8);
        assert_eq!(c.data, b"hellowor");
        assert!(c.truncated);
        c.push(b"more", 8);
        assert_eq!(c.data, b"hellowor");
        let mut exact = Capture::default();
        exact.push(b"12345678", 8);
        assert!(!exact.truncated);
        let mut r = std::io::Cursor::new(vec![b'x'; 200_000]);
        let c = read_capped(&mut r, 100_000);
        assert_eq!(c.data.len(), 100_000);
        assert!(c.truncated);
    }

    #[cfg(unix)]
    fn sh(script: &str, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg("sh").args(args);
        cmd.process_group(0);
        cmd
    }

    #[cfg(unix)]
    #[test]
    fn a_child_gets_its_arguments_unchanged_and_its_output_captured() {
        let args = [";", "$(id)", "`id`", "|", "a b"];
        let out = run_child(
            &mut sh(r#"printf '%s\n' "$@"; echo err >&2; exit 3"#, &args),
            None,
            Duration::from_secs(20),
            MAX_OUTPUT,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.stdout.text(), ";\n$(id)\n`id`\n|\na b\n");
        assert_eq!(out.stderr.text(), "err\n");
        let v = out.into_json();
        assert_eq!(v["status"], 3);
        assert_eq!(v["success"], false);
        assert_eq!(v["truncated"], false);
        assert!(v.get("signal").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn stdin_is_written_and_closed() {
        let out = run_child(
            &mut sh("cat", &[]),
            Some(b"piped in".to_vec()),
            Duration::from_secs(20),
            1024,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.stdout.text(), "piped in");
        assert!(out.status.success());
        // Without stdin the child reads end-of-file at once instead of hanging.
        let out = run_child(
            &mut sh("cat", &[]),
            None,
            Duration::from_secs(20),
            1024,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.stdout.text(), "");
    }

    #[cfg(unix)]
    #[test]
    fn chatty_children_do_not_deadlock_and_are_truncated() {
        // Both streams far beyond a pipe buffer and beyond the cap.
        let script = "i=0; while [ $i -lt 3000 ]; do echo 0123456789012345678901234567890123456789; echo 0123456789012345678901234567890123456789 >&2; i=$((i+1)); done";
        let out = run_child(
            &mut sh(script, &[]),
            None,
            Duration::from_secs(60),
            10_000,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.stdout.data.len(), 10_000);
        assert_eq!(out.stderr.data.len(), 10_000);
        assert!(out.stdout.truncated && out.stderr.truncated);
        assert_eq!(out.into_json()["truncated"], true);
    }

    /// Whether process `pid` no longer runs: reaped, or a zombie.
    #[cfg(target_os = "linux")]
    fn not_running(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    /// Waits (bounded: a failure guard, not a speed check) for `f`.
    #[cfg(target_os = "linux")]
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for: {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pid a script wrote to `file` (with its newline), once it has.
    #[cfg(target_os = "linux")]
    fn pid_in(file: &std::path::Path) -> Option<i32> {
        let text = std::fs::read_to_string(file).ok()?;
        text.strip_suffix('\n')?.parse().ok()
    }

    /// Processes still running (not zombies) whose command line holds
    /// `tag` as one argument.
    #[cfg(target_os = "linux")]
    fn running_with(tag: &str) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == tag.as_bytes()))
                    && !not_running(*pid)
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_past_its_limit_is_killed() {
        // The sleep outlives the test unless keel kills it: the test checks
        // that nothing carrying its unique argument still runs (the shell,
        // or the sleep it became), not how fast the call came back.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!("600.{}{nanos:09}", std::process::id());
        let err = run_child(
            &mut sh(r#"exec sleep "$1""#, &[&tag]),
            None,
            Duration::from_millis(200),
            1024,
            &|| false,
        )
        .unwrap_err();
        assert!(
            matches!(err, RunError::TimedOut { after_exit: false }),
            "{err:?}"
        );
        eventually("the timed-out child to be killed", || {
            running_with(&tag).is_empty()
        });
    }

    #[cfg(unix)]
    #[test]
    fn a_signal_is_reported_with_status_minus_one() {
        let out = run_child(
            &mut sh("kill -9 $$", &[]),
            None,
            Duration::from_secs(20),
            1024,
            &|| false,
        )
        .unwrap();
        let v = out.into_json();
        assert_eq!(v["status"], -1);
        assert_eq!(v["signal"], 9);
        assert_eq!(v["success"], false);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_cancelled_run_stops_the_wait_at_once() {
        // The run is cancelled once the child says it is running (it wrote
        // its background sleep's pid), so the cancel lands in the wait.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        // Far beyond the test's patience: only cancellation can end it.
        let err = run_child(
            &mut sh(
                r#"sleep 600 & echo $! > "$1"; sleep 600"#,
                &[file.to_str().unwrap()],
            ),
            None,
            Duration::from_secs(3600),
            1024,
            &|| pid_in(&file).is_some(),
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Cancelled), "{err:?}");
        // The whole group went with it, the background sleep included.
        let pid = pid_in(&file).expect("pid");
        eventually("the background sleep to be killed", || not_running(pid));
    }

    #[cfg(unix)]
    #[test]
    fn output_held_open_by_a_background_child_does_not_hold_the_call() {
        // The group is killed when the program exits, so the background
        // sleep's copy of stdout closes and the call ends long before it.
        let out = run_child(
            &mut sh("sleep 600 & echo done", &[]),
            None,
            Duration::from_secs(3600),
            1024,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.stdout.text(), "done\n");
    }
}
