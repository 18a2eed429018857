//! SASL DIGEST-MD5 (RFC 2831) authentication, server side, as ZooKeeper configures it.
//!
//! ZooKeeper's `ZooKeeperSaslServer` wraps the JDK's DIGEST-MD5 server with protocol
//! `zookeeper` and server name `zk-sasl-md5`, which is also the only realm it offers. The
//! users and their passwords come from the `Server` section of a JAAS file, as options
//! `user_NAME="password"` of its login modules (`SaslServerCallbackHandler`). The exchange
//! is two round trips: an empty token gets the challenge, the client's digest response gets
//! `rspauth=...`, and the session then holds the id `sasl:NAME`.
//!
//! Only the `auth` quality of protection is offered (no integrity or privacy layer): ZooKeeper
//! never wraps its traffic either.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use md5::{Digest, Md5};
use rand::RngCore;

/// The DIGEST-MD5 server name and realm ZooKeeper uses (`SecurityUtils`, `ZooKeeperSaslServer`).
pub const REALM: &str = "zk-sasl-md5";
/// The SASL service (protocol) name of ZooKeeper.
pub const SERVICE: &str = "zookeeper";
/// The JAAS section ZooKeeper reads by default (`zookeeper.sasl.serverconfig`).
pub const SERVER_SECTION: &str = "Server";
/// The authProvider class that registers the `sasl` ACL scheme.
pub const SASL_PROVIDER_CLASS: &str = "org.apache.zookeeper.server.auth.SASLAuthenticationProvider";

/// Why a JAAS file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JaasError {
    /// The file could not be read.
    #[error("cannot read JAAS file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not JAAS configuration syntax.
    #[error("JAAS file {path}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file has no section of that name (ZooKeeper then has no SASL server).
    #[error("JAAS file {path} has no '{section}' section")]
    NoSection {
        /// The file.
        path: PathBuf,
        /// The section looked for.
        section: String,
    },
}

/// The DIGEST-MD5 users of the JAAS `Server` section. Debug shows names only: passwords
/// must never reach a log.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SaslUsers {
    /// User name to password.
    users: BTreeMap<String, String>,
}

impl fmt::Debug for SaslUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslUsers")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SaslUsers {
    /// Users from `user_NAME=password` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        SaslUsers {
            users: pairs
                .into_iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        }
    }

    /// The user names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.users.keys().map(String::as_str).collect()
    }

    fn password(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// Reads the `section` of a JAAS file.
    pub fn load(path: &Path, section: &str) -> Result<Self, JaasError> {
        let text = std::fs::read_to_string(path).map_err(|source| JaasError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, section).map_err(|e| match e {
            ParseError::Syntax(reason) => JaasError::Syntax {
                path: path.to_path_buf(),
                reason,
            },
            ParseError::NoSection => JaasError::NoSection {
                path: path.to_path_buf(),
                section: section.to_string(),
            },
        })
    }

    /// Parses JAAS configuration text (the JDK's `ConfigFile` syntax: `Name { Class Flag
    /// key="value" ...; ... };` with `//`, `#` and `/* */` comments) and collects the
    /// `user_` options of every login module of `section`, as `SaslServerCallbackHandler`.
    fn parse(text: &str, section: &str) -> Result<Self, ParseError> {
        let tokens = tokenize(text)?;
        let mut it = tokens.into_iter().peekable();
        let mut found = None;
        while let Some(name) = it.next() {
            let Tok::Word(name) = name else {
                return Err(ParseError::Syntax(format!(
                    "expected a section name, got {name:?}"
                )));
            };
            expect(&mut it, &Tok::Open)?;
            let mut users = BTreeMap::new();
            // Login modules until the closing brace.
            loop {
                match it.next() {
                    Some(Tok::Close) => break,
                    Some(Tok::Word(_class)) => {}
                    other => {
                        return Err(ParseError::Syntax(format!(
                            "expected a login module class, got {other:?}"
                        )))
                    }
                }
                match it.next() {
                    Some(Tok::Word(flag))
                        if ["required", "requisite", "sufficient", "optional"]
                            .contains(&flag.to_ascii_lowercase().as_str()) => {}
                    other => {
                        return Err(ParseError::Syntax(format!(
                            "expected a control flag, got {other:?}"
                        )))
                    }
                }
                // Options until ';'.
                loop {
                    match it.next() {
                        Some(Tok::Semi) => break,
                        Some(Tok::Word(key)) => {
                            expect(&mut it, &Tok::Eq)?;
                            let value = match it.next() {
                                Some(Tok::Word(v)) | Some(Tok::Quoted(v)) => v,
                                other => {
                                    return Err(ParseError::Syntax(format!(
                                        "expected a value for option {key}, got {other:?}"
                                    )))
                                }
                            };
                            if let Some(user) = key.strip_prefix("user_") {
                                users.insert(user.to_string(), value);
                            }
                        }
                        other => {
                            return Err(ParseError::Syntax(format!(
                                "expected an option or ';', got {other:?}"
                            )))
                        }
                    }
                }
            }
            expect(&mut it, &Tok::Semi)?;
            if name == section {
                found.get_or_insert_with(BTreeMap::new).extend(users);
            }
        }
        found
            .map(|users| SaslUsers { users })
            .ok_or(ParseError::NoSection)
    }
}

