//! Connection strings: `host:port,host:port/chroot`.

use crate::error::{Error, Result};
use crate::types::validate_path;

/// ZooKeeper's client port when a host names none.
pub const DEFAULT_PORT: u16 = 2181;

/// A parsed connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    /// The servers to try, as written (host, port).
    pub hosts: Vec<(String, u16)>,
    /// Prefix applied to every path, `None` for the root.
    pub chroot: Option<String>,
}

impl ConnectString {
    /// Parses `host[:port][,host[:port]...][/chroot]`; IPv6 hosts go in brackets.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (hosts_part, chroot) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let chroot = match chroot {
            None | Some("/") => None,
            Some(c) => {
                validate_path(c, false)
                    .map_err(|e| Error::Connect(format!("bad chroot in '{s}': {e}")))?;
                Some(c.to_string())
            }
        };
        let mut hosts = Vec::new();
        for part in hosts_part
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            hosts.push(parse_host(part)?);
        }
        if hosts.is_empty() {
            return Err(Error::Connect(format!("no server in '{s}'")));
        }
        Ok(ConnectString { hosts, chroot })
    }
}

fn parse_host(part: &str) -> Result<(String, u16)> {
    let bad = || Error::Connect(format!("bad server address '{part}'"));
    if let Some(rest) = part.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(bad)?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match part.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                return Err(bad());
            }
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        Some(_) => Ok((part.to_string(), DEFAULT_PORT)),
        None => Ok((part.to_string(), DEFAULT_PORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let c = ConnectString::parse("a:1,b:2/app/x").unwrap();
        assert_eq!(c.hosts, vec![("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(c.chroot.as_deref(), Some("/app/x"));
        let c = ConnectString::parse("127.0.0.1").unwrap();
        assert_eq!(c.hosts, vec![("127.0.0.1".into(), 2181)]);
        assert_eq!(c.chroot, None);
        let c = ConnectString::parse("[::1]:3000,[::1]/").unwrap();
        assert_eq!(c.hosts, vec![("::1".into(), 3000), ("::1".into(), 2181)]);
        assert!(ConnectString::parse("").is_err());
        assert!(ConnectString::parse("a:x").is_err());
        assert!(ConnectString::parse("a:1/bad/").is_err());
    }
}
