//! Host rules that decide which network targets an untrusted skill may reach.
//!
//! A skill is lent HTTP access only for hosts the operator listed. Listing a
//! *name* is not enough to be safe: the classic server-side request forgery
//! (SSRF) bypasses all aim at making an innocent-looking target land on an
//! address the operator never meant to expose (loopback admin ports, cloud
//! metadata at 169.254.169.254, the private network). This module defeats them
//! by deciding in two steps:
//!
//! 1. [`rule_matches_name`]: some rule must name the target as written (host
//!    name or IP literal, plus port).
//! 2. [`check_addresses`]: every address the name resolved to must be public,
//!    unless a rule names that *address* (IP literal or CIDR). A name rule never
//!    vouches for a non-public address, because whoever controls the name's DNS
//!    (not the operator) decides where it points; that is what DNS rebinding and
//!    names such as `localtest.me` (which resolves to 127.0.0.1) exploit.
//!
//! The same rule holds for the operator's side: [`rule_grants`] is the
//! matcher for everything that *grants* (declarations, allow and ask rules,
//! grants), and it covers a non-public address only when the rule names it
//! by IP or CIDR, so the common policy `net.http:*` does not open loopback
//! or the metadata service to a skill that merely declares them. Deny rules
//! use [`rule_matches_name`], so `deny net.http:*` denies those too. CIDR
//! ranges are [`ipnet`] networks.
//!
//! Alternative spellings of addresses are normalised before any comparison, so
//! `http://2130706433/`, `http://0x7f.1/`, `http://0177.0.0.1/`,
//! `http://[::ffff:127.0.0.1]/` and `http://[::127.0.0.1]/` are all treated as
//! 127.0.0.1.
//!
//! Contract for callers: connect only to the [`SocketAddr`]s returned by
//! [`check_addresses`] (pin them in the HTTP client rather than letting it
//! resolve the name again, or a rebinding DNS server can answer differently the
//! second time), and run every redirect hop through [`parse_target`] and
//! [`check_addresses`] again.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::Url;

/// Why a URL, a host rule or a connection was refused.
///
/// Messages quote the offending input and say how to fix it. They never
/// contain the password (or user name) of a URL, since errors end up in logs
/// and in the skill's own hands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The URL could not be parsed. `url` is the input with any userinfo
    /// replaced by `***`.
    #[error("invalid URL {url:?}: {reason}; expected an absolute http:// or https:// URL")]
    InvalidUrl {
        /// The input, with anything that might be credentials masked.
        url: String,
        /// What the parser objected to.
        reason: String,
    },

    /// The URL uses a scheme other than `http` or `https`.
    #[error("URL scheme {scheme:?} is not allowed; only http:// and https:// URLs can be fetched")]
    UnsupportedScheme {
        /// The scheme as the URL parser normalised it (lowercase).
        scheme: String,
    },

    /// The URL carries a user name and/or password.
    #[error(
        "credentials in URLs are not allowed ({url:?}); put them in a header \
         such as Authorization instead"
    )]
    CredentialsInUrl {
        /// The URL with user name and password removed.
        url: String,
    },

    /// A host rule (scope string) could not be parsed.
    #[error(
        "invalid host rule {rule:?}: {reason}; expected host, host:port, *.domain, \
         *.domain:port, an IP address (10.0.0.5, 10.0.0.5:8080, [::1], [::1]:8080), \
         a CIDR range (10.0.0.0/8) or *"
    )]
    InvalidHostRule {
        /// The rule exactly as given.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No rule names the target's host and port.
    #[error(
        "host {host:?} port {port} is not allowed for this skill; if it should be, \
         add a rule such as net.http:{host}:{port}"
    )]
    HostNotAllowed {
        /// The target host as normalised (IPv6 in brackets).
        host: String,
        /// The target port (explicit or the scheme's default).
        port: u16,
    },

    /// The target name resolved to no address at all.
    #[error("host {host:?} did not resolve to any address; check the name")]
    NoAddresses {
        /// The target host.
        host: String,
    },

    /// The host is allowed, but every address it resolved to is non-public and
    /// no rule names any of them.
    #[error("{}", address_refusal(.host, .addresses))]
    AddressNotAllowed {
        /// The target host.
        host: String,
        /// The refused addresses (normalised, e.g. IPv4-mapped IPv6 as IPv4).
        addresses: Vec<IpAddr>,
    },
}

fn address_refusal(host: &str, addresses: &[IpAddr]) -> String {
    let list = addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let example = addresses
        .first()
        .map_or_else(|| "127.0.0.1".to_owned(), |ip| bracketed(*ip));
    format!(
        "host {host:?} resolves to non-public address(es) {list}, which a host-name rule \
         never grants (this blocks DNS rebinding and names that point at loopback, \
         private or link-local addresses); if reaching it is intended, name the address in \
         the skill's skill.toml [capabilities] (\"net.http\" = [\"{example}\"], optionally with \
         :port) and allow it in keel.toml [policy] (\"net.http:{example}\")"
    )
}

/// IPv6 addresses need brackets wherever a port may follow.
fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The host part of a target, normalised so that equal hosts compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lowercase, IDNA-encoded (punycode) as the `url` crate gives
    /// it, one trailing dot removed (`example.com.` is the same host as
    /// `example.com`, and rules must not be dodged by the absolute form).
    Name(String),
    /// An IP literal in canonical form (see [`canonical_ip`]).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => f.write_str(&bracketed(*ip)),
        }
    }
}

/// A parsed, normalised request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `"http"` or `"https"`.
    pub scheme: String,
    /// The normalised host.
    pub host: Host,
    /// The explicit port, or 80/443 for http/https.
    pub port: u16,
    /// The URL as parsed (credential-free, since those are refused). Its host
    /// may still be spelled differently from [`Target::host`], e.g. as an
    /// IPv4-mapped IPv6 literal; decisions must use `host`, not this.
    pub url: Url,
}

