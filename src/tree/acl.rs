//! ACLs: validation and expansion (`PrepRequestProcessor.fixupACL`), permission checks
//! (`ZooKeeperServer.checkACL`), the `digest` and `ip` authentication providers, and a
//! reference-counted cache that lets many znodes share one ACL list
//! (`ReferenceCountedACLCache`).

use std::collections::HashMap;

use base64::Engine;
use rookery_protocol::{Acl, ErrorCode, Id};
use sha1::{Digest, Sha1};

/// The optional authentication providers registered beside `ip` and `digest` (which every
/// ZooKeeper has): `authProvider.N` naming SASLAuthenticationProvider or
/// X509AuthenticationProvider. Without one, ZooKeeper refuses its scheme in ACLs (InvalidACL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthProviders {
    /// The `sasl` scheme (SASLAuthenticationProvider).
    pub sasl: bool,
    /// The `x509` scheme (X509AuthenticationProvider: TLS client certificates).
    pub x509: bool,
}

impl AuthProviders {
    /// Every optional provider: ACL checks use it, since an entry of a scheme exists only if a
    /// server that had the provider accepted it.
    const ALL: AuthProviders = AuthProviders {
        sasl: true,
        x509: true,
    };
}

/// The authentication providers a default ZooKeeper registers: `ip` and `digest`
/// (`ProviderRegistry.initialize`), plus those of [`AuthProviders`] when configured.
/// Other schemes never match, and ACLs naming them are InvalidACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Ip,
    Digest,
    Sasl,
    X509,
}

impl Provider {
    /// The provider of a scheme, if registered.
    fn for_scheme(scheme: &str, registered: AuthProviders) -> Option<Provider> {
        match scheme {
            "ip" => Some(Provider::Ip),
            "digest" => Some(Provider::Digest),
            "sasl" if registered.sasl => Some(Provider::Sasl),
            "x509" if registered.x509 => Some(Provider::X509),
            _ => None,
        }
    }

    /// `AuthenticationProvider.isAuthenticated`: whether an id of this scheme names a user,
    /// so that the `auth` ACL scheme expands to it.
    fn is_authenticated(self) -> bool {
        matches!(self, Provider::Digest | Provider::Sasl | Provider::X509)
    }

    /// `AuthenticationProvider.isValid`.
    fn is_valid(self, id: &str) -> bool {
        match self {
            // `id.split(":").length == 2`, with Java dropping trailing empty strings.
            Provider::Digest => java_split(id, ':').len() == 2,
            Provider::Ip => ip_acl_is_valid(id),
            Provider::Sasl => kerberos_name_is_valid(id),
            // X509AuthenticationProvider.isValid: any DN.
            Provider::X509 => true,
        }
    }

    /// `AuthenticationProvider.matches(id, aclExpr)`.
    fn matches(self, id: &str, acl_expr: &str) -> bool {
        match self {
            Provider::Digest => id == acl_expr,
            Provider::Ip => ip_matches(id, acl_expr),
            // SASLAuthenticationProvider: the SASL user "super" matches every sasl ACL.
            Provider::Sasl => id == "super" || id == acl_expr,
            // The certificate's DN exactly (its super user gets `super` at handshake).
            Provider::X509 => id == acl_expr,
        }
    }
}

/// `new KerberosName(id)` does not throw: a name with an `@` must be
/// `primary[/instance]@REALM`, with no further `/` or `@`.
fn kerberos_name_is_valid(id: &str) -> bool {
    let Some((principal, realm)) = id.split_once('@') else {
        return true;
    };
    !realm.contains(['@', '/']) && principal.matches('/').count() <= 1
}

/// Java's `String.split(regex)` for a single literal character: trailing empty strings are
/// removed (and an input made only of separators yields nothing).
fn java_split(s: &str, sep: char) -> Vec<&str> {
    let mut parts: Vec<&str> = s.split(sep).collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
}

