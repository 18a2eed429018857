//! TLS on the client port (`secureClientPort`), from PEM files, with rustls.
//!
//! The configuration keys are ZooKeeper 3.8's (`ssl.keyStore.location`, `ssl.trustStore.location`
//! with `ssl.*.type=PEM`, `ssl.clientAuth`, `ssl.protocol`, `ssl.enabledProtocols`,
//! `ssl.ciphersuites`), so a zoo.cfg carries over; what differs:
//! * only PEM stores: a JKS or PKCS#12 store is refused at start with the `openssl` command that
//!   converts it, and an encrypted private key is refused the same way (rustls takes plain keys);
//! * the key store is one PEM file holding the private key and the certificate chain (as
//!   ZooKeeper's `PemReader` reads it);
//! * the files are watched (polled every [`RELOAD_POLL`]) and a changed pair is loaded for new
//!   connections, with no restart, as ZooKeeper's `FileChangeWatcher` does. A change that fails
//!   to load is logged and the previous certificates stay in use.
//!
//! A client certificate that the trust store verifies authenticates the connection as
//! `x509:<subject DN>`, the DN in RFC 2253 form as Java's `X500Principal.getName()` prints it
//! (ZooKeeper's `X509AuthenticationProvider`), plus `super:<DN>` when the DN is
//! `X509AuthenticationProvider.superUser`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

/// How often the key and trust store files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// How long a client may take to finish the TLS handshake before its socket is closed: a
/// socket that never speaks must not hold a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `ssl.clientAuth`: whether a client must, may or must not present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `need` (ZooKeeper's default): a client without a trusted certificate is refused.
    #[default]
    Need,
    /// `want`: a certificate is asked for; a client without one connects unauthenticated.
    Want,
    /// `none`: no certificate is asked for.
    None,
}

impl ClientAuth {
    /// Parses ZooKeeper's values (case-insensitive, as `X509Util.ClientAuth.fromPropertyValue`).
    pub fn parse(value: &str) -> Result<ClientAuth, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "need" | "" => Ok(ClientAuth::Need),
            "want" => Ok(ClientAuth::Want),
            "none" => Ok(ClientAuth::None),
            _ => Err("expected need, want or none".to_string()),
        }
    }
}

/// The TLS settings of one port, as configured (files are read by [`TlsAcceptor::load`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// `ssl.keyStore.location`: one PEM file with the private key and the certificate chain.
    pub key_store: Option<PathBuf>,
    /// `ssl.keyStore.type` as written (only PEM, or empty with a `.pem` file, is accepted).
    pub key_store_type: Option<String>,
    /// `ssl.keyStore.password`: kept only to refuse an encrypted key with a clear message.
    pub key_store_password: Option<String>,
    /// `ssl.trustStore.location`: PEM CA certificates that client certificates must chain to.
    pub trust_store: Option<PathBuf>,
    /// `ssl.trustStore.type` as written.
    pub trust_store_type: Option<String>,
    /// `ssl.clientAuth`.
    pub client_auth: ClientAuth,
    /// `ssl.protocol`: the preferred protocol (TLSv1.2 or TLSv1.3).
    pub protocol: Option<String>,
    /// `ssl.enabledProtocols`: comma-separated; wins over `ssl.protocol`.
    pub enabled_protocols: Option<String>,
    /// `ssl.ciphersuites`: comma-separated IANA (Java) names; empty: rustls's defaults.
    pub cipher_suites: Option<String>,
    /// `X509AuthenticationProvider.superUser`: the DN that is also authenticated as `super`.
    pub super_user: Option<String>,
}