/// Map the IPv6 forms that carry an IPv4 address onto that IPv4 address.
///
/// - IPv4-mapped `::ffff:a.b.c.d`: the kernel sends these to the IPv4 address,
///   so `[::ffff:127.0.0.1]` is loopback and must be judged as such.
/// - IPv4-compatible `::a.b.c.d` (deprecated): treated as IPv4 too, so that a
///   stack which still honours them cannot be used to reach an IPv4 address
///   under an unrecognised spelling. `::` and `::1` are excluded: they are
///   IPv6's own unspecified and loopback addresses, not IPv4 0.0.0.0/0.0.0.1.
///
/// NAT64 (`64:ff9b::/96`) and 6to4 addresses are *not* rewritten: they are
/// genuinely different destinations (a translator or relay), and
/// [`is_public`] classifies them by their embedded IPv4 address instead.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    // A match guard, not a let chain: keel's rust-version (1.85) predates them.
    match u32::try_from(v6.to_bits()) {
        Ok(low) if low > 1 => IpAddr::V4(Ipv4Addr::from_bits(low)),
        _ => ip,
    }
}

/// Parse and normalise a URL a skill wants to fetch.
///
/// Only `http` and `https` are accepted: other schemes (`file:`, `ftp:`,
/// `javascript:`, `gopher:` ...) either reach local resources or speak
/// protocols the host rules were never meant to cover.
///
/// URLs with a user name or password are refused rather than silently
/// stripped: credentials in URLs leak into logs, history and `Referer`-like
/// places, and an `@` is also a classic way to make
/// `http://trusted.com@evil.net/` look like it goes to `trusted.com`.
///
/// IPv4 literals in decimal (`2130706433`), hex (`0x7f.1`), octal
/// (`0177.0.0.1`), shortened (`127.1`) or full-width forms are normalised by
/// the `url` crate's WHATWG host parser for special schemes; IPv4-mapped and
/// -compatible IPv6 literals are normalised here (see [`canonical_ip`]).
pub fn parse_target(url: &str) -> Result<Target, NetError> {
    let parsed = Url::parse(url).map_err(|e| NetError::InvalidUrl {
        url: redact_userinfo(url),
        reason: e.to_string(),
    })?;

    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(NetError::UnsupportedScheme {
            scheme: scheme.to_owned(),
        });
    }

    if !parsed.username().is_empty() || parsed.password().is_some() {
        let mut clean = parsed.clone();
        let shown = if clean.set_username("").is_ok() && clean.set_password(None).is_ok() {
            clean.to_string()
        } else {
            redact_userinfo(url)
        };
        return Err(NetError::CredentialsInUrl { url: shown });
    }

    let invalid = |reason: &str| NetError::InvalidUrl {
        url: parsed.to_string(),
        reason: reason.to_owned(),
    };

    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            // Empty labels never resolve, and they would let `.example.com`
            // style spellings be compared against rules in surprising ways.
            if name.is_empty() || name.split('.').any(str::is_empty) {
                return Err(invalid("the host name has an empty label"));
            }
            Host::Name(name.to_ascii_lowercase())
        }
        Some(url::Host::Ipv4(v4)) => Host::Ip(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Host::Ip(canonical_ip(IpAddr::V6(v6))),
        None => return Err(invalid("the URL has no host")),
    };

    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| invalid("the URL has no port and its scheme has no default"))?;

    Ok(Target {
        scheme: scheme.to_owned(),
        host,
        port,
        url: parsed,
    })
}

/// Mask everything between the scheme and the last `@`, for echoing input that
/// failed to parse. Over-masking is fine here; leaking a password is not, and
/// a password containing `/` or `#` can fool a precise authority parser.
fn redact_userinfo(input: &str) -> String {
    let Some(at) = input.rfind('@') else {
        return input.to_owned();
    };
    let start = input[..at].find(':').map_or(0, |colon| {
        let rest = &input[colon + 1..at];
        colon + 1 + (rest.len() - rest.trim_start_matches(['/', '\\']).len())
    });
    format!("{}***{}", &input[..start], &input[at..])
}

/// What part of the address space a [`HostRule`] covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: any host name or IP literal, but only ever public addresses.
    Any,
    /// A single host name, e.g. `api.example.com`.
    Exact(String),
    /// `*.example.com`: names strictly below `example.com` (stored without
    /// the `*.`). The apex `example.com` itself is not included, so that
    /// granting a zone's subdomains does not quietly grant its main site;
    /// add a second rule for the apex if wanted.
    Subdomain(String),
    /// A single IP address (canonical form).
    Ip(IpAddr),
    /// A CIDR range, host bits clear (`10.0.0.0/8`). A range inside
    /// `::ffff:0:0/96` is held as the IPv4 range it denotes, because
    /// targets are compared in canonical form.
    Cidr(IpNet),
}

/// One operator-granted network scope: a host pattern and an optional port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostRule {
    pattern: HostPattern,
    port: Option<u16>,
}

impl HostRule {
    /// Which hosts or addresses the rule covers.
    pub fn pattern(&self) -> &HostPattern {
        &self.pattern
    }