/// A JAAS parse failure, before the file name is attached.
enum ParseError {
    Syntax(String),
    NoSection,
}

/// A JAAS token. Its Debug (used in syntax errors) shows no value, quoted or not (class names
/// only): a malformed file must not put a password into a log.
#[derive(PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semi,
    Eq,
}

impl fmt::Debug for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // An unquoted option value is a word too: show only class names.
            Tok::Word(w) if w.contains('.') => write!(f, "{w:?}"),
            Tok::Word(_) => f.write_str("a word"),
            Tok::Quoted(_) => f.write_str("a quoted string"),
            Tok::Open => f.write_str("'{'"),
            Tok::Close => f.write_str("'}'"),
            Tok::Semi => f.write_str("';'"),
            Tok::Eq => f.write_str("'='"),
        }
    }
}

fn expect(it: &mut impl Iterator<Item = Tok>, want: &Tok) -> Result<(), ParseError> {
    match it.next() {
        Some(t) if &t == want => Ok(()),
        other => Err(ParseError::Syntax(format!(
            "expected {want:?}, got {other:?}"
        ))),
    }
}

fn tokenize(text: &str) -> Result<Vec<Tok>, ParseError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '{' => out.push(Tok::Open),
            '}' => out.push(Tok::Close),
            ';' => out.push(Tok::Semi),
            '=' => out.push(Tok::Eq),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                let mut closed = false;
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    prev = c;
                }
                if !closed {
                    return Err(ParseError::Syntax("unterminated comment".into()));
                }
            }
            '"' | '\'' => {
                let quote = c;
                let mut value = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        c if c == quote => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(ParseError::Syntax("unterminated quoted string".into()));
                }
                out.push(Tok::Quoted(value));
            }
            c => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "{};=\"'".contains(n) {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                out.push(Tok::Word(word));
            }
        }
    }
    Ok(out)
}

/// Why a DIGEST-MD5 exchange failed. Every variant makes ZooKeeper answer AuthFailed and
/// close the connection; the text is for the server log (it never holds a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// A token after the exchange completed.
    #[error("DIGEST-MD5: authentication already completed")]
    AlreadyComplete,
    /// The client's response is not a well-formed digest-response.
    #[error("DIGEST-MD5: digest response format violation: {0}")]
    Malformed(&'static str),
    /// The user is not in the JAAS section (reported like a wrong password, as ZooKeeper).
    #[error("DIGEST-MD5: unknown user {0:?}")]
    UnknownUser(String),
    /// The response digest does not match: wrong password.
    #[error("DIGEST-MD5: mismatched response (wrong password?) for user {0:?}")]
    Mismatch(String),
}

/// Where one connection's DIGEST-MD5 exchange stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SaslState {
    /// Nothing received yet.
    #[default]
    Start,
    /// The challenge went out with this nonce.
    Challenged {
        /// The server nonce of the challenge.
        nonce: String,
    },
    /// Authenticated (or failed: the connection is closed then).
    Complete,
}