/// Why the TLS configuration cannot be used. Every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A required setting is missing.
    #[error("TLS: {0}")]
    Missing(String),
    /// A file could not be read.
    #[error("TLS: cannot read {what} {path}: {source}")]
    Read {
        /// Which store.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable.
    #[error("TLS: {what} {path}: {reason}")]
    Content {
        /// Which store.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A protocol or cipher setting names nothing rustls supports.
    #[error("TLS: {key}={value:?}: {reason}")]
    Setting {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the assembled configuration (for example a key that does not match the
    /// certificate).
    #[error("TLS: {0}")]
    Rustls(String),
}

/// The client port's TLS state: the current rustls configuration, swapped when the files change.
#[derive(Debug)]
pub struct TlsAcceptor {
    /// What was configured; the files are re-read from it on change.
    settings: TlsSettings,
    /// The configuration new handshakes use. Replaced whole on reload; handshakes in progress
    /// keep the `Arc` they started with.
    current: RwLock<Arc<ServerConfig>>,
    /// The files' modification stamps when `current` was loaded, to notice a change.
    stamps: parking_lot::Mutex<Vec<Option<(SystemTime, u64)>>>,
}

/// TLS between ensemble members (`sslQuorum=true`, the `ssl.quorum.*` keys): both ends present
/// the quorum key store's certificate and verify the other's against the quorum trust store,
/// so a peer without a valid certificate never gets past the handshake. Loaded once at start.
pub struct PeerTls {
    /// The accepting side (client certificates required).
    acceptor: tokio_rustls::TlsAcceptor,
    /// The dialing side (presents our certificate; verifies the peer's).
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Reads the quorum stores; `verify_hostname` (`ssl.quorum.hostnameVerification`, default
    /// true) checks that a dialed peer's certificate names the host of its `server.N` line.
    pub fn load(settings: &TlsSettings, verify_hostname: bool) -> Result<PeerTls, TlsError> {
        let mut server_side = settings.clone();
        server_side.client_auth = ClientAuth::Need;
        let server = build_config(&server_side)?;
        let client = build_client_config(settings, verify_hostname)?;
        info!(
            key_store = ?settings.key_store,
            trust_store = ?settings.trust_store,
            verify_hostname,
            "TLS between ensemble members (sslQuorum) configured"
        );
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// The accepting handshake (bounded by `limit`).
    pub async fn accept(
        &self,
        socket: TcpStream,
        limit: Duration,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        tokio::time::timeout(limit, self.acceptor.accept(socket))
            .await
            .map_err(|_| timed_out())?
    }

    /// The dialing handshake to `address` (`host:port`, as in a `server.N` line).
    pub async fn connect(
        &self,
        address: &str,
        socket: TcpStream,
        limit: Duration,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = match address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => address,
        };
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("peer host {host:?}: {e}"),
            )
        })?;
        tokio::time::timeout(limit, self.connector.connect(name, socket))
            .await
            .map_err(|_| timed_out())?
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
}

/// A server-certificate check that accepts a certificate for another name
/// (`ssl.quorum.hostnameVerification=false`), and nothing else.
#[derive(Debug)]
struct IgnoreHostname(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for IgnoreHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn build_client_config(
    settings: &TlsSettings,
    verify_hostname: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let (certs, key) = load_key_store(settings)?;
    let roots = load_trust_store(settings)?.ok_or_else(|| {
        TlsError::Missing(
            "sslQuorum needs ssl.quorum.trustStore.location: the CA file peer certificates              chain to"
                .into(),
        )
    })?;
    let provider = Arc::new(crypto_provider(settings)?);
    let versions = protocol_versions(settings)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Rustls(format!("protocols and cipher suites do not fit: {e}")))?;
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Rustls(format!("peer verifier: {e}")))?;
    let builder = if verify_hostname {
        builder.with_webpki_verifier(webpki)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(IgnoreHostname(webpki)))
    };
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("quorum key store certificate and key: {e}")))
}

/// A client socket after a successful handshake.
pub struct Accepted {
    /// The encrypted stream.
    pub stream: TlsStream<TcpStream>,
    /// The verified client certificate's subject DN (RFC 2253), if the client sent one.
    pub subject: Option<String>,
}

impl TlsAcceptor {
    /// Reads the stores and builds the first configuration; any problem is a start-up error.
    pub fn load(settings: TlsSettings) -> Result<TlsAcceptor, TlsError> {
        let config = build_config(&settings)?;
        let stamps = file_stamps(&settings);
        info!(
            key_store = ?settings.key_store,
            trust_store = ?settings.trust_store,
            client_auth = ?settings.client_auth,
            "TLS client port configured"
        );
        Ok(TlsAcceptor {
            settings,
            current: RwLock::new(Arc::new(config)),
            stamps: parking_lot::Mutex::new(stamps),
        })
    }

