//! Files under races: another thread or another process flips a symlink
//! between a real folder and a denied folder (or one outside the workspace)
//! as fast as it can, while a skill runs each fs operation thousands of
//! times through the real binary. Canary files wait in the denied and the
//! outside folder; afterwards every one must be unchanged, nothing may have
//! been created there, and no call may have returned their content or
//! names. The swaps are atomic (`renameat2(RENAME_EXCHANGE)`), so at every
//! instant the path is either the real folder or the link.
//!
//! Also here: FIFOs and devices in a granted folder are refused at once,
//! never opened for a blocking read or write.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use serde_json::json;

/// Iterations of each operation per call.
const ROUNDS: u32 = 2000;
/// Upper bound on flips, so a swapper can never run away.
const MAX_FLIPS: u64 = 200_000_000;

const LUAU_HAMMER: &str = r#"
local M = {}
-- Runs one operation `n` times; counts successes and refusals and keeps
-- every unexpected result (content or names that are not ours).
function M.hammer(a)
  local ok, refused, leaked = 0, 0, {}
  local base = a.base
  for i = 1, a.n do
    local fine, r = pcall(function()
      if a.op == "read" then
        local t = keel.fs.read(base .. "/f.txt")
        if t ~= "OK" then table.insert(leaked, t) end
      elseif a.op == "write" then
        keel.fs.write(base .. "/w.txt", "PWNED")
        keel.fs.write(base .. "/f.txt", "OK")
      elseif a.op == "append" then
        keel.fs.append(base .. "/a.txt", "PWNED")
      elseif a.op == "list" then
        for _, e in keel.fs.list(base) do
          if string.find(e.name, "only") then table.insert(leaked, e.name) end
        end
      elseif a.op == "exists" then
        if keel.fs.exists(base .. "/only-there.txt") then table.insert(leaked, "exists") end
      elseif a.op == "remove" then
        keel.fs.remove(base .. "/rm.txt")
      elseif a.op == "mkdir" then
        keel.fs.mkdir(base .. "/made/deeper")
      end
    end)
    if fine then ok += 1 else refused += 1 end
  end
  return { ok = ok, refused = refused, leaked = leaked }
end
return M
"#;

const OPS: [&str; 7] = [
    "read", "write", "append", "list", "exists", "remove", "mkdir",
];

fn manifest() -> String {
    "[skill]\nname = \"h\"\nversion = \"1.0.0\"\ndescription = \"race probe\"\nentry = \"main.luau\"\n\n\
     [capabilities]\n\"fs.read\" = [\".\"]\n\"fs.write\" = [\".\"]\n\n\
     [[tools]]\nname = \"hammer\"\ndescription = \"race\"\n"
        .to_string()
}

/// Canary names and contents, in the denied folder and outside.
const CANARIES: [(&str, &str); 6] = [
    ("f.txt", "CANARY-F"),
    ("w.txt", "CANARY-W"),
    ("a.txt", "CANARY-A"),
    ("rm.txt", "CANARY-RM"),
    ("only-there.txt", "CANARY-ONLY"),
    ("only-listed.txt", "CANARY-LISTED"),
];