/// Java's `Integer.parseInt` for ASCII input: optional sign, then decimal digits.
fn java_parse_int(s: &str) -> Option<i32> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `IPAuthenticationProvider.v4addr2Bytes`: IPv4 only, like ZooKeeper 3.8/3.9.
fn ipv4_bytes(addr: &str) -> Option<[u8; 4]> {
    let parts: Vec<&str> = addr.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut out = [0u8; 4];
    for (slot, part) in out.iter_mut().zip(parts) {
        let v = java_parse_int(part)?;
        *slot = u8::try_from(v).ok()?;
    }
    Some(out)
}

/// `IPAuthenticationProvider.mask`: keeps the first `bits` bits.
fn mask(bytes: &mut [u8; 4], bits: u32) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if bits <= start {
            *b = 0;
        } else if bits < start + 8 {
            *b &= !(0xffu8 >> (bits - start));
        }
    }
}

/// Splits `addr/bits` like `aclExpr.split("/", 2)` and checks the prefix length.
fn parse_ip_acl(acl_expr: &str) -> Option<([u8; 4], u32)> {
    let (addr, bits) = match acl_expr.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (acl_expr, None),
    };
    let bytes = ipv4_bytes(addr)?;
    let bits = match bits {
        Some(bits) => u32::try_from(java_parse_int(bits)?)
            .ok()
            .filter(|b| *b <= 32)?,
        None => 32,
    };
    Some((bytes, bits))
}

fn ip_acl_is_valid(id: &str) -> bool {
    parse_ip_acl(id).is_some()
}

/// `IPAuthenticationProvider.matches`: `id` is the client's address, `acl_expr` an address
/// with an optional CIDR prefix length.
fn ip_matches(id: &str, acl_expr: &str) -> bool {
    let Some((mut acl, bits)) = parse_ip_acl(acl_expr) else {
        return false;
    };
    let Some(mut remote) = ipv4_bytes(id) else {
        return false;
    };
    mask(&mut acl, bits);
    mask(&mut remote, bits);
    acl == remote
}

/// `digest` ids: `user:base64(sha1("user:password"))`, as `addauth digest user:password`
/// authenticates (`DigestAuthenticationProvider.generateDigest`).
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or_default();
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

fn is_world_anyone(id: &Id) -> bool {
    id.scheme == "world" && id.id == "anyone"
}

/// `PrepRequestProcessor.fixupACL`: removes duplicates, refuses an empty list, expands
/// `auth` to the session's authenticated ids (InvalidACL if it has none), and checks that
/// every other id is well formed for its scheme.
pub(crate) fn fixup_acl(acls: &[Acl], auth: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
    fixup_acl_with(acls, auth, AuthProviders::ALL)
}

/// [`fixup_acl`] with the optional providers that are registered (without one, its scheme's
/// ACLs are InvalidACL and `auth` does not expand to its ids).
pub(crate) fn fixup_acl_with(
    acls: &[Acl],
    auth: &[Id],
    registered: AuthProviders,
) -> Result<Vec<Acl>, ErrorCode> {
    let mut unique: Vec<&Acl> = Vec::with_capacity(acls.len());
    for acl in acls {
        if !unique.contains(&acl) {
            unique.push(acl);
        }
    }
    if unique.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut out = Vec::with_capacity(unique.len());
    for acl in unique {
        if is_world_anyone(&acl.id) {
            out.push(acl.clone());
        } else if acl.id.scheme == "auth" {
            let mut expanded = false;
            for id in auth {
                if Provider::for_scheme(&id.scheme, registered)
                    .is_some_and(Provider::is_authenticated)
                {
                    expanded = true;
                    out.push(Acl {
                        perms: acl.perms,
                        id: id.clone(),
                    });
                }
            }
            if !expanded {
                return Err(ErrorCode::InvalidAcl);
            }
        } else {
            match Provider::for_scheme(&acl.id.scheme, registered) {
                Some(provider) if provider.is_valid(&acl.id.id) => out.push(acl.clone()),
                _ => return Err(ErrorCode::InvalidAcl),
            }
        }
    }
    Ok(out)
}