/// What one step of the exchange produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslStep {
    /// The token to send back.
    pub token: Vec<u8>,
    /// Set when the exchange completed: the authorized user name (the `sasl` id).
    pub authorized: Option<String>,
}

/// A fresh server nonce: 30 bytes from the OS-seeded CSPRNG, base64 (40 characters, like the
/// JDK's).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 30];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl SaslState {
    /// Evaluates one client token. `nonce` makes the challenge's nonce (a CSPRNG in the
    /// server, fixed in tests). On an error the state is `Complete`: no retry on this
    /// connection, which ZooKeeper closes.
    pub fn evaluate(
        &mut self,
        users: &SaslUsers,
        token: &[u8],
        nonce: impl FnOnce() -> String,
    ) -> Result<SaslStep, SaslError> {
        match std::mem::replace(self, SaslState::Complete) {
            SaslState::Start => {
                // DIGEST-MD5 has no initial response; like ZooKeeper's JDK server, whatever
                // the first token holds is ignored and answered with the challenge.
                let _ = token;
                let nonce = nonce();
                // As the JDK server words it; no qop directive means qop=auth (RFC 2831).
                let challenge =
                    format!("realm=\"{REALM}\",nonce=\"{nonce}\",charset=utf-8,algorithm=md5-sess");
                *self = SaslState::Challenged { nonce };
                Ok(SaslStep {
                    token: challenge.into_bytes(),
                    authorized: None,
                })
            }
            SaslState::Challenged { nonce } => {
                let response = DigestResponse::parse(token)?;
                let user = response.validate(&nonce)?;
                let password = users
                    .password(&user)
                    .ok_or_else(|| SaslError::UnknownUser(user.clone()))?;
                let ha1 = response.ha1(password);
                let expected = response.digest(&ha1, "AUTHENTICATE:");
                // Both sides are lowercase hex of equal length; a timing leak here would
                // reveal only how many leading hex digits of one MD5 match.
                if !constant_time_eq(expected.as_bytes(), response.response.as_bytes()) {
                    return Err(SaslError::Mismatch(user));
                }
                let rspauth = response.digest(&ha1, ":");
                Ok(SaslStep {
                    token: format!("rspauth={rspauth}").into_bytes(),
                    authorized: Some(user),
                })
            }
            SaslState::Complete => Err(SaslError::AlreadyComplete),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The directives of a client digest-response (RFC 2831 2.1.2).
#[derive(Debug, Default)]
struct DigestResponse {
    username: String,
    realm: Option<String>,
    nonce: String,
    cnonce: String,
    nc: String,
    qop: Option<String>,
    digest_uri: String,
    response: String,
    charset_utf8: bool,
    authzid: Option<String>,
}

impl DigestResponse {
    fn parse(token: &[u8]) -> Result<Self, SaslError> {
        let text = std::str::from_utf8(token).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let mut r = DigestResponse::default();
        let mut seen = std::collections::HashSet::new();
        for (key, value) in directives(text)? {
            let key = key.to_ascii_lowercase();
            if !seen.insert(key.clone()) {
                return Err(SaslError::Malformed("a directive appears twice"));
            }
            match key.as_str() {
                "username" => r.username = value,
                "realm" => r.realm = Some(value),
                "nonce" => r.nonce = value,
                "cnonce" => r.cnonce = value,
                "nc" => r.nc = value,
                "qop" => r.qop = Some(value),
                "digest-uri" => r.digest_uri = value,
                "response" => r.response = value.to_ascii_lowercase(),
                "charset" => {
                    if !value.eq_ignore_ascii_case("utf-8") {
                        return Err(SaslError::Malformed("charset must be utf-8"));
                    }
                    r.charset_utf8 = true;
                }
                "authzid" => r.authzid = Some(value),
                // maxbuf, cipher: meaningless with qop=auth; unknown ones are ignored (RFC).
                _ => {}
            }
        }
        for (present, what) in [
            (!r.username.is_empty(), "no username"),
            (!r.nonce.is_empty(), "no nonce"),
            (!r.cnonce.is_empty(), "no cnonce"),
            (!r.nc.is_empty(), "no nc"),
            (!r.digest_uri.is_empty(), "no digest-uri"),
            (r.response.len() == 32, "response is not 32 hex digits"),
        ] {
            if !present {
                return Err(SaslError::Malformed(what));
            }
        }
        Ok(r)
    }

    /// The checks the JDK's DigestMD5Server makes before comparing digests; returns the user.
    fn validate(&self, nonce: &str) -> Result<String, SaslError> {
        if self.nonce != nonce {
            return Err(SaslError::Malformed("nonce mismatch"));
        }
        if self.realm.as_deref().is_some_and(|r| r != REALM) {
            return Err(SaslError::Malformed("nonmatching realm"));
        }
        if u32::from_str_radix(&self.nc, 16) != Ok(1) {
            return Err(SaslError::Malformed("nonce count must be 1"));
        }
        if self.qop.as_deref().is_some_and(|q| q != "auth") {
            return Err(SaslError::Malformed("only qop=auth is offered"));
        }
        let expected_uri = format!("{SERVICE}/{REALM}");
        if !self.digest_uri.eq_ignore_ascii_case(&expected_uri) {
            return Err(SaslError::Malformed(
                "digest-uri must be zookeeper/zk-sasl-md5",
            ));
        }
        Ok(self.username.clone())
    }

    /// A string in the charset the client declared: UTF-8, else ISO 8859-1 when every
    /// character fits (RFC 2831 2.1.2.1), else UTF-8.
    fn encode(&self, s: &str) -> Vec<u8> {
        if !self.charset_utf8 && s.chars().all(|c| u32::from(c) <= 0xff) {
            s.chars().map(|c| c as u8).collect()
        } else {
            s.as_bytes().to_vec()
        }
    }

    /// HEX(H(A1)), A1 = H(username:realm:password):nonce:cnonce[:authzid].
    fn ha1(&self, password: &str) -> String {
        let mut inner = Md5::new();
        inner.update(self.encode(&self.username));
        inner.update(b":");
        inner.update(self.encode(self.realm.as_deref().unwrap_or("")));
        inner.update(b":");
        inner.update(self.encode(password));
        let mut a1 = Md5::new();
        a1.update(inner.finalize());
        a1.update(b":");
        a1.update(self.nonce.as_bytes());
        a1.update(b":");
        a1.update(self.cnonce.as_bytes());
        if let Some(authzid) = &self.authzid {
            a1.update(b":");
            a1.update(authzid.as_bytes());
        }
        hex(&a1.finalize())
    }

    /// The response value (`a2_prefix` "AUTHENTICATE:") or rspauth (`a2_prefix` ":").
    fn digest(&self, ha1: &str, a2_prefix: &str) -> String {
        let a2 = hex(&Md5::digest(format!("{a2_prefix}{}", self.digest_uri)));
        let qop = self.qop.as_deref().unwrap_or("auth");
        let kd = format!(
            "{ha1}:{}:{}:{}:{qop}:{a2}",
            self.nonce, self.nc, self.cnonce
        );
        hex(&Md5::digest(kd))
    }
}

/// Splits `key=value, key="quoted \" value"` directives (RFC 2831 7.1 lists).
fn directives(text: &str) -> Result<Vec<(String, String)>, SaslError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(SaslError::Malformed("directive without '='"));
        }
        let mut value = String::new();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(SaslError::Malformed("unterminated quoted value"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim_end().to_string();
        }
        out.push((key.trim().to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computes a client digest-response the way RFC 2831 describes (independently of
    /// `DigestResponse`: plain string formatting over the `md5` of the test).
    fn client_response(
        user: &str,
        realm: &str,
        password: &str,
        nonce: &str,
        cnonce: &str,
        uri: &str,
        a2_prefix: &str,
    ) -> String {
        let md5hex = |b: &[u8]| hex(&Md5::digest(b));
        let mut a1 = Md5::digest(format!("{user}:{realm}:{password}")).to_vec();
        a1.extend_from_slice(format!(":{nonce}:{cnonce}").as_bytes());
        let ha1 = md5hex(&a1);
        let ha2 = md5hex(format!("{a2_prefix}{uri}").as_bytes());
        md5hex(format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}").as_bytes())
    }

    fn rfc(
        user: &str,
        realm: &str,
        nonce: &str,
        cnonce: &str,
        uri: &str,
        response: &str,
    ) -> DigestResponse {
        DigestResponse {
            username: user.into(),
            realm: Some(realm.into()),
            nonce: nonce.into(),
            cnonce: cnonce.into(),
            nc: "00000001".into(),
            qop: Some("auth".into()),
            digest_uri: uri.into(),
            response: response.into(),
            charset_utf8: false,
            authzid: None,
        }
    }

    /// RFC 2831 section 4, the IMAP and ACAP examples (user chris, password secret).
    #[test]
    fn rfc_2831_examples() {
        let imap = rfc(
            "chris",
            "elwood.innosoft.com",
            "OA6MG9tEQGm2hh",
            "OA6MHXh6VqTrRk",
            "imap/elwood.innosoft.com",
            "d388dad90d4bbd760a152321f2143af7",
        );
        let ha1 = imap.ha1("secret");
        assert_eq!(
            imap.digest(&ha1, "AUTHENTICATE:"),
            "d388dad90d4bbd760a152321f2143af7"
        );
        assert_eq!(imap.digest(&ha1, ":"), "ea40f60335c427b5527b84dbabcdfffd");
        let acap = rfc(
            "chris",
            "elwood.innosoft.com",
            "OA9BSXrbuRhWay",
            "OA9BSuZWMSpW8m",
            "acap/elwood.innosoft.com",
            "6084c6db3fede7352c551284490fd0fc",
        );
        let ha1 = acap.ha1("secret");
        assert_eq!(
            acap.digest(&ha1, "AUTHENTICATE:"),
            "6084c6db3fede7352c551284490fd0fc"
        );
        assert_eq!(acap.digest(&ha1, ":"), "2f0b3d7c3c2e486600ef710726aa2eae");
    }

    fn bob() -> SaslUsers {
        SaslUsers::from_pairs([("bob", "bobsecret"), ("super", "adminsecret")])
    }

    /// An exchange recorded from ZooKeeper 3.8 (JDK 17 DigestMD5Server) with pure-sasl as the
    /// client: the same nonce and response give the rspauth ZooKeeper sent.
    #[test]
    fn exchange_recorded_from_zookeeper() {
        let nonce = "tOf2rhQUXIXQ4AVdtDGEO8K3jvYyBMYTmIkeLJvM";
        let mut state = SaslState::default();
        let challenge = state.evaluate(&bob(), b"", || nonce.to_string()).unwrap();
        let challenge = String::from_utf8(challenge.token).unwrap();
        assert!(challenge.contains("realm=\"zk-sasl-md5\""), "{challenge}");
        assert!(
            challenge.contains(&format!("nonce=\"{nonce}\"")),
            "{challenge}"
        );
        let response = format!(
            "qop=auth,realm=\"zk-sasl-md5\",username=\"bob\",nonce=\"{nonce}\",\
             cnonce=\"3606274301573623\",nc=00000001,digest-uri=\"zookeeper/zk-sasl-md5\",\
             response=7e303e63c7c67aae5896d55b2c0455a4"
        );
        let step = state
            .evaluate(&bob(), response.as_bytes(), || unreachable!())
            .unwrap();
        assert_eq!(step.token, b"rspauth=10cf531f35ccf784924783427c6ce460");
        assert_eq!(step.authorized.as_deref(), Some("bob"));
        assert_eq!(state, SaslState::Complete);
        assert_eq!(
            state.evaluate(&bob(), b"", String::new),
            Err(SaslError::AlreadyComplete)
        );
    }

    fn run(
        user: &str,
        password: &str,
        tweak: impl FnOnce(String) -> String,
    ) -> Result<SaslStep, SaslError> {
        let mut state = SaslState::default();
        state.evaluate(&bob(), b"", new_nonce)?;
        let SaslState::Challenged { nonce } = state.clone() else {
            panic!("not challenged: {state:?}");
        };
        let cnonce = "c0ffee";
        let uri = "zookeeper/zk-sasl-md5";
        let response = client_response(user, REALM, password, &nonce, cnonce, uri, "AUTHENTICATE:");
        let token = tweak(format!(
            "username=\"{user}\",realm=\"{REALM}\",nonce=\"{nonce}\",cnonce=\"{cnonce}\",\
             nc=00000001,qop=auth,digest-uri=\"{uri}\",response={response},charset=utf-8"
        ));
        let step = state.evaluate(&bob(), token.as_bytes(), || unreachable!())?;
        let rspauth = client_response(user, REALM, password, &nonce, cnonce, uri, ":");
        assert_eq!(step.token, format!("rspauth={rspauth}").into_bytes());
        Ok(step)
    }

    #[test]
    fn right_and_wrong_passwords() {
        assert_eq!(
            run("bob", "bobsecret", |t| t)
                .unwrap()
                .authorized
                .as_deref(),
            Some("bob")
        );
        assert_eq!(
            run("super", "adminsecret", |t| t)
                .unwrap()
                .authorized
                .as_deref(),
            Some("super")
        );
        assert_eq!(
            run("bob", "wrong", |t| t),
            Err(SaslError::Mismatch("bob".into()))
        );
        assert_eq!(
            run("eve", "x", |t| t),
            Err(SaslError::UnknownUser("eve".into()))
        );
        // Passwords are per user: bob's password does not open super.
        assert_eq!(
            run("super", "bobsecret", |t| t),
            Err(SaslError::Mismatch("super".into()))
        );
    }

    #[test]
    fn malformed_responses_fail() {
        type Tweak = fn(String) -> String;
        let cases: [(&str, Tweak); 6] = [
            ("realm", |t| {
                t.replace("realm=\"zk-sasl-md5\"", "realm=\"other\"")
            }),
            ("uri", |t| {
                t.replace("zookeeper/zk-sasl-md5", "zookeeper/host")
            }),
            ("nc", |t| t.replace("nc=00000001", "nc=00000002")),
            ("qop", |t| t.replace("qop=auth", "qop=auth-int")),
            ("dup", |t| format!("{t},username=\"bob\"")),
            ("nonce", |t| t.replacen("nonce=\"", "nonce=\"x", 1)),
        ];
        for (what, tweak) in cases {
            assert!(
                matches!(run("bob", "bobsecret", tweak), Err(SaslError::Malformed(_))),
                "{what}"
            );
        }
        let mut state = SaslState::default();
        let first = state.evaluate(&bob(), b"x", new_nonce).unwrap();
        assert!(
            first.token.starts_with(b"realm="),
            "a first token is ignored"
        );
        let mut state = SaslState::default();
        state.evaluate(&bob(), b"", new_nonce).unwrap();
        assert!(matches!(
            state.evaluate(&bob(), b"\xff garbage", new_nonce),
            Err(SaslError::Malformed(_))
        ));
    }

    #[test]
    fn nonces_are_fresh() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
    }

    #[test]
    fn jaas_server_section() {
        let text = r#"
            // the client side, ignored by the server
            Client {
                org.apache.zookeeper.server.auth.DigestLoginModule required
                username="bob" password="bobsecret";
            };
            /* the server side */
            Server {
                org.apache.zookeeper.server.auth.DigestLoginModule required
                user_super="adminsecret"
                user_bob="bob\"secret"   # a comment
                debug=true;
            };
        "#;
        let users = SaslUsers::parse(text, "Server").ok().unwrap();
        assert_eq!(users.names(), vec!["bob", "super"]);
        assert_eq!(users.password("bob"), Some("bob\"secret"));
        assert_eq!(users.password("super"), Some("adminsecret"));
        assert!(matches!(
            SaslUsers::parse(text, "Other"),
            Err(ParseError::NoSection)
        ));
        assert!(matches!(
            SaslUsers::parse("Server { x required a=\"b\" ", "Server"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            SaslUsers::parse("Server { x maybe; };", "Server"),
            Err(ParseError::Syntax(_))
        ));
        // Syntax errors never quote a value.
        for broken in [
            "Server { m.Login required user_bob \"pw-in-quotes\"; };",
            "Server { m.Login required user_bob pw-unquoted; };",
        ] {
            match SaslUsers::parse(broken, "Server") {
                Err(ParseError::Syntax(msg)) => assert!(!msg.contains("pw-"), "{msg}"),
                _ => panic!("{broken} parsed"),
            }
        }
        // Debug never shows a password.
        assert!(!format!("{users:?}").contains("adminsecret"));
    }
}
