//! The console on a real pseudo-terminal, typed at as a person would:
//! Python's `pty` module drives it (Python 3 is part of the CI image) and
//! answers the terminal's cursor-position queries the way a terminal does.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Ws;

/// Types into the real console on a pseudo-terminal. Steps come as JSON:
/// `["send", TEXT]`, `["expect", NAME, REGEX]` (searched after the previous
/// match), `["write", PATH, TEXT]` (writes a file under the workspace, e.g.
/// to edit a skill while the console waits), `["exit"]` (waits for the exit
/// and prints its status). Prints
/// `OK NAME` per step met, and `FAIL …` with the screen when one is not.
pub const PTY_DRIVER: &str = r#"
import json, os, pty, re, select, signal, struct, sys, time, fcntl, termios
keel, ws, data, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
args = sys.argv[5:]
pid, fd = pty.fork()
if pid == 0:
    os.chdir(ws)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_")) and k != "KEEL_LOG"}
    env.update(KEEL_DATA_DIR=data, TERM="xterm")
    os.execve(keel, [keel] + args, env)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
buf = b""
mark = 0

def pump(seconds):
    global buf
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if not r:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        # Answer cursor-position queries as a terminal would.
        for _ in range(chunk.count(b"\x1b[6n")):
            os.write(fd, b"\x1b[1;1R")

def fail(why):
    print("FAIL " + why, flush=True)
    print(buf.decode("utf-8", "replace")[-3000:], flush=True)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    sys.exit(1)

for step in steps:
    if step[0] == "send":
        os.write(fd, step[1].encode())
        pump(0.2)
    elif step[0] == "expect":
        name, pattern = step[1], re.compile(step[2].encode())
        end = time.time() + 15
        while True:
            m = pattern.search(buf, mark)
            if m:
                mark = m.end()
                print("OK " + name, flush=True)
                break
            if time.time() > end:
                fail(name + ": never saw " + repr(step[2]))
            pump(0.1)
    elif step[0] == "write":
        with open(os.path.join(ws, step[1]), "w") as f:
            f.write(step[2])
    elif step[0] == "exit":
        end = time.time() + 15
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("EXIT %d" % os.waitstatus_to_exitcode(status), flush=True)
                break
            if time.time() > end:
                fail("exit: the console did not end")
            pump(0.1)
"#;

/// Runs `keel ARGS` on a terminal over `ws`, typing `steps`; asserts that
/// every `expect` step was met and returns what the driver printed.
pub fn keel_on_a_terminal(ws: &Ws, args: &[&str], steps: Value) -> String {
    keel_on_a_terminal_with_env(ws, &[], args, steps)
}

/// [`keel_on_a_terminal`] with `env` set for keel (e.g. `NO_COLOR`; the
/// test's own `NO_COLOR` is not passed on, so colour tests see a plain
/// terminal).
pub fn keel_on_a_terminal_with_env(
    ws: &Ws,
    env: &[(&str, &str)],
    args: &[&str],
    steps: Value,
) -> String {
    let mut child = Command::new("python3")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .args([
            "-c",
            PTY_DRIVER,
            env!("CARGO_BIN_EXE_keel"),
            &ws.root.display().to_string(),
            &ws.data_dir().display().to_string(),
            &steps.to_string(),
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the console tests");
    // Every step is bounded inside the driver; this is the backstop.
    let until = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    for step in steps
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s[0] == "expect")
    {
        let name = step[1].as_str().expect("step name");
        assert!(
            stdout.contains(&format!("OK {name}\n")),
            "step {name:?} failed:\n{stdout}\n{stderr}"
        );
    }
    stdout
}