/// `ZooKeeperServer.checkACL`: an empty ACL allows everything, the `super` id bypasses every
/// check, otherwise some entry granting one of `perm`'s bits must match an id of the session.
pub(crate) fn check_acl(acl: &[Acl], perm: i32, auth: &[Id]) -> Result<(), ErrorCode> {
    if acl.is_empty() || auth.iter().any(|id| id.scheme == "super") {
        return Ok(());
    }
    for entry in acl {
        if entry.perms & perm == 0 {
            continue;
        }
        if is_world_anyone(&entry.id) {
            return Ok(());
        }
        if let Some(provider) = Provider::for_scheme(&entry.id.scheme, AuthProviders::ALL) {
            if auth
                .iter()
                .any(|id| id.scheme == entry.id.scheme && provider.matches(&id.id, &entry.id.id))
            {
                return Ok(());
            }
        }
    }
    Err(ErrorCode::NoAuth)
}

/// getACL without ADMIN permission hides digest hashes: Java's
/// `id.replaceAll(":.*", ":x")`, where `.` stops at line terminators.
pub(crate) fn mask_digest(id: &str) -> String {
    fn is_line_terminator(c: char) -> bool {
        matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
    }
    let mut out = String::with_capacity(id.len());
    let mut skipping = false;
    for c in id.chars() {
        if skipping {
            if is_line_terminator(c) {
                skipping = false;
                out.push(c);
            }
        } else if c == ':' {
            out.push_str(":x");
            skipping = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// One distinct ACL list and how many znodes use it.
#[derive(Debug, Clone)]
struct AclEntry {
    /// The list itself, exactly as stored on the znodes (after fixupACL).
    acl: Vec<Acl>,
    /// Number of znodes (and pending multi undo records) holding this entry's index.
    refs: u64,
    /// The list's canonical encoding, the key of `by_key`; kept to remove it on release.
    key: Vec<u8>,
}

/// `ReferenceCountedACLCache`: znodes store a `u32` index into this table instead of their
/// own copy of the list, so a million znodes sharing one ACL cost a million `u32`s.
#[derive(Debug, Clone, Default)]
pub(crate) struct AclCache {
    /// Index → entry; `None` marks a free slot (listed in `free`).
    entries: Vec<Option<AclEntry>>,
    /// Canonical encoding → index, to find an existing entry for a list.
    by_key: HashMap<Vec<u8>, u32>,
    /// Free indexes, reused before the table grows. Indexes never leak out of the tree
    /// (snapshots renumber them), so reuse order does not matter.
    free: Vec<u32>,
}

/// A byte encoding of an ACL list that is equal exactly when the lists are equal.
fn acl_key(acl: &[Acl]) -> Vec<u8> {
    let mut key = Vec::new();
    for entry in acl {
        key.extend_from_slice(&entry.perms.to_be_bytes());
        for s in [&entry.id.scheme, &entry.id.id] {
            key.extend_from_slice(&(s.len() as u64).to_be_bytes());
            key.extend_from_slice(s.as_bytes());
        }
    }
    key
}

impl AclCache {
    /// The index of `acl`, adding it if new; takes one reference. `None` only if the table
    /// is full (more than u32::MAX distinct lists).
    pub(crate) fn intern(&mut self, acl: &[Acl]) -> Option<u32> {
        let key = acl_key(acl);
        if let Some(&index) = self.by_key.get(&key) {
            if let Some(Some(entry)) = self.entries.get_mut(index as usize) {
                entry.refs += 1;
                return Some(index);
            }
        }
        let entry = AclEntry {
            acl: acl.to_vec(),
            refs: 1,
            key: key.clone(),
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = Some(entry);
                index
            }
            None => {
                let index = u32::try_from(self.entries.len()).ok()?;
                self.entries.push(Some(entry));
                index
            }
        };
        self.by_key.insert(key, index);
        Some(index)
    }

    /// Takes one more reference on an existing index.
    pub(crate) fn retain(&mut self, index: u32) {
        if let Some(Some(entry)) = self.entries.get_mut(index as usize) {
            entry.refs += 1;
        }
    }

    /// Drops one reference; the entry goes away with its last reference.
    pub(crate) fn release(&mut self, index: u32) {
        let Some(slot) = self.entries.get_mut(index as usize) else {
            return;
        };
        let Some(entry) = slot else {
            return;
        };
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 {
            if let Some(entry) = slot.take() {
                self.by_key.remove(&entry.key);
                self.free.push(index);
            }
        }
    }

    /// The list at `index`; empty for an unknown index (which the tree never holds).
    pub(crate) fn get(&self, index: u32) -> &[Acl] {
        match self.entries.get(index as usize) {
            Some(Some(entry)) => &entry.acl,
            _ => &[],
        }
    }

    /// Number of distinct lists (`aclCacheSize`).
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Reference count of `index`, for invariant checks.
    #[cfg(test)]
    pub(crate) fn refs(&self, index: u32) -> u64 {
        match self.entries.get(index as usize) {
            Some(Some(entry)) => entry.refs,
            _ => 0,
        }
    }

    /// Indexes in use, for invariant checks.
    #[cfg(test)]
    pub(crate) fn indexes(&self) -> Vec<u32> {
        (0..self.entries.len() as u32)
            .filter(|i| self.entries[*i as usize].is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rookery_protocol::perms;

    fn id(scheme: &str, id: &str) -> Id {
        Id {
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    fn acl(perms: i32, scheme: &str, i: &str) -> Acl {
        Acl {
            perms,
            id: id(scheme, i),
        }
    }

    #[test]
    fn digest_matches_zookeeper() {
        // Computed by ZooKeeper 3.8 (DigestAuthenticationProvider) for bob:pw.
        assert_eq!(digest_id("bob:pw"), "bob:ikIaKsbtGweaHnb/jKn7OHqbunM=");
        assert!(digest_id("nopassword").starts_with("nopassword:"));
        assert!(digest_id("a:b:c").starts_with("a:"));
    }

    #[test]
    fn digest_validity_follows_java_split() {
        let p = Provider::Digest;
        assert!(p.is_valid("a:b"));
        assert!(p.is_valid(":b"));
        assert!(p.is_valid("a:b:"));
        assert!(p.is_valid("a:b::"));
        assert!(!p.is_valid("a:"));
        assert!(!p.is_valid("a"));
        assert!(!p.is_valid(":"));
        assert!(!p.is_valid(""));
        assert!(!p.is_valid("a:b:c"));
    }

    #[test]
    fn ip_validity_and_cidr() {
        assert!(ip_acl_is_valid("127.0.0.1"));
        assert!(ip_acl_is_valid("10.0.0.0/8"));
        assert!(ip_acl_is_valid("10.0.0.0/0"));
        assert!(ip_acl_is_valid("10.0.0.0/32"));
        assert!(ip_acl_is_valid("+10.0.0.1"));
        assert!(!ip_acl_is_valid("10.0.0.0/33"));
        assert!(!ip_acl_is_valid("10.0.0.0/-1"));
        assert!(!ip_acl_is_valid("10.0.0.0/"));
        assert!(!ip_acl_is_valid("10.0.0"));
        assert!(!ip_acl_is_valid("10.0.0.256"));
        assert!(!ip_acl_is_valid("10.0.0.1."));
        assert!(!ip_acl_is_valid("::1"));
        assert!(!ip_acl_is_valid("host.example.com"));

        assert!(ip_matches("127.0.0.1", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.2", "127.0.0.1"));
        assert!(ip_matches("127.1.2.3", "127.0.0.0/8"));
        assert!(!ip_matches("128.1.2.3", "127.0.0.0/8"));
        assert!(ip_matches("10.0.15.1", "10.0.0.0/20"));
        assert!(!ip_matches("10.0.16.1", "10.0.0.0/20"));
        assert!(ip_matches("1.2.3.4", "9.9.9.9/0"));
        assert!(!ip_matches("::1", "127.0.0.1"));
    }

    #[test]
    fn check_acl_rules() {
        let world_read = vec![acl(perms::READ, "world", "anyone")];
        assert_eq!(check_acl(&world_read, perms::READ, &[]), Ok(()));
        assert_eq!(
            check_acl(&world_read, perms::WRITE, &[]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(check_acl(&[], perms::WRITE, &[]), Ok(()));
        assert_eq!(
            check_acl(&world_read, perms::WRITE, &[id("super", "")]),
            Ok(())
        );
        let digest = digest_id("bob:pw");
        let d = vec![acl(perms::ALL, "digest", &digest)];
        assert_eq!(
            check_acl(&d, perms::WRITE, &[id("digest", &digest)]),
            Ok(())
        );
        assert_eq!(
            check_acl(&d, perms::WRITE, &[id("digest", "bob:x")]),
            Err(ErrorCode::NoAuth)
        );
        let ip = vec![acl(perms::READ, "ip", "10.0.0.0/8")];
        assert_eq!(check_acl(&ip, perms::READ, &[id("ip", "10.1.2.3")]), Ok(()));
        assert_eq!(
            check_acl(&ip, perms::READ, &[id("ip", "11.1.2.3")]),
            Err(ErrorCode::NoAuth)
        );
        // READ|ADMIN: either bit is enough.
        assert_eq!(
            check_acl(&world_read, perms::READ | perms::ADMIN, &[]),
            Ok(())
        );
        // An unknown scheme never matches, even with an equal id.
        let x = vec![acl(perms::ALL, "krb5", "CN=a")];
        assert_eq!(
            check_acl(&x, perms::READ, &[id("krb5", "CN=a")]),
            Err(ErrorCode::NoAuth)
        );
    }

    #[test]
    fn fixup_rules() {
        let digest = digest_id("bob:pw");
        let auth = [
            id("ip", "127.0.0.1"),
            id("digest", &digest),
            id("super", ""),
        ];
        assert_eq!(fixup_acl(&[], &auth), Err(ErrorCode::InvalidAcl));
        assert_eq!(
            fixup_acl(&[acl(31, "auth", "")], &[id("ip", "127.0.0.1")]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&[acl(31, "auth", "whatever"), acl(3, "auth", "")], &auth),
            Ok(vec![acl(31, "digest", &digest), acl(3, "digest", &digest)])
        );
        assert_eq!(
            fixup_acl(
                &[acl(31, "world", "anyone"), acl(31, "world", "anyone")],
                &auth
            ),
            Ok(vec![acl(31, "world", "anyone")])
        );
        for bad in [
            acl(31, "world", "foo"),
            acl(31, "digest", "nohash"),
            acl(31, "ip", "1.2.3"),
            acl(31, "super", ""),
            acl(31, "sasl", "bob"),
            acl(31, "x509", "bob"),
            acl(31, "", ""),
        ] {
            assert_eq!(
                fixup_acl_with(std::slice::from_ref(&bad), &auth, AuthProviders::default()),
                Err(ErrorCode::InvalidAcl),
                "{bad:?}"
            );
        }
        assert!(fixup_acl(&[acl(31, "ip", "127.0.0.0/8")], &[]).is_ok());
    }

    const SASL: AuthProviders = AuthProviders {
        sasl: true,
        x509: false,
    };

    /// With X509AuthenticationProvider registered: any `x509:` DN is valid, `auth` expands to
    /// the certificate's id, and only the exact DN matches.
    #[test]
    fn x509_provider() {
        let x509 = AuthProviders {
            sasl: false,
            x509: true,
        };
        let alice = [id("ip", "127.0.0.1"), id("x509", "CN=alice,O=rookery")];
        assert_eq!(
            fixup_acl_with(&[acl(31, "auth", "")], &alice, x509),
            Ok(vec![acl(31, "x509", "CN=alice,O=rookery")])
        );
        assert!(fixup_acl_with(&[acl(1, "x509", "CN=bob,O=rookery")], &[], x509).is_ok());
        let only_alice = [acl(perms::READ, "x509", "CN=alice,O=rookery")];
        assert_eq!(check_acl(&only_alice, perms::READ, &alice), Ok(()));
        let bob = [id("x509", "CN=bob,O=rookery")];
        assert_eq!(
            check_acl(&only_alice, perms::READ, &bob),
            Err(ErrorCode::NoAuth)
        );
        // A DN is not a prefix match.
        let alice_too = [id("x509", "CN=alice,O=rookery,C=X")];
        assert_eq!(
            check_acl(&only_alice, perms::READ, &alice_too),
            Err(ErrorCode::NoAuth)
        );
    }

    /// With SASLAuthenticationProvider registered: `sasl:` ACLs are valid (KerberosName
    /// syntax), `auth` expands to sasl ids, and the SASL user "super" matches every sasl ACL.
    #[test]
    fn sasl_provider() {
        let bob = [id("ip", "127.0.0.1"), id("sasl", "bob")];
        assert_eq!(
            fixup_acl_with(&[acl(1, "sasl", "alice")], &bob, SASL),
            Ok(vec![acl(1, "sasl", "alice")])
        );
        for good in ["bob", "bob@EXAMPLE.COM", "zk/host@EXAMPLE.COM"] {
            assert!(
                fixup_acl_with(&[acl(1, "sasl", good)], &[], SASL).is_ok(),
                "{good}"
            );
        }
        for bad in ["a@b@c", "a/b/c@R", "a@R/x"] {
            assert_eq!(
                fixup_acl_with(&[acl(1, "sasl", bad)], &[], SASL),
                Err(ErrorCode::InvalidAcl),
                "{bad}"
            );
        }
        assert_eq!(
            fixup_acl_with(&[acl(31, "auth", "")], &bob, SASL),
            Ok(vec![acl(31, "sasl", "bob")])
        );
        // Without the provider, a sasl id is not one `auth` can expand to.
        assert_eq!(
            fixup_acl_with(&[acl(31, "auth", "")], &bob, AuthProviders::default()),
            Err(ErrorCode::InvalidAcl)
        );
        let only_bob = [acl(perms::READ, "sasl", "bob")];
        assert_eq!(check_acl(&only_bob, perms::READ, &bob), Ok(()));
        assert_eq!(
            check_acl(&only_bob, perms::WRITE, &bob),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            check_acl(&only_bob, perms::READ, &[id("sasl", "alice")]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            check_acl(&only_bob, perms::READ, &[id("digest", "bob")]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            check_acl(&only_bob, perms::READ, &[id("sasl", "super")]),
            Ok(())
        );
    }

    #[test]
    fn masking() {
        assert_eq!(mask_digest("bob:abc="), "bob:x");
        assert_eq!(mask_digest("bob"), "bob");
        assert_eq!(mask_digest("a:b:c"), "a:x");
        assert_eq!(mask_digest("a:b\nc:d"), "a:x\nc:x");
    }

    #[test]
    fn cache_refcounts() {
        let mut cache = AclCache::default();
        let a = vec![acl(31, "world", "anyone")];
        let b = vec![acl(1, "world", "anyone")];
        let ia = cache.intern(&a).unwrap();
        assert_eq!(cache.intern(&a), Some(ia));
        let ib = cache.intern(&b).unwrap();
        assert_ne!(ia, ib);
        assert_eq!(cache.len(), 2);
        cache.release(ia);
        assert_eq!(cache.get(ia), &a[..]);
        cache.release(ia);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(ia).is_empty());
        let ic = cache.intern(&a).unwrap();
        assert_eq!(ic, ia, "freed slot reused");
        cache.retain(ib);
        assert_eq!(cache.refs(ib), 2);
    }
}
