//! Who may use the gateway: the token, the failed-attempt limiter, and the
//! `Host` and `Origin` checks.
//!
//! - **The token** comes from the environment variable `[gateway]
//!   token_env` names, or else from `gateway.token` in the data dir,
//!   created on first use (32 random bytes, hex) with mode 0600 and never
//!   followed through a symlink. A file others can read, or one owned by
//!   someone else, is refused rather than used. `keel token --rotate`
//!   replaces it by renaming a new file into place; a running gateway
//!   notices the new file (it checks the file's identity on each
//!   authenticated request), so the old token stops working at once.
//! - **Comparison** is in constant time for tokens of the same length.
//! - **Failed attempts** are counted per client address (per /64 for IPv6),
//!   loopback included — a local page or process guessing is exactly the
//!   attack — and an address over [`MAX_FAILURES`] in [`FAILURE_WINDOW`]
//!   gets 429 until the window ends, even with the right token.
//! - **`Host`** must name the address the connection came in on (or
//!   `localhost` on a loopback listener, or a name in `[gateway]
//!   allowed_hosts`): a page on a rebinding DNS name that resolves to
//!   127.0.0.1 sends its own name and is refused.
//! - **`Origin`**, when a browser sends one, must be the gateway's own
//!   origin or listed in `[gateway] allowed_origins`.
//! - A token in the query string is refused even when the header is right:
//!   URLs end up in logs, history and `Referer` headers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per address per window.
pub const MAX_FAILURES: u32 = 10;
/// The window failed attempts are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses the limiter remembers at once (the oldest windows go first).
const MAX_TRACKED: usize = 4096;

/// The token file in the data dir.
pub const TOKEN_FILE: &str = "gateway.token";

/// Errors reading or writing the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("cannot {what} {}: {error}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{} is not a regular file keel wrote (a symlink, or another kind of file); remove it and run `keel token --rotate`",
        .0.display()
    )]
    NotAFile(PathBuf),
    #[error(
        "{} can be read by other users (mode {mode:o}); run `chmod 600 {}` and `keel token --rotate` (the token may have been seen)",
        .path.display(), .path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{} is owned by another user (uid {owner}); remove it and run `keel token --rotate`", .path.display())]
    NotYours { path: PathBuf, owner: u32 },
    #[error("{} does not hold a token; run `keel token --rotate`", .0.display())]
    Malformed(PathBuf),
    #[error("the token comes from ${0}; change that variable to rotate it")]
    FromEnv(String),
}

/// Where the gateway's token comes from.
pub enum TokenSource {
    Env {
        var: String,
        token: String,
    },
    File {
        path: PathBuf,
        cached: Mutex<Option<(FileId, String)>>,
    },
}

/// What identifies one version of the token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
}

impl TokenSource {
    /// The token of `var` if it is set (and not empty), else the data dir's
    /// file, created now if missing.
    pub fn new(
        data_dir: &Path,
        var: &str,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, TokenError> {
        if let Some(token) = env.get(var).filter(|t| !t.is_empty()) {
            return Ok(Self::Env {
                var: var.to_string(),
                token: token.clone(),
            });
        }
        let path = data_dir.join(TOKEN_FILE);
        let (id, token) = read_or_create(&path)?;
        Ok(Self::File {
            path,
            cached: Mutex::new(Some((id, token))),
        })
    }

    /// Where the token lives, for the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Self::Env { var, .. } => format!("${var}"),
            Self::File { path, .. } => format!("{} (`keel token` prints it)", path.display()),
        }
    }

    /// Whether `given` is the current token. The file is looked at again
    /// when it changed (a rotation); a file that became unreadable or
    /// unsafe refuses everything until it is fixed.
    pub fn check(&self, given: &str) -> bool {
        match self {
            Self::Env { token, .. } => constant_time_eq(given.as_bytes(), token.as_bytes()),
            Self::File { path, cached } => {
                let mut c = cached.lock().unwrap_or_else(|p| p.into_inner());
                let now = file_id(path).ok();
                let fresh = matches!((&*c, now), (Some((id, _)), Some(n)) if *id == n);
                if !fresh {
                    *c = match read(path) {
                        Ok(pair) => Some(pair),
                        Err(e) => {
                            tracing::error!(error = %e, "the gateway's token file cannot be used; refusing every request until it is fixed");
                            None
                        }
                    };
                }
                c.as_ref()
                    .is_some_and(|(_, token)| constant_time_eq(given.as_bytes(), token.as_bytes()))
            }
        }
    }
}