    /// The only port the rule allows, or `None` for any port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether the rule names this address itself (IP literal or CIDR), which
    /// is the only way a non-public address is granted.
    pub fn names_address(&self, ip: IpAddr, port: u16) -> bool {
        if !self.port_matches(port) {
            return false;
        }
        let ip = canonical_ip(ip);
        match &self.pattern {
            HostPattern::Ip(rule_ip) => *rule_ip == ip,
            HostPattern::Cidr(net) => net.contains(&ip),
            HostPattern::Any | HostPattern::Exact(_) | HostPattern::Subdomain(_) => false,
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Exact(name) => f.write_str(name)?,
            HostPattern::Subdomain(suffix) => write!(f, "*.{suffix}")?,
            HostPattern::Ip(ip) => f.write_str(&bracketed(*ip))?,
            HostPattern::Cidr(net) => write!(f, "{net}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

impl FromStr for HostRule {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_host_rule(s)
    }
}

/// Parse a host rule (the part of a `net.http:` scope after the prefix).
///
/// Accepted forms:
/// - `example.com`, `example.com:8080` — one name (lowercased, IDNA-encoded,
///   trailing dot removed);
/// - `*.example.com`, `*.example.com:8080` — any subdomain, *not* the apex;
/// - `10.0.0.5`, `10.0.0.5:8080`, `[::1]`, `[::1]:8080` — one address. IPv4
///   spellings are normalised as in URLs (`127.1` is 127.0.0.1), and
///   IPv4-mapped IPv6 becomes IPv4, so rules and targets compare alike.
///   Unbracketed IPv6 is refused because `::1:8080` is ambiguous;
/// - `10.0.0.0/8`, `fd00::/8` — a CIDR range, without a port. Host bits must
///   be clear (`10.0.0.1/8` is refused as probably a typo). Note that a range
///   names its addresses explicitly, so `0.0.0.0/0` grants private ones too;
/// - `*`, `*:443` — any host, but `*` never grants a non-public address.
pub fn parse_host_rule(s: &str) -> Result<HostRule, NetError> {
    let err = |reason: &str| invalid_rule(s, reason);

    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("it contains whitespace or control characters"));
    }
    if s.contains("://") {
        return Err(err(
            "it looks like a URL; give only the host, without scheme or path",
        ));
    }
    // '%' would be percent-decoded by the host parser, letting a rule look
    // different from what it grants; the others never belong in a host.
    if let Some(bad) = s
        .chars()
        .find(|c| matches!(c, '@' | '?' | '#' | '%' | '\\'))
    {
        return Err(err(&format!("it contains the character {bad:?}")));
    }

    if let Some((addr, prefix)) = s.split_once('/') {
        return parse_cidr(s, addr, prefix);
    }

    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| err("the IPv6 address has no closing ']'"))?;
        let v6 = Ipv6Addr::from_str(inside)
            .map_err(|_| err(&format!("{inside:?} is not an IPv6 address")))?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(parse_port(s, port)?),
                None => return Err(err("only \":port\" may follow the ']'")),
            },
        };
        return Ok(HostRule {
            pattern: HostPattern::Ip(canonical_ip(IpAddr::V6(v6))),
            port,
        });
    }

    if s.matches(':').count() > 1 {
        return Err(err(
            "IPv6 addresses must be in brackets, e.g. [::1] or [::1]:8080",
        ));
    }

    let (host, port) = match s.split_once(':') {
        Some((host, port)) => (host, Some(parse_port(s, port)?)),
        None => (s, None),
    };

    let pattern = if host == "*" {
        HostPattern::Any
    } else if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.is_empty() {
            return Err(err("a domain must follow \"*.\""));
        }
        if suffix.contains('*') {
            return Err(err("'*' may appear only once, as a leading \"*.\""));
        }
        match parse_rule_host(s, suffix)? {
            RuleHost::Name(name) => HostPattern::Subdomain(name),
            RuleHost::Ip(_) => {
                return Err(err(
                    "a wildcard needs a domain name after \"*.\", not an IP address",
                ));
            }
        }
    } else if host.contains('*') {
        return Err(err(
            "'*' is allowed only as the whole host or as a leading \"*.\"",
        ));
    } else {
        match parse_rule_host(s, host)? {
            RuleHost::Name(name) => HostPattern::Exact(name),
            RuleHost::Ip(ip) => HostPattern::Ip(ip),
        }
    };

    Ok(HostRule { pattern, port })
}

fn invalid_rule(rule: &str, reason: &str) -> NetError {
    NetError::InvalidHostRule {
        rule: rule.to_owned(),
        reason: reason.to_owned(),
    }
}

enum RuleHost {
    Name(String),
    Ip(IpAddr),
}

/// Run a rule's host through the same WHATWG parser URLs go through, so that
/// a rule and a URL spelling the same host always agree, then hold names to
/// DNS syntax (the URL parser is far more lenient, e.g. it accepts `a..b`).
fn parse_rule_host(rule: &str, host: &str) -> Result<RuleHost, NetError> {
    if host.is_empty() {
        return Err(invalid_rule(rule, "the host is empty"));
    }
    let parsed = url::Host::parse(&host.to_lowercase())
        .map_err(|e| invalid_rule(rule, &format!("{host:?} is not a valid host ({e})")))?;
    match parsed {
        url::Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(&name);
            validate_dns_name(name).map_err(|reason| invalid_rule(rule, &reason))?;
            Ok(RuleHost::Name(name.to_owned()))
        }
        url::Host::Ipv4(v4) => Ok(RuleHost::Ip(IpAddr::V4(v4))),
        url::Host::Ipv6(v6) => Ok(RuleHost::Ip(canonical_ip(IpAddr::V6(v6)))),
    }
}

fn validate_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host name is empty".to_owned());
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!(
                "{name:?} has an empty label (\"..\" or a leading dot)"
            ));
        }
        if label.len() > 63 {
            return Err(format!("the label {label:?} is longer than 63 characters"));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("{bad:?} is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

fn parse_port(rule: &str, port: &str) -> Result<u16, NetError> {
    // u16::from_str would also accept "+80"; a port is plain digits.
    let parsed = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse::<u16>().ok().filter(|p| *p != 0)
    } else {
        None
    };
    parsed.ok_or_else(|| {
        invalid_rule(
            rule,
            &format!("port {port:?} is not a number between 1 and 65535"),
        )
    })
}

fn parse_cidr(rule: &str, addr: &str, prefix: &str) -> Result<HostRule, NetError> {
    let err = |reason: &str| invalid_rule(rule, reason);
    if prefix.contains(':') {
        return Err(err("a CIDR range cannot have a port"));
    }
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip = IpAddr::from_str(addr).map_err(|_| {
        err(&format!(
            "{addr:?} is not an IP address; '/' is only for CIDR ranges like \
             10.0.0.0/8 (give a host without any path)"
        ))
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) {
        prefix.parse::<u8>().ok()
    } else {
        None
    };
    let net = prefix.and_then(|p| IpNet::new(ip, p).ok()).ok_or_else(|| {
        err(&format!(
            "the prefix length must be a number from 0 to {max}"
        ))
    })?;

    // Targets are compared in canonical form, so a range inside ::ffff:0:0/96
    // has to become the IPv4 range it denotes or it could never match.
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new_assert(v4, v6.prefix_len() - 96)),
            None => net,
        },
        other => other,
    };

    if net.trunc() != net {
        return Err(err(&format!(
            "{} has bits set beyond the /{} prefix; did you mean {}?",
            net.addr(),
            net.prefix_len(),
            net.trunc()
        )));
    }
    Ok(HostRule {
        pattern: HostPattern::Cidr(net),
        port: None,
    })
}

