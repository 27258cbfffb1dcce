//! Which participant addresses dtx may call (`--participant-allow`, issue 12). Pure: the engine
//! resolves names and asks [`Policy::check`] about every address it would connect to.
//!
//! - Always refused: link-local and cloud metadata addresses (`169.254.0.0/16`, `fe80::/10`,
//!   `fd00:ec2::254`), the unspecified addresses, and dtx's own listeners.
//! - Without an allowlist, everything else is allowed. With one, an address is allowed when a
//!   rule matches: an IP or CIDR range containing it, or a host name (exact, or `*.suffix`)
//!   equal to the name it was resolved from; a rule with a port matches that port only.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// An IP range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix`; bits below the prefix are ignored.
    pub fn new(net: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let max = if net.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max}"));
        }
        Ok(Cidr { net: canonical(net), prefix })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:169.254.169.254`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// What one allowlist entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Net(Cidr),
    /// Lower-case host name.
    Host(String),
    /// `*.suffix`: any name ending in `.suffix` (lower-case, without the `*`).
    Suffix(String),
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    target: Target,
    port: Option<u16>,
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule, String> {
        let bad = |why: &str| Err(format!("'{entry}': {why}"));
        let (host, port) = split_port(entry).map_err(|why| format!("'{entry}': {why}"))?;
        if host.is_empty() {
            return bad("empty host");
        }
        let target = if let Some((ip, prefix)) = host.split_once('/') {
            let ip: IpAddr = match ip.parse() {
                Ok(ip) => ip,
                Err(_) => return bad("not an IP range (expected e.g. 10.0.0.0/8)"),
            };
            let Ok(prefix) = prefix.parse::<u8>() else {
                return bad("not a prefix length");
            };
            Target::Net(Cidr::new(ip, prefix).map_err(|e| format!("'{entry}': {e}"))?)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            Target::Net(Cidr::new(ip, prefix)?)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !is_hostname(suffix) {
                return bad("not a host name");
            }
            Target::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
        } else {
            if !is_hostname(host) {
                return bad("not a host name, IP address or CIDR range");
            }
            Target::Host(host.to_ascii_lowercase())
        };
        Ok(Rule { target, port })
    }

    fn matches(&self, name: Option<&str>, addr: SocketAddr) -> bool {
        // Port 0: the port is not known here (a DNS resolver sees names only); the caller checks
        // the URL's port on its own.
        if self.port.is_some_and(|p| addr.port() != 0 && p != addr.port()) {
            return false;
        }
        match &self.target {
            Target::Net(c) => c.contains(addr.ip()),
            Target::Host(h) => name.is_some_and(|n| n.trim_end_matches('.').eq_ignore_ascii_case(h)),
            Target::Suffix(s) => name.is_some_and(|n| {
                let n = n.trim_end_matches('.');
                n.len() > s.len() && n[n.len() - s.len()..].eq_ignore_ascii_case(s)
            }),
        }
    }
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, `v6`, `cidr`, `cidr:port`, `[v6cidr]:port`.
fn split_port(entry: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| p.parse::<u16>().map(Some).map_err(|_| format!("'{p}' is not a port"));
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']'")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, port(p)?)),
            None if after.is_empty() => Ok((host, None)),
            None => Err("unexpected text after ']'".into()),
        };
    }
    // More than one ':' without brackets: a bare IPv6 address (or range), no port.
    if entry.matches(':').count() > 1 {
        return Ok((entry, None));
    }
    match entry.rsplit_once(':') {
        Some((h, p)) => Ok((h, port(p)?)),
        None => Ok((entry, None)),
    }
}

/// `--participant-allow`: empty means "anything not denied".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    /// Parses a comma- (or white-space-) separated list; empty text is no allowlist.
    pub fn parse(text: &str) -> Result<AllowList, String> {
        let rules = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .map(Rule::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowList { rules })
    }

    /// Whether no allowlist is set.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.rules.len()
    }
}

/// Always refused: link-local (which holds the cloud metadata endpoint 169.254.169.254) and
/// AWS's IPv6 metadata address.
fn always_denied(ip: IpAddr) -> bool {
    const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match canonical(ip) {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == METADATA_V6 || v6.is_unspecified(),
    }
}

/// The policy the engine applies to every participant address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow: AllowList,
    /// dtx's own listeners: an address listening on all interfaces stands for any local one.
    own: Vec<SocketAddr>,
}

impl Policy {
    /// A policy with `allow` (empty: anything not denied).
    pub fn new(allow: AllowList) -> Policy {
        Policy { allow, own: Vec::new() }
    }

    /// Also refuse dtx's own listener at `addr` (calls to itself would loop).
    pub fn deny_own(&mut self, addr: SocketAddr) {
        self.own.push(addr);
    }

    /// Whether the address `addr`, reached through the host name `name` (None: the URL had an
    /// IP address), may be called; the error says why not. Port 0 stands for "any port": rule
    /// ports and the own-listener rule are then not applied.
    pub fn check(&self, name: Option<&str>, addr: SocketAddr) -> Result<(), String> {
        let ip = canonical(addr.ip());
        if always_denied(ip) {
            return Err(format!("{addr} is a link-local, metadata or unspecified address"));
        }
        if self.own.iter().any(|o| o.port() == addr.port() && is_self(o.ip(), ip)) {
            return Err(format!("{addr} is this dtx's own listener"));
        }
        if self.allow.is_empty() || self.allow.rules.iter().any(|r| r.matches(name, addr)) {
            return Ok(());
        }
        Err(match name {
            Some(n) => format!("{n} ({addr}) is not in --participant-allow"),
            None => format!("{addr} is not in --participant-allow"),
        })
    }
}

/// Whether `ip` reaches a listener bound to `own` on this machine (as far as a pure function
/// can tell: the same address, or loopback when it listens on all interfaces or on loopback).
fn is_self(own: IpAddr, ip: IpAddr) -> bool {
    let own = canonical(own);
    own == ip || ((own.is_unspecified() || own.is_loopback()) && ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn link_local_metadata_and_own_listeners_are_always_refused() {
        let mut p = Policy::new(AllowList::parse("0.0.0.0/0, ::/0").unwrap());
        p.deny_own(sa("0.0.0.0:36789"));
        for a in ["169.254.169.254:80", "[fe80::1]:80", "[fd00:ec2::254]:80", "[::ffff:169.254.169.254]:80"] {
            assert!(p.check(None, sa(a)).unwrap_err().contains("link-local"), "{a}");
        }
        assert!(p.check(None, sa("0.0.0.0:80")).is_err());
        assert!(p.check(None, sa("127.0.0.1:36789")).unwrap_err().contains("own listener"));
        assert!(p.check(None, sa("127.0.0.1:36788")).is_ok());
        assert!(p.check(Some("svc"), sa("10.1.2.3:443")).is_ok());
        let open = Policy::default();
        assert!(open.check(Some("x"), sa("10.0.0.1:1")).is_ok() && open.check(None, sa("[::1]:1")).is_ok());
        assert!(open.check(Some("metadata.google.internal"), sa("169.254.169.254:80")).is_err());
    }

    #[test]
    fn rules_match_hosts_ranges_and_ports() {
        let p = Policy::new(
            AllowList::parse("svc.internal:8080, *.example.com, 10.0.0.0/8, [::1]:9000 192.168.1.5").unwrap(),
        );
        assert!(p.check(Some("SVC.internal"), sa("10.9.9.9:8080")).is_ok());
        assert!(p.check(Some("svc.internal"), sa("172.16.0.1:8080")).is_ok(), "the name matches");
        assert!(p.check(Some("svc.internal"), sa("172.16.0.1:8081")).is_err(), "not that port");
        assert!(p.check(Some("a.example.com"), sa("172.16.0.1:1")).is_ok());
        assert!(p.check(Some("example.com"), sa("172.16.0.1:1")).is_err(), "the suffix needs a label");
        assert!(p.check(Some("badexample.com"), sa("172.16.0.1:1")).is_err());
        assert!(p.check(None, sa("10.255.0.1:1")).is_ok());
        assert!(p.check(None, sa("11.0.0.1:1")).unwrap_err().contains("not in --participant-allow"));
        assert!(p.check(None, sa("[::1]:9000")).is_ok() && p.check(None, sa("[::1]:9001")).is_err());
        assert!(p.check(None, sa("192.168.1.5:7")).is_ok() && p.check(None, sa("192.168.1.6:7")).is_err());
        assert!(p.check(None, sa("[::ffff:10.0.0.1]:1")).is_ok(), "v4-mapped is v4");
        assert!(p.check(Some("svc.internal"), sa("172.16.0.1:0")).is_ok(), "port unknown");
        assert!(p.check(Some("other"), sa("172.16.0.1:0")).is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["10.0.0.0/33", "h:port", "[::1", "bad!host", "1.2.3.4/x", ":80", "[::1]x"] {
            let e = AllowList::parse(bad).unwrap_err();
            assert!(e.contains(bad) || e.contains("port"), "{bad}: {e}");
        }
        assert!(AllowList::parse("").unwrap().is_empty());
        assert_eq!(AllowList::parse("a, b,c").unwrap().len(), 3);
        assert!(AllowList::parse("fe80::/10").is_ok());
    }
}