/// Equal contents, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    Ok(FileId::of(&std::fs::symlink_metadata(path)?))
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// Reads the token file: a regular file of ours, not readable by others,
/// opened without following a symlink.
fn read(path: &Path) -> Result<(FileId, String), TokenError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let io = |what, error| TokenError::Io {
        what,
        path: path.to_path_buf(),
        error,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                TokenError::NotAFile(path.to_path_buf())
            } else {
                io("read", e)
            }
        })?;
    let m = f.metadata().map_err(|e| io("read", e))?;
    if !m.file_type().is_file() {
        return Err(TokenError::NotAFile(path.to_path_buf()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(TokenError::NotYours {
            path: path.to_path_buf(),
            owner: m.uid(),
        });
    }
    if m.mode() & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_path_buf(),
            mode: m.mode() & 0o7777,
        });
    }
    let mut text = String::new();
    f.by_ref()
        .take(1024)
        .read_to_string(&mut text)
        .map_err(|e| io("read", e))?;
    let token = text.trim();
    if token.len() < 32 || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(TokenError::Malformed(path.to_path_buf()));
    }
    Ok((FileId::of(&m), token.to_string()))
}

/// Reads the token file, creating it first if there is none.
pub fn read_or_create(path: &Path) -> Result<(FileId, String), TokenError> {
    match read(path) {
        Err(TokenError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            write_new(path, false)?;
            read(path)
        }
        other => other,
    }
}

/// Writes a new random token: into a fresh file (mode 0600, never through
/// a symlink) renamed into place, so a reader sees the old token or the
/// new one, whole. With `replace` false, an existing file (another keel
/// created it first) is kept.
pub fn write_new(path: &Path, replace: bool) -> Result<String, TokenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |what, error| TokenError::Io {
        what,
        path: path.to_path_buf(),
        error,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
    let token = random_hex(32).map_err(|e| io("make a random token for", e))?;
    let tmp = dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| io("write", e))?;
    let written = f
        .write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", e));
    }
    let placed = if replace {
        std::fs::rename(&tmp, path)
    } else {
        // Not over a file another keel just created.
        std::fs::hard_link(&tmp, path).or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })
    };
    let _ = std::fs::remove_file(&tmp);
    placed.map_err(|e| io("write", e))?;
    Ok(token)
}

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of buf.
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Counts failed attempts per client address.
#[derive(Default)]
pub struct Limiter {
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// An IPv6 client is counted by its /64: one host has many addresses.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Limiter {
    /// How long `ip` must still wait, if it is locked out.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (n, since) = seen.get(&key(ip))?;
        let end = *since + FAILURE_WINDOW;
        (*n >= MAX_FAILURES && now < end).then(|| end - now)
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&key(ip)) {
            seen.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if seen.len() >= MAX_TRACKED {
                // Still full of live windows: forget the oldest.
                if let Some(oldest) = seen.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k) {
                    seen.remove(&oldest);
                }
            }
        }
        let e = seen.entry(key(ip)).or_insert((0, now));
        if now.duration_since(e.1) >= FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