/// Whether `rule` names this host and port, as written in the URL.
///
/// - A name rule matches only that name; `*.d` matches names strictly below
///   `d` (label boundary respected, so not `badd` or `d.evil.net`).
/// - An IP or CIDR rule matches only IP-literal targets; it is not consulted
///   for names here (see [`check_addresses`] for resolved addresses).
/// - `*` matches every host, names and literals alike; it is
///   [`check_addresses`] that keeps it away from non-public addresses.
/// - A rule without a port matches any port.
pub fn rule_matches_name(rule: &HostRule, host: &Host, port: u16) -> bool {
    if !rule.port_matches(port) {
        return false;
    }
    match (&rule.pattern, host) {
        (HostPattern::Any, _) => true,
        (HostPattern::Exact(name), Host::Name(target)) => name == target,
        (HostPattern::Subdomain(suffix), Host::Name(target)) => target
            .strip_suffix(suffix.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|sub| !sub.is_empty() && !sub.split('.').any(str::is_empty)),
        (HostPattern::Ip(rule_ip), Host::Ip(ip)) => *rule_ip == canonical_ip(*ip),
        (HostPattern::Cidr(net), Host::Ip(ip)) => net.contains(&canonical_ip(*ip)),
        _ => false,
    }
}

/// Whether `rule` grants this target: [`rule_matches_name`], except that a
/// non-public IP target (loopback, link-local, private, shared, unique-local,
/// …) is granted only by a rule that names that address or its range
/// ([`HostRule::names_address`]). `*` and host-name patterns never cover one:
/// the operator's word for a non-public address has to be explicit.
///
/// This is the matcher for everything that *grants* (declarations, allow and
/// ask rules, operator grants); deny rules use [`rule_matches_name`], so
/// `deny net.http:*` still denies loopback.
pub fn rule_grants(rule: &HostRule, host: &Host, port: u16) -> bool {
    match host {
        Host::Ip(ip) if !is_public(*ip) => rule.names_address(*ip, port),
        _ => rule_matches_name(rule, host, port),
    }
}

/// What kind of non-public address `ip` is, for messages; `None` if public.
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    if is_public(ip) {
        return None;
    }
    Some(match canonical_ip(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V4(v4) if v4.is_private() => "private",
        IpAddr::V4(v4) if Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10).contains(&v4) => {
            "shared (carrier-grade NAT)"
        }
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 => "this-host",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V6(v6) if v6.is_unspecified() => "this-host",
        IpAddr::V6(v6) if v6.is_unicast_link_local() => "link-local",
        IpAddr::V6(v6) if v6.is_unique_local() => "unique-local",
        _ => "special-purpose",
    })
}

/// IPv4 ranges that are not reachable on (or not meant for) the public
/// internet.
const NON_PUBLIC_V4: &[Ipv4Net] = &[
    // "This network"; 0.0.0.0 reaches the local host on common stacks.
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    // Carrier-grade NAT: the provider's side of the network, not the internet.
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    // Link-local, including the cloud metadata service at 169.254.169.254.
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    // IETF protocol assignments (whole block, for simplicity and caution).
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24),
    // Deprecated 6to4 relay anycast; can tunnel to arbitrary destinations.
    Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    // Benchmarking; used inside some container networks.
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
    // Reserved, which also covers broadcast 255.255.255.255.
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 ranges carved out of global unicast (2000::/3) that are not public.
/// Everything outside 2000::/3 is non-public anyway (loopback, ULA fc00::/7,
/// link-local fe80::/10, multicast ff00::/8, discard 100::/64, SRv6 5f00::/16,
/// local-use NAT64 64:ff9b:1::/48, ...), except the IPv4-embedding forms,
/// which are handled before this table is consulted.
const NON_PUBLIC_V6: &[Ipv6Net] = &[
    // IETF protocol assignments (Teredo 2001::/32 is classified earlier);
    // includes benchmarking 2001:2::/48 and the ORCHID blocks.
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    // Documentation.
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    Ipv6Net::new_assert(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
];

/// Whether `ip` is an ordinary public internet address.
///
/// Hand-written because `IpAddr::is_global` is unstable. Errs on the side of
/// "not public": a false "not public" only means the operator has to name the
/// address in a rule, while a false "public" is an SSRF hole.
///
/// IPv6 addresses that embed an IPv4 address are judged by that address:
/// IPv4-mapped `::ffff:0:0/96` and -compatible `::/96` (see
/// [`canonical_ip`]), NAT64 `64:ff9b::/96` (the translator would connect to
/// the embedded address), 6to4 `2002::/16`, and Teredo `2001::/32` (both the
/// server and the obfuscated client address must be public).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !NON_PUBLIC_V4.iter().any(|net| net.contains(&ip))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = ip.to_bits();
    let in_range = |net: Ipv6Addr, prefix: u8| Ipv6Net::new_assert(net, prefix).contains(&ip);
    let v4_at = |shift: u32| Ipv4Addr::from_bits(((bits >> shift) & 0xffff_ffff) as u32);

    if in_range(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return is_public_v4(v4_at(0));
    }
    if in_range(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return is_public_v4(v4_at(80));
    }
    if in_range(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32) {
        let server = v4_at(64);
        let client = Ipv4Addr::from_bits(!v4_at(0).to_bits());
        return is_public_v4(server) && is_public_v4(client);
    }
    if !in_range(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return false;
    }
    !NON_PUBLIC_V6.iter().any(|net| net.contains(&ip))
}

/// Decide which of a target's addresses the connection may go to.
///
/// `rules` are the host rules granted to the skill; `resolved` the addresses
/// the target name resolved to. For an IP-literal target `resolved` is
/// ignored and the literal is the only candidate: it needs no resolution,
/// and trusting a caller-supplied list there could only introduce mistakes.
///
/// 1. Some rule must match the host and port ([`rule_matches_name`]), else
///    [`NetError::HostNotAllowed`].
/// 2. Each address (canonicalised, see [`canonical_ip`]) survives if it is
///    [`is_public`] or a rule names it by IP or CIDR with a matching port. A
///    name rule, or `*`, never vouches for a non-public address: the name's
///    DNS, not the operator, decides where it points.
/// 3. If none survive, [`NetError::AddressNotAllowed`] (or
///    [`NetError::NoAddresses`] when nothing resolved).
///
/// Returns the survivors with the target port, in input order, deduplicated.
/// The caller must connect only to these.
pub fn check_addresses(
    rules: &[HostRule],
    target: &Target,
    resolved: &[IpAddr],
) -> Result<Vec<SocketAddr>, NetError> {
    check_addresses_for(rules, target, resolved, false)
}

