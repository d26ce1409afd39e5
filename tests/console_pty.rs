//! The console on a real pseudo-terminal, typed at as a person would:
//! Tab completion, a tool call, and a reload shown while the prompt waits.
//!
//! Python's `pty` module drives it (Python 3 is part of the CI image); it
//! answers the terminal's cursor-position queries the way a terminal does.

mod common;

use common::Ws;

const DRIVER: &str = r#"
import os, pty, select, struct, sys, time, fcntl, termios
keel, ws, data = sys.argv[1:4]
pid, fd = pty.fork()
if pid == 0:
    os.chdir(ws)
    env = dict(os.environ, KEEL_DATA_DIR=data, TERM="xterm")
    env.pop("KEEL_LOG", None)
    os.execve(keel, [keel], env)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
buf = b""

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
        buf += chunk
        # Answer cursor-position queries as a terminal would.
        for _ in range(chunk.count(b"\x1b[6n")):
            os.write(fd, b"\x1b[1;1R")

def expect(step, text, seconds=15):
    end = time.time() + seconds
    start = len(buf)
    while time.time() < end:
        if text.encode() in buf[start:] or text.encode() in buf:
            print("OK " + step, flush=True)
            return
        pump(0.1)
    print("FAIL " + step + ": never saw " + repr(text), flush=True)
    print(buf.decode("utf-8", "replace")[-2000:], flush=True)
    sys.exit(1)

def send(s):
    os.write(fd, s.encode())
    pump(0.3)

expect("banner", "1 skill, 1 tool")
send("/call gr")
send("\t")
expect("completion", "says hi")
send("\r")
pump(0.3)
send("\r")
expect("call", '"one"')
with open(os.path.join(ws, "skills/greet/main.luau"), "w") as f:
    f.write("local M = {} function M.hi() return 'two' end return M\n")
expect("reload shown while waiting", "[reload] reloaded greet@1.0.0")
send("/call greet.hi\r")
expect("new version", '"two"')
send("/quit\r")
_, status = os.waitpid(pid, 0)
print("EXIT %d" % os.waitstatus_to_exitcode(status), flush=True)
"#;

#[test]
fn the_console_completes_calls_and_shows_reloads_as_they_happen() {
    let ws = Ws::new()
        .skill(
            "greet",
            "[skill]\nname = \"greet\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"hi\"\ndescription = \"says hi\"\n",
            &[("main.luau", "local M = {} function M.hi() return 'one' end return M\n")],
        )
        .policy("");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            DRIVER,
            env!("CARGO_BIN_EXE_keel"),
            &ws.root.display().to_string(),
            &ws.data_dir().display().to_string(),
        ])
        .output()
        .expect("python3 is needed for the console test");
    let text = String::from_utf8_lossy(&out.stdout);
    for step in [
        "banner",
        "completion",
        "call",
        "reload shown while waiting",
        "new version",
    ] {
        assert!(
            text.contains(&format!("OK {step}")),
            "step {step:?} failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        text.contains("EXIT 0"),
        "the console did not quit cleanly:\n{text}"
    );
}