fn plant(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in CANARIES {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// Every canary is intact and nothing else appeared.
fn assert_untouched(dir: &Path, what: &str) {
    for (name, content) in CANARIES {
        let got = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{what}: canary {name} is gone: {e}"));
        assert_eq!(got, content, "{what}: canary {name} was changed");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = CANARIES.iter().map(|(n, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "{what}: something was created or removed");
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid C strings; renameat2 only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Swaps `sw` (a real folder) with `link` (a symlink to the target) until
/// `stop` says so or `MAX_FLIPS` is reached; returns the flips done.
fn flip_until(sw: &Path, link: &Path, mut stop: impl FnMut() -> bool) -> u64 {
    let mut flips = 0;
    while flips < MAX_FLIPS && !stop() {
        exchange(sw, link).expect("exchange");
        flips += 1;
    }
    // Leave the real folder in place.
    if flips % 2 == 1 {
        exchange(sw, link).expect("exchange back");
    }
    flips
}

/// The workspace: `allowed/sw` is a real folder the skill may use, and
/// `allowed/sw-link` a symlink to `target` that the swapper exchanges it
/// with. `locked` is denied by the policy.
struct Arena {
    ws: Ws,
    _outside: tempfile::TempDir,
    outside: PathBuf,
}

fn arena(policy_allow: &str, link_to_outside: bool) -> Arena {
    let outside_dir = tempfile::tempdir().unwrap();
    let outside = outside_dir.path().canonicalize().unwrap();
    let ws = Ws::new()
        .skill("h", &manifest(), &[("main.luau", LUAU_HAMMER)])
        .policy(&format!(
            "[limits]\ntimeout_ms = 600000\n\n[policy]\ndefault = \"deny\"\nallow = [\"fs.read:{policy_allow}\", \"fs.write:{policy_allow}\"]\ndeny = [\"fs.read:./locked\", \"fs.write:./locked\"]\n"
        ));
    plant(&ws.path("locked"));
    plant(&outside);
    std::fs::create_dir_all(ws.path("allowed/sw")).unwrap();
    std::fs::write(ws.path("allowed/sw/f.txt"), "OK").unwrap();
    // Relative links: a walk that follows links while staying beneath its
    // root (cap-std's) would follow the one to `locked`, so only a walk
    // that follows none passes; the one to the outside leaves any root.
    let target = if link_to_outside {
        let mut up = PathBuf::new();
        for _ in ws.path("allowed").components().skip(1) {
            up.push("..");
        }
        up.join(outside.strip_prefix("/").unwrap())
    } else {
        PathBuf::from("../locked")
    };
    std::os::unix::fs::symlink(&target, ws.path("allowed/sw-link")).unwrap();
    assert_eq!(
        std::fs::canonicalize(ws.path("allowed/sw-link")).unwrap(),
        if link_to_outside {
            outside.clone()
        } else {
            ws.path("locked")
        }
    );
    Arena {
        ws,
        _outside: outside_dir,
        outside,
    }
}

impl Arena {
    /// Runs every operation `ROUNDS` times; returns (ok, refused) totals.
    fn hammer_all(&self) -> (u64, u64) {
        self.hammer_all_via(|args| self.ws.run(args))
    }

    fn hammer_all_via(&self, run: impl Fn(&[&str]) -> Called) -> (u64, u64) {
        let (mut ok, mut refused) = (0, 0);
        for op in OPS {
            let args = json!({"op": op, "n": ROUNDS, "base": "./allowed/sw"}).to_string();
            let c = run(&["call", "h.hammer", &args]);
            let v = c.ok();
            // Luau gives an empty table for an empty list; anything else
            // (entries, or no `leaked` at all) fails.
            assert_eq!(
                v["leaked"],
                json!({}),
                "{op}: keel handed out what lies behind the link"
            );
            ok += v["ok"].as_u64().unwrap();
            refused += v["refused"].as_u64().unwrap();
            self.check(op);
        }
        (ok, refused)
    }

    fn check(&self, op: &str) {
        assert_untouched(&self.ws.path("locked"), &format!("{op}: denied folder"));
        assert_untouched(&self.outside, &format!("{op}: outside folder"));
    }
}

#[test]
fn a_swapper_thread_never_gets_keel_into_a_denied_folder() {
    let a = arena("./allowed", false);
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let (sw, link) = (a.ws.path("allowed/sw"), a.ws.path("allowed/sw-link"));
    let swapper = {
        let (stop, flips) = (stop.clone(), flips.clone());
        std::thread::spawn(move || {
            let n = flip_until(&sw, &link, || stop.load(Ordering::Relaxed));
            flips.store(n, Ordering::Relaxed);
        })
    };
    let (ok, refused) = a.hammer_all();
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    a.check("after");
    let flips = flips.load(Ordering::Relaxed);
    eprintln!("thread swapper: {flips} flips, {ok} calls went through, {refused} refused");
    // The race really happened: some operations met the folder, some the link.
    assert!(
        ok > 0 && refused > 0,
        "ok={ok} refused={refused} flips={flips}"
    );
}

/// With no `/proc` at all (its own mount namespace, `/proc` unmounted),
/// nothing fails open: the same race, and keel still never reaches the
/// denied folder (before, the re-check after opening read `/proc/self/fd`
/// and silently passed when it could not).
#[test]
fn without_proc_nothing_fails_open() {
    let probe = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--fork",
            "sh",
            "-c",
            "umount -l /proc && ! test -e /proc/self",
        ])
        .output();
    // A missing program fails, saying how to install it; a machine that
    // may not unmount /proc (not root) skips, saying so — but not under
    // CI, which runs as root and must prove this.
    let probe = match probe {
        Ok(o) => o,
        Err(e) => {
            panic!("no `unshare` program ({e}): install util-linux (apt-get install util-linux)")
        }
    };
    if !probe.status.success() {
        let why = format!(
            "cannot unmount /proc in a private mount namespace here (needs root): {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let a = arena("./allowed", false);
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new("unshare");
        c.args([
            "--mount",
            "--fork",
            "sh",
            "-c",
            "umount -l /proc && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_keel"),
        ])
        .args(args)
        .current_dir(&a.ws.root)
        .env("KEEL_DATA_DIR", a.ws.data_dir())
        .env_remove("KEEL_LOG")
        .stdin(std::process::Stdio::null());
        let out = c.output().unwrap();
        Called {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (sw, link) = (a.ws.path("allowed/sw"), a.ws.path("allowed/sw-link"));
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || flip_until(&sw, &link, || stop.load(Ordering::Relaxed)))
    };
    let (ok, refused) = a.hammer_all_via(run);
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    a.check("after");
    assert!(ok > 0 && refused > 0, "ok={ok} refused={refused}");
}

/// The swapper process: runs only when the parent test starts it.
#[test]
fn swapper_process_entry() {
    let (Ok(sw), Ok(link), Ok(stop)) = (
        std::env::var("KEEL_TEST_SWAP"),
        std::env::var("KEEL_TEST_SWAP_LINK"),
        std::env::var("KEEL_TEST_SWAP_STOP"),
    ) else {
        return;
    };
    let stop = PathBuf::from(stop);
    let mut i = 0u64;
    let n = flip_until(Path::new(&sw), Path::new(&link), || {
        // Look at the stop file every 64 flips: the loop stays tight.
        i += 1;
        i.is_multiple_of(64) && stop.exists()
    });
    println!("flips={n}");
}

/// The root the policy allows is itself the entry being swapped, and the
/// link leads out of the workspace: the handle on the root must be opened
/// without following links too.
#[test]
fn a_swapper_process_never_gets_keel_outside_the_workspace() {
    let a = arena("./allowed/sw", true);
    let stop = a.ws.path("stop-swapping");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "swapper_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KEEL_TEST_SWAP", a.ws.path("allowed/sw"))
        .env("KEEL_TEST_SWAP_LINK", a.ws.path("allowed/sw-link"))
        .env("KEEL_TEST_SWAP_STOP", &stop)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, refused) = a.hammer_all();
    std::fs::write(&stop, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    a.check("after");
    let text = String::from_utf8_lossy(&out.stdout);
    let flips = text
        .lines()
        .find_map(|l| l.split("flips=").nth(1))
        .unwrap_or("?");
    eprintln!("process swapper: {flips} flips, {ok} calls went through, {refused} refused");
    assert!(
        ok > 0 && refused > 0,
        "ok={ok} refused={refused} flips={flips}"
    );
}

// ---------------------------------------------------------------------------
// Special files

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// `keel call`, killed after two minutes: a call that blocks on a FIFO is
/// the bug, and the bound keeps a regression from hanging the suite.
fn call_bounded(ws: &Ws, tool: &str, args: serde_json::Value) -> Called {
    let mut child = ws
        .keel()
        .args(["call", tool, &args.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`keel call {tool}` blocked on a special file");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Called {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn probe_ws() -> Ws {
    Ws::new()
        .skill(
            "h",
            &(manifest()
                + "\n[[tools]]\nname = \"read\"\ndescription = \"r\"\n\n[[tools]]\nname = \"write\"\ndescription = \"w\"\n\n[[tools]]\nname = \"append\"\ndescription = \"a\"\n"),
            &[(
                "main.luau",
                &LUAU_HAMMER.replace(
                    "return M\n",
                    "function M.read(a) return keel.fs.read(a.path) end\n\
                     function M.write(a) keel.fs.write(a.path, \"x\") return true end\n\
                     function M.append(a) keel.fs.append(a.path, \"x\") return true end\n\
                     return M\n",
                ),
            )],
        )
        .policy("[limits]\ntimeout_ms = 5000\n\n[policy]\nallow = [\"fs.read:.\", \"fs.write:.\"]\n")
}

/// Today `fs.read` of a FIFO blocked past the call's deadline. Now the
/// open never waits and the FIFO is refused by what it is. The calls run in
/// the real binary with a 5 s deadline; a blocking open would fail with a
/// deadline error instead of the message asserted here.
#[test]
fn a_fifo_is_refused_at_once_for_read_write_and_append() {
    let ws = probe_ws();
    mkfifo(&ws.path("pipe"));
    for op in ["read", "write", "append"] {
        let c = call_bounded(&ws, &format!("h.{op}"), json!({"path": "./pipe"}));
        let e = c.err();
        assert!(
            e.contains("FIFO") && e.contains("regular files"),
            "{op}: {e}"
        );
    }
    // Also with a reader on the other end (so a non-blocking open for
    // writing succeeds): still refused, and the reader gets nothing.
    let mut reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(ws.path("pipe"))
            .unwrap()
    };
    for op in ["write", "append"] {
        let c = call_bounded(&ws, &format!("h.{op}"), json!({"path": "./pipe"}));
        assert!(c.err().contains("FIFO"), "{op}: {}", c.stderr);
    }
    let mut got = [0u8; 16];
    // keel's process has exited, so no writer can linger: EOF, never data
    // (and not WouldBlock, which would mean a writer is still open).
    let n = std::io::Read::read(&mut reader, &mut got).expect("EOF, not WouldBlock");
    assert_eq!(n, 0, "the FIFO received {:?}", &got[..n]);
}

/// A device or a socket is refused the same way (and `/dev/zero` is never
/// read until the size limit).
#[test]
fn devices_and_sockets_are_refused() {
    let ws = probe_ws();
    std::os::unix::fs::symlink("/dev/zero", ws.path("zero")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(ws.path("sock")).unwrap();
    // /dev/zero through a link: the link resolves outside the granted
    // folder, so the gate refuses it.
    let c = ws.call("h.read", json!({"path": "./zero"}));
    assert!(c.err().contains("fs.read"), "{}", c.stderr);
    // Granted: still refused for what it is.
    let ws2 = Ws::new()
        .skill(
            "h",
            &(manifest().replace("\"fs.read\" = [\".\"]", "\"fs.read\" = [\".\", \"/dev/zero\"]")
                + "\n[[tools]]\nname = \"read\"\ndescription = \"r\"\n"),
            &[(
                "main.luau",
                "local M = {}\nfunction M.hammer() end\nfunction M.read(a) return keel.fs.read(a.path) end\nreturn M\n",
            )],
        )
        .policy("[policy]\nallow = [\"fs.read:.\", \"fs.read:/dev/zero\"]\n");
    let c = call_bounded(&ws2, "h.read", json!({"path": "/dev/zero"}));
    let e = c.err();
    assert!(e.contains("character device"), "{e}");
    for op in ["read", "write"] {
        let c = call_bounded(&ws, &format!("h.{op}"), json!({"path": "./sock"}));
        let e = c.err();
        assert!(
            e.contains("it is a FIFO or socket") && e.contains("regular files and folders"),
            "{op}: {e}"
        );
    }
}

/// A hard link is a second name for a file that the check never saw (here,
/// one in a folder the skill may not write): keel writes neither through
/// it nor truncates it.
#[test]
fn a_file_with_several_hard_links_is_not_written() {
    let ws = probe_ws();
    ws.write("locked/secret.txt", "LOCKED");
    std::fs::create_dir_all(ws.path("notes")).unwrap();
    std::fs::hard_link(ws.path("locked/secret.txt"), ws.path("notes/h.txt")).unwrap();
    for op in ["write", "append"] {
        let c = call_bounded(&ws, &format!("h.{op}"), json!({"path": "./notes/h.txt"}));
        let e = c.err();
        assert!(
            e.contains("hard links") && e.contains("fs.write"),
            "{op}: {e}"
        );
        assert_eq!(
            std::fs::read_to_string(ws.path("locked/secret.txt")).unwrap(),
            "LOCKED",
            "{op} changed the file behind the hard link"
        );
    }
    // A file with one name is written as usual.
    ws.write("notes/one.txt", "old");
    call_bounded(&ws, "h.write", json!({"path": "./notes/one.txt"})).ok();
    assert_eq!(
        std::fs::read_to_string(ws.path("notes/one.txt")).unwrap(),
        "x"
    );
}