    /// The settings this acceptor was built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Reloads the stores if a file changed since the last load. Returns whether a new
    /// configuration is now in use. A failed load keeps the old one (and is retried only
    /// when the files change again).
    pub fn reload_if_changed(&self) -> bool {
        let now = file_stamps(&self.settings);
        {
            let mut stamps = self.stamps.lock();
            if *stamps == now {
                return false;
            }
            *stamps = now;
        }
        match build_config(&self.settings) {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                info!("TLS certificates reloaded; new connections use them");
                true
            }
            Err(error) => {
                warn!(%error, "TLS files changed but cannot be loaded; keeping the previous certificates");
                false
            }
        }
    }

    /// Runs the handshake on an accepted socket (bounded by [`HANDSHAKE_TIMEOUT`]).
    pub async fn accept(&self, socket: TcpStream) -> std::io::Result<Accepted> {
        let config = Arc::clone(&self.current.read());
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let subject = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| subject_dn(cert.as_ref()))
            .transpose()
            .map_err(|reason| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("client certificate: {reason}"),
                )
            })?;
        Ok(Accepted { stream, subject })
    }

    /// Checks the files every [`RELOAD_POLL`] until `shutdown` flips.
    pub async fn watch_files(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let me = Arc::clone(&self);
                    // File reads and PEM parsing: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The auth ids a verified client certificate gives a connection (ZooKeeper's
/// `X509AuthenticationProvider.handleAuthentication`).
pub fn auth_ids(subject: &str, super_user: Option<&str>) -> Vec<rookery_protocol::Id> {
    let mut ids = vec![rookery_protocol::Id {
        scheme: "x509".to_string(),
        id: subject.to_string(),
    }];
    if super_user == Some(subject) {
        ids.push(rookery_protocol::Id {
            scheme: "super".to_string(),
            id: subject.to_string(),
        });
    }
    ids
}

fn file_stamps(settings: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    [&settings.key_store, &settings.trust_store]
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(path.as_ref()?).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// Refuses store types other than PEM, with the conversion to run.
fn check_store_type(
    key: &'static str,
    value: &Option<String>,
    path: &Path,
) -> Result<(), TlsError> {
    let inferred = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let kind = match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => v.to_ascii_uppercase(),
        // ZooKeeper infers the type from the extension when none is given.
        _ => match inferred.as_deref() {
            Some("jks") => "JKS".to_string(),
            Some("p12") | Some("pfx") => "PKCS12".to_string(),
            _ => "PEM".to_string(),
        },
    };
    match kind.as_str() {
        "PEM" => Ok(()),
        "PKCS12" => Err(TlsError::Setting {
            key,
            value: kind,
            reason: format!(
                "rookery reads PEM stores only; convert with `openssl pkcs12 -in {} -nodes -out store.pem` \
                 and set {key}=PEM",
                path.display()
            ),
        }),
        other => Err(TlsError::Setting {
            key,
            value: other.to_string(),
            reason: format!(
                "rookery reads PEM stores only; convert with `keytool -importkeystore -srckeystore {} \
                 -destkeystore store.p12 -deststoretype PKCS12`, then `openssl pkcs12 -in store.p12 -nodes \
                 -out store.pem`, and set {key}=PEM",
                path.display()
            ),
        }),
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Certificates and key from the key store PEM file.
fn load_key_store(
    settings: &TlsSettings,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    const WHAT: &str = "key store (ssl.keyStore.location / ssl.quorum.keyStore.location)";
    let path = settings.key_store.as_deref().ok_or_else(|| {
        TlsError::Missing(
            "secureClientPort needs ssl.keyStore.location, and sslQuorum              ssl.quorum.keyStore.location (a PEM file)"
                .into(),
        )
    })?;
    check_store_type("ssl.keyStore.type", &settings.key_store_type, path)?;
    let bytes = read_file(WHAT, path)?;
    let content = |reason: String| TlsError::Content {
        what: WHAT,
        path: path.to_path_buf(),
        reason,
    };
    if bytes
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
        || bytes
            .windows(b"Proc-Type: 4,ENCRYPTED".len())
            .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(content(
            "the private key is encrypted; rookery takes a plain PEM key \
             (decrypt it with `openssl pkey -in key.pem -out plain.pem`)"
                .into(),
        ));
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(content("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| content(format!("no usable PRIVATE KEY block ({e})")))?;
    Ok((certs, key))
}

fn load_trust_store(settings: &TlsSettings) -> Result<Option<RootCertStore>, TlsError> {
    const WHAT: &str = "trust store (ssl.trustStore.location / ssl.quorum.trustStore.location)";
    let Some(path) = settings.trust_store.as_deref() else {
        return Ok(None);
    };
    check_store_type("ssl.trustStore.type", &settings.trust_store_type, path)?;
    let bytes = read_file(WHAT, path)?;
    let content = |reason: String| TlsError::Content {
        what: WHAT,
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| content(format!("bad PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| content(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(content("no CERTIFICATE block".into()));
    }
    Ok(Some(roots))
}

/// The protocol versions of `ssl.enabledProtocols` (or `ssl.protocol`), as ZooKeeper's
/// `X509Util` picks them: the enabled list if given, else TLSv1.3 with TLSv1.2 when the
/// protocol is TLSv1.3 (the default), else just the protocol.
fn protocol_versions(
    settings: &TlsSettings,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let (key, value) = match (&settings.enabled_protocols, &settings.protocol) {
        (Some(list), _) if !list.trim().is_empty() => ("ssl.enabledProtocols", list.clone()),
        (_, Some(p)) if p.trim().eq_ignore_ascii_case("TLSv1.2") => {
            ("ssl.protocol", "TLSv1.2".to_string())
        }
        (_, Some(p)) if !p.trim().is_empty() && !p.trim().eq_ignore_ascii_case("TLSv1.3") => {
            ("ssl.protocol", p.clone())
        }
        _ => ("ssl.protocol", "TLSv1.3,TLSv1.2".to_string()),
    };
    let mut versions = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.to_ascii_uppercase().as_str() {
            "TLSV1.3" | "TLS" => versions.push(&rustls::version::TLS13),
            "TLSV1.2" => versions.push(&rustls::version::TLS12),
            _ => warn!(
                key,
                protocol = name,
                "TLS protocol not supported by rustls; ignored"
            ),
        }
    }
    versions.dedup();
    if versions.is_empty() {
        return Err(TlsError::Setting {
            key,
            value,
            reason: "no supported protocol (rustls offers TLSv1.2 and TLSv1.3)".into(),
        });
    }
    Ok(versions)
}

/// rustls's name of a suite in IANA's (and Java's) spelling: `TLS13_AES_128_GCM_SHA256` is
/// IANA's `TLS_AES_128_GCM_SHA256`.
fn iana_name(suite: rustls::SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

fn crypto_provider(settings: &TlsSettings) -> Result<rustls::crypto::CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(list) = settings
        .cipher_suites
        .as_ref()
        .filter(|l| !l.trim().is_empty())
    else {
        return Ok(provider);
    };
    let wanted: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    for name in &wanted {
        if !provider
            .cipher_suites
            .iter()
            .any(|s| iana_name(*s) == *name)
        {
            warn!(cipher = %name, "TLS cipher suite not supported by rustls; ignored");
        }
    }
    provider
        .cipher_suites
        .retain(|s| wanted.contains(&iana_name(*s)));
    if provider.cipher_suites.is_empty() {
        return Err(TlsError::Setting {
            key: "ssl.ciphersuites",
            value: list.clone(),
            reason: "names no cipher suite rustls supports".into(),
        });
    }
    Ok(provider)
}

fn build_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let (certs, key) = load_key_store(settings)?;
    let roots = load_trust_store(settings)?;
    let provider = Arc::new(crypto_provider(settings)?);
    let versions = protocol_versions(settings)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Rustls(format!("protocols and cipher suites do not fit: {e}")))?;
    let verifier = match (settings.client_auth, roots) {
        (ClientAuth::None, _) => WebPkiClientVerifier::no_client_auth(),
        (auth, Some(roots)) => {
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder = if auth == ClientAuth::Want {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?
        }
        (_, None) => {
            return Err(TlsError::Missing(
                "ssl.clientAuth is need or want (need is the default) but ssl.trustStore.location \
                 is not set: name the CA file that client certificates chain to, or set \
                 ssl.clientAuth=none"
                    .into(),
            ))
        }
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("key store certificate and key: {e}")))?;
    // The jute protocol runs directly over TLS, no ALPN.
    config.alpn_protocols.clear();
    Ok(config)
}

/// The short names RFC 2253 (and Java's `X500Principal.getName()`) give attribute types.
fn rfc2253_keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 §2.4 escaping of a string value.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// DER length octets.
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// The subject DN of a DER certificate, as Java's `X500Principal.getName()` (RFC 2253):
/// the last RDN first, `,` between RDNs and `+` inside one, keywords for the RFC's attribute
/// types, and `OID=#hex` (the value's DER) for the others.
pub fn subject_dn(der: &[u8]) -> Result<String, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable: {e}"))?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let text = match (rfc2253_keyword(&oid), attr.as_str()) {
                (Some(keyword), Ok(value)) => format!("{keyword}={}", escape_value(value)),
                _ => {
                    let value = attr.attr_value();
                    let mut encoded = Vec::with_capacity(value.data.len() + 4);
                    // Low-tag-number form: every X.500 string and most other types.
                    let class = (value.header.class() as u8) << 6;
                    let constructed = if value.header.is_constructed() {
                        0x20
                    } else {
                        0
                    };
                    encoded.push(class | constructed | (value.header.tag().0 as u8 & 0x1f));
                    der_length(value.data.len(), &mut encoded);
                    encoded.extend_from_slice(value.data);
                    let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
                    let name = rfc2253_keyword(&oid).map(str::to_string).unwrap_or(oid);
                    format!("{name}=#{hex}")
                }
            };
            parts.push(text);
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_rfc2253() {
        assert_eq!(escape_value("a,b"), "a\\,b");
        assert_eq!(escape_value(" x "), "\\ x\\ ");
        assert_eq!(escape_value("#1+2"), "\\#1\\+2");
        assert_eq!(escape_value("plain"), "plain");
    }

    #[test]
    fn client_auth_values() {
        assert_eq!(ClientAuth::parse("NEED"), Ok(ClientAuth::Need));
        assert_eq!(ClientAuth::parse("want"), Ok(ClientAuth::Want));
        assert_eq!(ClientAuth::parse("none"), Ok(ClientAuth::None));
        assert!(ClientAuth::parse("maybe").is_err());
    }

    #[test]
    fn protocols_follow_zookeeper_defaults() {
        let mut s = TlsSettings::default();
        assert_eq!(protocol_versions(&s).map(|v| v.len()).ok(), Some(2));
        s.protocol = Some("TLSv1.2".into());
        assert_eq!(protocol_versions(&s).map(|v| v.len()).ok(), Some(1));
        s.enabled_protocols = Some("TLSv1.3, TLSv1.2".into());
        assert_eq!(protocol_versions(&s).map(|v| v.len()).ok(), Some(2));
        s.enabled_protocols = Some("TLSv1,TLSv1.1".into());
        assert!(protocol_versions(&s).is_err());
    }

    #[test]
    fn cipher_names_are_iana() {
        let mut s = TlsSettings {
            cipher_suites: Some(
                "TLS_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            ),
            ..TlsSettings::default()
        };
        let provider = crypto_provider(&s).ok();
        assert_eq!(provider.map(|p| p.cipher_suites.len()), Some(2));
        s.cipher_suites = Some("SSL_RSA_WITH_RC4_128_MD5".into());
        assert!(crypto_provider(&s).is_err());
    }

    #[test]
    fn store_types() {
        let pem = Path::new("/x/store.pem");
        assert!(check_store_type("k", &None, pem).is_ok());
        assert!(check_store_type("k", &Some("pem".into()), pem).is_ok());
        assert!(check_store_type("k", &None, Path::new("/x/store.jks")).is_err());
        assert!(check_store_type("k", &Some("PKCS12".into()), pem).is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let s = TlsSettings {
            key_store: Some(PathBuf::from("/nonexistent/rookery-key.pem")),
            client_auth: ClientAuth::None,
            ..TlsSettings::default()
        };
        let error = TlsAcceptor::load(s).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("/nonexistent/rookery-key.pem")),
            "{error:?}"
        );
        let error = TlsAcceptor::load(TlsSettings::default())
            .err()
            .map(|e| e.to_string());
        assert!(error
            .as_deref()
            .is_some_and(|e| e.contains("ssl.keyStore.location")));
    }

    #[test]
    fn auth_ids_add_super_for_the_super_user() {
        let ids = auth_ids("CN=a", Some("CN=a"));
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[1].scheme, "super");
        assert_eq!(auth_ids("CN=b", Some("CN=a")).len(), 1);
    }
}