/// [`check_addresses`], where `trusted` says the rules are keel's own (a
/// built-in skill's manifest): their patterns then reach non-public
/// addresses too (`*` included), leaving the operator's policy, which must
/// still name each such address, as the one word that lets it through.
pub fn check_addresses_for(
    rules: &[HostRule],
    target: &Target,
    resolved: &[IpAddr],
    trusted: bool,
) -> Result<Vec<SocketAddr>, NetError> {
    let port = target.port;
    if !rules
        .iter()
        .any(|rule| rule_matches_name(rule, &target.host, port))
    {
        return Err(NetError::HostNotAllowed {
            host: target.host.to_string(),
            port,
        });
    }

    let literal;
    let candidates = match &target.host {
        Host::Ip(ip) => {
            literal = [*ip];
            &literal[..]
        }
        Host::Name(_) => resolved,
    };
    if candidates.is_empty() {
        return Err(NetError::NoAddresses {
            host: target.host.to_string(),
        });
    }

    let mut allowed: Vec<SocketAddr> = Vec::new();
    let mut refused: Vec<IpAddr> = Vec::new();
    for ip in candidates.iter().map(|ip| canonical_ip(*ip)) {
        let declared = |rule: &HostRule| {
            rule.names_address(ip, port)
                || (trusted && rule_matches_name(rule, &Host::Ip(ip), port))
        };
        if is_public(ip) || rules.iter().any(declared) {
            let addr = SocketAddr::new(ip, port);
            if !allowed.contains(&addr) {
                allowed.push(addr);
            }
        } else if !refused.contains(&ip) {
            refused.push(ip);
        }
    }

    if allowed.is_empty() {
        return Err(NetError::AddressNotAllowed {
            host: target.host.to_string(),
            addresses: refused,
        });
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rule(s: &str) -> HostRule {
        parse_host_rule(s).unwrap_or_else(|e| panic!("rule {s:?} should parse: {e}"))
    }

    fn rules(list: &[&str]) -> Vec<HostRule> {
        list.iter().map(|s| rule(s)).collect()
    }

    fn target(u: &str) -> Target {
        parse_target(u).unwrap_or_else(|e| panic!("target {u:?} should parse: {e}"))
    }

    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // ---- parse_target -------------------------------------------------

    #[test]
    fn non_http_schemes_are_refused() {
        for (u, scheme) in [
            ("file:///etc/passwd", "file"),
            ("ftp://example.com/x", "ftp"),
            ("javascript:alert(1)", "javascript"),
            ("gopher://127.0.0.1:25/", "gopher"),
            ("FILE:///etc/passwd", "file"),
        ] {
            match parse_target(u) {
                Err(NetError::UnsupportedScheme { scheme: got }) => assert_eq!(got, scheme),
                other => panic!("{u}: expected UnsupportedScheme, got {other:?}"),
            }
        }
        let msg = parse_target("ftp://x/").unwrap_err().to_string();
        assert!(msg.contains("\"ftp\"") && msg.contains("http"), "{msg}");
    }

    #[test]
    fn http_and_https_parse_with_default_ports() {
        let t = target("http://example.com/a?b#c");
        assert_eq!(t.scheme, "http");
        assert_eq!(t.host, name("example.com"));
        assert_eq!(t.port, 80);
        let t = target("https://example.com/");
        assert_eq!((t.scheme.as_str(), t.port), ("https", 443));
        assert_eq!(target("https://example.com:8443/").port, 8443);
        assert_eq!(target("http://example.com:80/").port, 80);
    }

    #[test]
    fn names_are_lowercased_idna_and_trailing_dot_stripped() {
        assert_eq!(target("http://EXAMPLE.Com./").host, name("example.com"));
        assert_eq!(target("http://bücher.de/").host, name("xn--bcher-kva.de"));
    }

    #[test]
    fn names_with_empty_labels_are_refused() {
        for u in [
            "http://./",
            "http://a..b/",
            "http://.example.com/",
            "http://example.com../",
        ] {
            assert!(
                matches!(parse_target(u), Err(NetError::InvalidUrl { .. })),
                "{u} should be refused"
            );
        }
    }

    #[test]
    fn credentials_are_refused_without_echoing_them() {
        for u in [
            "http://alice:s3cretpw@example.com/",
            "https://alice:s3cretpw@example.com:8443/x",
            "http:alice:s3cretpw@example.com/",
        ] {
            let err = parse_target(u).unwrap_err();
            assert!(
                matches!(err, NetError::CredentialsInUrl { .. }),
                "{u}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("credentials in URLs are not allowed"), "{msg}");
            assert!(msg.contains("header"), "{msg}");
            assert!(!msg.contains("s3cretpw"), "password leaked: {msg}");
            assert!(!format!("{err:?}").contains("s3cretpw"), "password leaked");
        }
        // A bare user name (often a token) is refused too.
        let err = parse_target("https://ghp_tokentoken@example.com/").unwrap_err();
        assert!(matches!(err, NetError::CredentialsInUrl { .. }));
        assert!(!err.to_string().contains("ghp_tokentoken"));
    }

    #[test]
    fn unparsable_urls_do_not_echo_passwords() {
        // The '/' in the password makes the parser see a bogus port.
        let err = parse_target("http://alice:pa/ssw0rd@example.com/").unwrap_err();
        assert!(matches!(err, NetError::InvalidUrl { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            !msg.contains("pa/ssw0rd") && !msg.contains("ssw0rd"),
            "{msg}"
        );
        assert!(msg.contains("***@example.com"), "{msg}");
        assert!(matches!(
            parse_target("not a url"),
            Err(NetError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn ipv4_spellings_normalise_to_dotted_quad() {
        for u in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://１２７.０.０.１/",
        ] {
            assert_eq!(target(u).host, Host::Ip(v4("127.0.0.1")), "{u}");
        }
        assert_eq!(
            target("http://0xa9.0xfe.0xa9.0xfe/").host,
            Host::Ip(v4("169.254.169.254"))
        );
    }

    #[test]
    fn ipv4_mapped_and_compatible_ipv6_normalise_to_ipv4() {
        for u in [
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[0:0:0:0:0:ffff:7f00:0001]:80/",
        ] {
            assert_eq!(target(u).host, Host::Ip(v4("127.0.0.1")), "{u}");
        }
        // IPv6's own loopback and unspecified stay IPv6.
        assert_eq!(target("http://[::1]/").host, Host::Ip(ip("::1")));
        assert_eq!(target("http://[::]/").host, Host::Ip(ip("::")));
        assert_eq!(canonical_ip(ip("::1")), ip("::1"));
        // NAT64 is a different destination, not rewritten.
        assert_eq!(canonical_ip(ip("64:ff9b::7f00:1")), ip("64:ff9b::7f00:1"));
    }

    // ---- parse_host_rule ----------------------------------------------

    #[test]
    fn rule_forms_parse() {
        let cases: &[(&str, HostPattern, Option<u16>)] = &[
            (
                "example.com",
                HostPattern::Exact("example.com".into()),
                None,
            ),
            (
                "Example.COM:8080",
                HostPattern::Exact("example.com".into()),
                Some(8080),
            ),
            (
                "example.com.",
                HostPattern::Exact("example.com".into()),
                None,
            ),
            (
                "bücher.de",
                HostPattern::Exact("xn--bcher-kva.de".into()),
                None,
            ),
            ("localhost", HostPattern::Exact("localhost".into()), None),
            (
                "*.example.com",
                HostPattern::Subdomain("example.com".into()),
                None,
            ),
            (
                "*.Example.com:8080",
                HostPattern::Subdomain("example.com".into()),
                Some(8080),
            ),
            ("10.0.0.5", HostPattern::Ip(v4("10.0.0.5")), None),
            ("10.0.0.5:8080", HostPattern::Ip(v4("10.0.0.5")), Some(8080)),
            ("127.1", HostPattern::Ip(v4("127.0.0.1")), None),
            ("[::1]", HostPattern::Ip(ip("::1")), None),
            ("[::1]:8080", HostPattern::Ip(ip("::1")), Some(8080)),
            (
                "[::ffff:127.0.0.1]:80",
                HostPattern::Ip(v4("127.0.0.1")),
                Some(80),
            ),
            (
                "10.0.0.0/8",
                HostPattern::Cidr("10.0.0.0/8".parse().unwrap()),
                None,
            ),
            (
                "fd00::/8",
                HostPattern::Cidr("fd00::/8".parse().unwrap()),
                None,
            ),
            (
                "[fd00::]/8",
                HostPattern::Cidr("fd00::/8".parse().unwrap()),
                None,
            ),
            (
                "::ffff:10.0.0.0/104",
                HostPattern::Cidr("10.0.0.0/8".parse().unwrap()),
                None,
            ),
            (
                "0.0.0.0/0",
                HostPattern::Cidr("0.0.0.0/0".parse().unwrap()),
                None,
            ),
            ("*", HostPattern::Any, None),
            ("*:443", HostPattern::Any, Some(443)),
        ];
        for (input, pattern, port) in cases {
            let r = rule(input);
            assert_eq!(r.pattern(), pattern, "{input}");
            assert_eq!(r.port(), *port, "{input}");
        }
    }

    #[test]
    fn rules_display_canonically_and_round_trip() {
        for (input, shown) in [
            ("Example.com:8080", "example.com:8080"),
            ("*.example.com", "*.example.com"),
            ("[::1]:8080", "[::1]:8080"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("*", "*"),
        ] {
            let r = rule(input);
            assert_eq!(r.to_string(), shown);
            assert_eq!(shown.parse::<HostRule>().unwrap(), r);
        }
    }

    #[test]
    fn garbage_rules_are_refused_with_the_input_quoted() {
        for input in [
            "",
            "exa mple.com",
            " example.com",
            "example.com\n",
            "*.",
            "*.:80",
            "a..b",
            ".example.com",
            "example.com..",
            "example.com:99999",
            "example.com:0",
            "example.com:",
            "example.com:+80",
            "example.com:http",
            "http://x",
            "example.com/path",
            "user@example.com",
            "exa%6dple.com",
            "*example.com",
            "a.*.example.com",
            "*.*.example.com",
            "**",
            "*.10.0.0.1",
            "::1",
            "::1:8080",
            "[::1",
            "[::1]8080",
            "[10.0.0.1]",
            "[::1]:99999",
            "10.0.0.0/8:80",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.1/8",
            "foo.123",
            "1.2.3.4.5",
            "-bad.example.com",
            "ex!ample.com",
            "a:b:c",
        ] {
            let err = match parse_host_rule(input) {
                Err(e) => e,
                Ok(r) => panic!("{input:?} should be refused, got {r:?}"),
            };
            assert!(
                matches!(&err, NetError::InvalidHostRule { rule, .. } if rule == input),
                "{input:?}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid host rule {input:?}: ")),
                "{msg}"
            );
            assert!(msg.contains("expected host, host:port"), "{msg}");
        }
        let msg = parse_host_rule("example.com:99999")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"99999\"") && msg.contains("65535"), "{msg}");
        let msg = parse_host_rule("10.0.0.1/8").unwrap_err().to_string();
        assert!(msg.contains("did you mean 10.0.0.0/8"), "{msg}");
        let msg = parse_host_rule("::1").unwrap_err().to_string();
        assert!(msg.contains("brackets"), "{msg}");
    }

    // ---- rule_matches_name --------------------------------------------

    #[test]
    fn wildcard_matches_subdomains_only() {
        let r = rule("*.example.com");
        assert!(rule_matches_name(&r, &name("a.example.com"), 443));
        assert!(rule_matches_name(&r, &name("a.b.example.com"), 80));
        assert!(!rule_matches_name(&r, &name("example.com"), 443));
        assert!(!rule_matches_name(&r, &name("badexample.com"), 443));
        assert!(!rule_matches_name(&r, &name("example.com.evil.net"), 443));
        assert!(!rule_matches_name(&r, &name("a.example.co"), 443));
        // Hosts built by hand (not via parse_target) with empty labels.
        assert!(!rule_matches_name(&r, &name(".example.com"), 443));
        assert!(!rule_matches_name(&r, &name("a..example.com"), 443));
        assert!(!rule_matches_name(&r, &Host::Ip(v4("93.184.216.34")), 443));
        // Through the URL parser, including the absolute (trailing dot) form.
        let t = target("https://A.Example.com./");
        assert!(rule_matches_name(&r, &t.host, t.port));
    }

    #[test]
    fn exact_name_rule_matches_only_that_name() {
        let r = rule("example.com");
        assert!(rule_matches_name(&r, &name("example.com"), 1234));
        assert!(!rule_matches_name(&r, &name("a.example.com"), 443));
        assert!(!rule_matches_name(&r, &name("example.com.evil.net"), 443));
        assert!(!rule_matches_name(&r, &Host::Ip(v4("93.184.216.34")), 443));
    }

    #[test]
    fn ports_must_match_when_the_rule_has_one() {
        let r = rule("example.com:8080");
        assert!(rule_matches_name(&r, &name("example.com"), 8080));
        assert!(!rule_matches_name(&r, &name("example.com"), 8081));
        assert!(!rule_matches_name(&r, &name("example.com"), 80));
        let r = rule("*.example.com:8443");
        assert!(rule_matches_name(&r, &name("a.example.com"), 8443));
        assert!(!rule_matches_name(&r, &name("a.example.com"), 443));
        let r = rule("*:443");
        assert!(rule_matches_name(&r, &name("anything.net"), 443));
        assert!(!rule_matches_name(&r, &name("anything.net"), 80));
        // Default ports come from the scheme.
        let t = target("https://example.com/");
        assert!(rule_matches_name(&rule("example.com:443"), &t.host, t.port));
        assert!(!rule_matches_name(&rule("example.com:80"), &t.host, t.port));
    }

    #[test]
    fn ip_and_cidr_rules_match_ip_literals_only() {
        let r = rule("10.0.0.0/8");
        assert!(rule_matches_name(&r, &Host::Ip(v4("10.1.2.3")), 80));
        assert!(!rule_matches_name(&r, &Host::Ip(v4("11.0.0.0")), 80));
        assert!(!rule_matches_name(&r, &Host::Ip(ip("::ffff:b00:0")), 80));
        assert!(!rule_matches_name(&r, &name("ten.example"), 80));
        let r = rule("127.0.0.1:8080");
        assert!(rule_matches_name(&r, &Host::Ip(v4("127.0.0.1")), 8080));
        // A mapped spelling handed in directly is still canonicalised.
        assert!(rule_matches_name(
            &r,
            &Host::Ip(ip("::ffff:127.0.0.1")),
            8080
        ));
        assert!(!rule_matches_name(&r, &name("localhost"), 8080));
        let r = rule("fd00::/8");
        assert!(rule_matches_name(&r, &Host::Ip(ip("fd12::1")), 80));
        assert!(!rule_matches_name(&r, &Host::Ip(ip("fe00::1")), 80));
        assert!(!rule_matches_name(&r, &Host::Ip(v4("10.0.0.1")), 80));
    }

    // ---- is_public ------------------------------------------------------

    #[test]
    fn ipv4_classification_boundaries() {
        let public = [
            "1.0.0.0",
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "191.255.255.255",
            "192.0.1.0",
            "192.0.1.255",
            "192.0.3.0",
            "192.88.98.255",
            "192.88.100.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
        ];
        let not_public = [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.0",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.0.0",
            "169.254.169.254",
            "169.254.255.255",
            "172.16.0.0",
            "172.31.255.255",
            "192.0.0.0",
            "192.0.0.255",
            "192.0.2.0",
            "192.0.2.255",
            "192.88.99.0",
            "192.88.99.255",
            "192.168.0.0",
            "192.168.255.255",
            "198.18.0.0",
            "198.19.255.255",
            "198.51.100.0",
            "198.51.100.255",
            "203.0.113.0",
            "203.0.113.255",
            "224.0.0.0",
            "239.255.255.255",
            "240.0.0.0",
            "255.255.255.254",
            "255.255.255.255",
        ];
        for a in public {
            assert!(is_public(v4(a)), "{a} should be public");
        }
        for a in not_public {
            assert!(!is_public(v4(a)), "{a} should not be public");
        }
    }

    #[test]
    fn ipv6_classification_boundaries() {
        let public = [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2000::",
            "2001:200::",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
            "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "3fff:1000::",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            // Teredo: server 8.8.8.8, client 1.1.1.1 (stored inverted).
            "2001:0:808:808::fefe:fefe",
        ];
        let not_public = [
            "::",
            "::1",
            "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "4000::",
            "2001::",
            "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:2::1",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            "3fff::",
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fc00::",
            "fc00::1",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::",
            "fe80::1",
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fec0::1",
            "ff00::",
            "ff02::1",
            "100::1",
            "5f00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::a00:1",
            "64:ff9b:1::808:808",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::",
            "2002:c0a8:101::1",
            // Teredo with a loopback client (127.0.0.1 inverted) or private server.
            "2001:0:808:808::80ff:fffe",
            "2001:0:a00:1::fefe:fefe",
        ];
        for a in public {
            assert!(is_public(ip(a)), "{a} should be public");
        }
        for a in not_public {
            assert!(!is_public(ip(a)), "{a} should not be public");
        }
    }

    // ---- check_addresses -------------------------------------------------

    #[test]
    fn allowed_name_resolving_to_public_is_ok() {
        let t = target("https://api.example.com/v1");
        let got = check_addresses(&rules(&["api.example.com"]), &t, &[v4("93.184.216.34")]);
        assert_eq!(got, Ok(vec![sock("93.184.216.34:443")]));
    }

    #[test]
    fn unlisted_host_is_refused() {
        let t = target("https://other.example.com:8443/");
        let err =
            check_addresses(&rules(&["api.example.com"]), &t, &[v4("93.184.216.34")]).unwrap_err();
        assert_eq!(
            err,
            NetError::HostNotAllowed {
                host: "other.example.com".into(),
                port: 8443
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"other.example.com\"") && msg.contains("8443"),
            "{msg}"
        );
        assert!(msg.contains("net.http:other.example.com:8443"), "{msg}");
        assert!(check_addresses(&[], &t, &[v4("93.184.216.34")]).is_err());
    }

    #[test]
    fn allowed_name_resolving_to_loopback_is_refused() {
        let t = target("http://localtest.me/");
        let err = check_addresses(&rules(&["localtest.me"]), &t, &[v4("127.0.0.1")]).unwrap_err();
        assert_eq!(
            err,
            NetError::AddressNotAllowed {
                host: "localtest.me".into(),
                addresses: vec![v4("127.0.0.1")]
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("non-public"), "{msg}");
        assert!(msg.contains("net.http:127.0.0.1"), "{msg}");
    }

    #[test]
    fn mixed_resolution_keeps_only_public_addresses() {
        let t = target("https://api.example.com/");
        let got = check_addresses(
            &rules(&["api.example.com"]),
            &t,
            &[
                v4("10.0.0.1"),
                v4("93.184.216.34"),
                v4("10.0.0.1"),
                v4("93.184.216.34"),
            ],
        );
        assert_eq!(got, Ok(vec![sock("93.184.216.34:443")]));
    }

    #[test]
    fn order_is_preserved_and_mapped_results_canonicalised() {
        let t = target("http://api.example.com/");
        let got = check_addresses(
            &rules(&["api.example.com"]),
            &t,
            &[
                ip("2606:4700:4700::1111"),
                ip("::ffff:127.0.0.1"),
                v4("1.1.1.1"),
                ip("::ffff:1.1.1.1"),
            ],
        );
        assert_eq!(
            got,
            Ok(vec![sock("[2606:4700:4700::1111]:80"), sock("1.1.1.1:80")])
        );
    }

    #[test]
    fn ip_rule_allows_its_address_and_port_only() {
        let r = rules(&["127.0.0.1:8080"]);
        let t = target("http://127.0.0.1:8080/");
        assert_eq!(
            check_addresses(&r, &t, &[v4("127.0.0.1")]),
            Ok(vec![sock("127.0.0.1:8080")])
        );
        let t = target("http://127.0.0.1:8081/");
        assert!(matches!(
            check_addresses(&r, &t, &[v4("127.0.0.1")]),
            Err(NetError::HostNotAllowed { port: 8081, .. })
        ));
        // Alternative spellings of the same address are the same target.
        let t = target("http://0x7f.1:8080/");
        assert_eq!(
            check_addresses(&r, &t, &[v4("127.0.0.1")]),
            Ok(vec![sock("127.0.0.1:8080")])
        );
    }

    #[test]
    fn name_rule_for_localhost_needs_an_address_rule_too() {
        let t = target("http://localhost:8080/");
        let resolved = [v4("127.0.0.1")];
        assert!(matches!(
            check_addresses(&rules(&["localhost:8080"]), &t, &resolved),
            Err(NetError::AddressNotAllowed { .. })
        ));
        assert_eq!(
            check_addresses(&rules(&["localhost:8080", "127.0.0.1:8080"]), &t, &resolved),
            Ok(vec![sock("127.0.0.1:8080")])
        );
        // The address rule's port must match as well.
        assert!(matches!(
            check_addresses(&rules(&["localhost:8080", "127.0.0.1:9090"]), &t, &resolved),
            Err(NetError::AddressNotAllowed { .. })
        ));
        // An address rule alone does not admit the name.
        assert!(matches!(
            check_addresses(&rules(&["127.0.0.1:8080"]), &t, &resolved),
            Err(NetError::HostNotAllowed { .. })
        ));
    }

    #[test]
    fn star_never_grants_metadata_or_private_addresses() {
        let star = rules(&["*"]);
        for u in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://0xa9fea9fe/",
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://10.0.0.1/",
            "http://0.0.0.0/",
        ] {
            let t = target(u);
            assert!(
                matches!(
                    check_addresses(&star, &t, &[]),
                    Err(NetError::AddressNotAllowed { .. })
                ),
                "{u} should be refused under *"
            );
        }
        let t = target("http://rebind.example/");
        assert!(matches!(
            check_addresses(&star, &t, &[v4("169.254.169.254")]),
            Err(NetError::AddressNotAllowed { .. })
        ));
        assert_eq!(
            check_addresses(&star, &t, &[v4("8.8.8.8")]),
            Ok(vec![sock("8.8.8.8:80")])
        );
        let t = target("https://8.8.8.8/");
        assert_eq!(
            check_addresses(&star, &t, &[]),
            Ok(vec![sock("8.8.8.8:443")])
        );
    }

    #[test]
    fn mapped_metadata_literal_is_refused_even_with_a_name_rule() {
        let t = target("http://[::ffff:169.254.169.254]/");
        assert_eq!(t.host, Host::Ip(v4("169.254.169.254")));
        let err = check_addresses(&rules(&["*", "metadata.internal"]), &t, &[]).unwrap_err();
        assert_eq!(
            err,
            NetError::AddressNotAllowed {
                host: "169.254.169.254".into(),
                addresses: vec![v4("169.254.169.254")]
            }
        );
    }

    #[test]
    fn cidr_rule_allows_private_literal_in_range() {
        let r = rules(&["10.0.0.0/8"]);
        let t = target("http://10.1.2.3:9000/");
        assert_eq!(
            check_addresses(&r, &t, &[v4("10.1.2.3")]),
            Ok(vec![sock("10.1.2.3:9000")])
        );
        let t = target("http://11.1.2.3/");
        assert!(matches!(
            check_addresses(&r, &t, &[v4("11.1.2.3")]),
            Err(NetError::HostNotAllowed { .. })
        ));
    }

    #[test]
    fn cidr_rule_lets_an_allowed_name_reach_its_private_address() {
        let t = target("http://internal.corp/");
        let got = check_addresses(
            &rules(&["internal.corp", "10.0.0.0/8"]),
            &t,
            &[v4("10.20.30.40"), v4("192.168.1.1")],
        );
        assert_eq!(got, Ok(vec![sock("10.20.30.40:80")]));
    }

    #[test]
    fn ip_literal_target_ignores_the_resolved_list() {
        // A caller passing a wrong list cannot widen what a literal reaches.
        let t = target("http://127.0.0.1:8080/");
        let r = rules(&["127.0.0.1:8080"]);
        assert_eq!(
            check_addresses(&r, &t, &[v4("8.8.8.8")]),
            Ok(vec![sock("127.0.0.1:8080")])
        );
    }

    #[test]
    fn empty_resolution_is_reported_as_such() {
        let t = target("http://api.example.com/");
        assert_eq!(
            check_addresses(&rules(&["api.example.com"]), &t, &[]),
            Err(NetError::NoAddresses {
                host: "api.example.com".into()
            })
        );
    }

    #[test]
    fn ipv6_address_rule_suggestion_uses_brackets() {
        let t = target("http://v6only.example/");
        let msg = check_addresses(&rules(&["v6only.example"]), &t, &[ip("fd00::1")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("net.http:[fd00::1]"), "{msg}");
    }
}