/// The host part of a `Host` value and its port, lowercased (`[::1]:80`
/// keeps its brackets).
fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[')
        && let Some((name, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (format!("[{name}]"), port);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(p) => (name.to_string(), Some(p)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Whether a request's `Host` names this gateway: the address the
/// connection came in on (`local`), `localhost` when that is a loopback
/// address, or one of `allowed` (a name, or a name with a port).
pub fn host_allowed(host: &str, local: SocketAddr, allowed: &[String]) -> bool {
    let (name, port) = split_host(host);
    if name.is_empty() {
        return false;
    }
    // A Host without a port means the scheme's default port.
    let port_ok = port == Some(local.port()) || (port.is_none() && local.port() == 80);
    let ip = match local.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if port_ok && (name == host_of(ip) || (ip.is_loopback() && name == "localhost")) {
        return true;
    }
    allowed.iter().any(|a| {
        let (aname, aport) = split_host(a);
        aname == name
            && match aport {
                Some(p) => port == Some(p),
                // A name alone: any port (the proxy's or the listener's).
                None => true,
            }
    })
}

/// Whether a browser's `Origin` may use the gateway: its own origin (the
/// scheme with the request's already checked `Host`; `https` too, for a
/// TLS proxy in front) or one of `allowed`.
pub fn origin_allowed(origin: &str, host: &str, allowed: &[String]) -> bool {
    let origin = origin.trim();
    let host = host.trim().to_ascii_lowercase();
    let own = |scheme: &str| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"));
    own("http") || own("https") || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

/// Query parameters that look like a token (or the token itself).
pub fn query_has_token(query: &str, check: impl Fn(&str) -> bool) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| {
        let k = k.to_ascii_lowercase();
        matches!(
            k.as_str(),
            "token" | "access_token" | "auth" | "bearer" | "api_key" | "apikey" | "key"
        ) || check(&v)
            || check(&k)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:5335".parse().unwrap()
    }

    #[test]
    fn host_must_name_the_listener() {
        assert!(host_allowed("127.0.0.1:5335", local(), &[]));
        assert!(host_allowed("LOCALHOST:5335", local(), &[]));
        // DNS rebinding: the attacker's name resolving to 127.0.0.1.
        assert!(!host_allowed("evil.example:5335", local(), &[]));
        assert!(!host_allowed("127.0.0.1:5336", local(), &[]));
        assert!(!host_allowed("127.0.0.1", local(), &[]));
        assert!(!host_allowed("", local(), &[]));
        assert!(!host_allowed("127.0.0.1:5335.evil", local(), &[]));
        assert!(host_allowed(
            "keel.example.com",
            local(),
            &["keel.example.com".into()]
        ));
        assert!(host_allowed(
            "keel.example.com:443",
            local(),
            &["keel.example.com".into()]
        ));
        assert!(!host_allowed(
            "keel.example.com:443",
            local(),
            &["keel.example.com:8443".into()]
        ));
        let v6: SocketAddr = "[::1]:5335".parse().unwrap();
        assert!(host_allowed("[::1]:5335", v6, &[]));
        assert!(host_allowed("localhost:5335", v6, &[]));
        // Not loopback: `localhost` is somebody else.
        let lan: SocketAddr = "192.168.1.5:5335".parse().unwrap();
        assert!(host_allowed("192.168.1.5:5335", lan, &[]));
        assert!(!host_allowed("localhost:5335", lan, &[]));
    }

    #[test]
    fn origin_must_be_own_or_listed() {
        assert!(origin_allowed(
            "http://127.0.0.1:5335",
            "127.0.0.1:5335",
            &[]
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            "127.0.0.1:5335",
            &[]
        ));
        assert!(!origin_allowed("null", "127.0.0.1:5335", &[]));
        assert!(!origin_allowed(
            "http://127.0.0.1:5335.evil.example",
            "127.0.0.1:5335",
            &[]
        ));
        assert!(origin_allowed(
            "https://ops.example.com",
            "127.0.0.1:5335",
            &["https://ops.example.com".into()]
        ));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn limiter_locks_after_the_failures_and_forgets_after_the_window() {
        let l = Limiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(l.locked(ip, t0).is_none());
            l.failed(ip, t0);
        }
        assert!(l.locked(ip, t0).is_some());
        assert!(l.locked("127.0.0.2".parse().unwrap(), t0).is_none());
        assert!(l.locked(ip, t0 + FAILURE_WINDOW).is_none());
        // IPv6 by /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            l.failed(a, t0);
        }
        assert!(l.locked(b, t0).is_some());
    }

    #[test]
    fn tokens_in_queries_are_seen() {
        let secret = "s3cr3t";
        let is = |v: &str| v == secret;
        assert!(query_has_token("token=x", is));
        assert!(query_has_token("a=1&ACCESS_TOKEN=x", is));
        assert!(query_has_token("q=s3cr3t", is));
        assert!(!query_has_token("after=5&limit=2", is));
    }

    #[test]
    fn the_token_file_is_private_and_refused_when_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let (_, t1) = read_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(t1.len(), 64);
        let (_, again) = read_or_create(&path).unwrap();
        assert_eq!(t1, again);
        let t2 = write_new(&path, true).unwrap();
        assert_ne!(t1, t2);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read(&path), Err(TokenError::TooOpen { .. })));
        // A symlink planted where the token goes is not followed.
        std::fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "x".repeat(64)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(read(&path), Err(TokenError::NotAFile(_))));
        assert!(matches!(
            read_or_create(&path),
            Err(TokenError::NotAFile(_))
        ));
    }
}
