//! The overlay's fast secure channel: libp2p's TLS 1.3 handshake (a self-signed
//! certificate carrying the peer's libp2p identity, as libp2p-tls specifies)
//! with AES-GCM preferred where the CPU has AES instructions, then a membership
//! proof bound to the channel: each side sends
//! HMAC-SHA256(network key, label ‖ side ‖ TLS exporter), the exporter being
//! RFC 8446 §7.5's keying material for this session (channel binding as in
//! RFC 9266). The exporter is unique to the session and to both handshake keys,
//! so a proof cannot be replayed on another connection or relayed through a
//! man in the middle, and the side byte keeps a node's own proof from being a
//! valid answer to itself. SECURITY.md argues it; `membership` says why both
//! this and keyed noise are offered.
//!
//! The certificate checks follow libp2p-tls's verifier (MIT, Parity
//! Technologies); it pins ChaCha20-Poly1305 first, which runs at half
//! AES-GCM's speed on CPUs with AES-NI, so the configurations are built here.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::identity::NetworkKey;
use super::membership::HandshakeError;

/// The exporter label (RFC 8446 §7.5) and the MAC's own label.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-peervisor-overlay-membership";
const PROOF_LABEL: &[u8] = b"peervisor overlay membership v2";
const PROOF_LEN: usize = 32;

/// Which end of the connection a proof speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Listener,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Side::Dialer => b'D',
            Side::Listener => b'L',
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Dialer => Side::Listener,
            Side::Listener => Side::Dialer,
        }
    }
}

/// What `side` sends on a session whose exporter is `exporter`.
pub fn proof(key: &NetworkKey, side: Side, exporter: &[u8; 32]) -> ring::hmac::Tag {
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.bytes());
    let mut context = ring::hmac::Context::with_key(&mac);
    context.update(PROOF_LABEL);
    context.update(&[side.byte()]);
    context.update(exporter);
    context.sign()
}

/// Checks the other side's proof in constant time.
fn verify(key: &NetworkKey, side: Side, exporter: &[u8; 32], received: &[u8]) -> bool {
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.bytes());
    let mut message = Vec::with_capacity(PROOF_LABEL.len() + 1 + exporter.len());
    message.extend_from_slice(PROOF_LABEL);
    message.push(side.byte());
    message.extend_from_slice(exporter);
    ring::hmac::verify(&mac, &message, received).is_ok()
}

/// TLS configurations for both ends, built once per node.
#[derive(Clone)]
pub struct KeyedTls {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    key: NetworkKey,
}

impl KeyedTls {
    pub fn new(keypair: &Keypair, key: &NetworkKey) -> Result<Self, rustls::Error> {
        let (cert, private_key) = certificate::generate(keypair)
            .map_err(|e| rustls::Error::General(format!("TLS certificate: {e}")))?;
        let provider = Arc::new(provider());
        let verifier = Arc::new(Libp2pVerifier);
        // rustls's own cert loading would refuse libp2p's critical extension.
        let ours = Arc::new(OurCertificate(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert],
            rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&private_key)?,
        ))));
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(ours.clone());
        client.alpn_protocols = vec![b"libp2p".to_vec()];
        // The listener takes the suite the dialer prefers: AES-GCM on both here.
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(ours);
        server.alpn_protocols = vec![b"libp2p".to_vec()];
        Ok(KeyedTls {
            client: Arc::new(client),
            server: Arc::new(server),
            key: *key,
        })
    }

    /// Dialer side: the TLS handshake, then the membership proofs.
    pub async fn dial<C>(&self, socket: C) -> Result<(PeerId, TlsStream<C>), HandshakeError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        // libp2p-tls: no server name indication (an unspecified IP disables SNI).
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let stream = futures_rustls::TlsConnector::from(self.client.clone())
            .connect(name, socket)
            .await
            .map_err(HandshakeError::Tls)?;
        let (_, connection) = stream.get_ref();
        let exporter = export(connection)?;
        let peer = remote_peer(connection)?;
        let mut stream = futures_rustls::TlsStream::Client(stream);
        self.exchange_proofs(&mut stream, Side::Dialer, &exporter)
            .await?;
        Ok((peer, stream))
    }

    /// Listener side: the TLS handshake, then the membership proofs.
    pub async fn accept<C>(&self, socket: C) -> Result<(PeerId, TlsStream<C>), HandshakeError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = futures_rustls::TlsAcceptor::from(self.server.clone())
            .accept(socket)
            .await
            .map_err(HandshakeError::Tls)?;
        let (_, connection) = stream.get_ref();
        let exporter = export(connection)?;
        let peer = remote_peer(connection)?;
        let mut stream = futures_rustls::TlsStream::Server(stream);
        self.exchange_proofs(&mut stream, Side::Listener, &exporter)
            .await?;
        Ok((peer, stream))
    }

    /// Both sides send first, then check: each learns of a mismatch.
    async fn exchange_proofs<S>(
        &self,
        stream: &mut S,
        side: Side,
        exporter: &[u8; 32],
    ) -> Result<(), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mine = proof(&self.key, side, exporter);
        stream
            .write_all(mine.as_ref())
            .await
            .map_err(HandshakeError::Proof)?;
        stream.flush().await.map_err(HandshakeError::Proof)?;
        let mut theirs = [0u8; PROOF_LEN];
        match stream.read_exact(&mut theirs).await {
            Ok(()) => {}
            Err(e) if super::membership::is_closed(&e) => {
                return Err(HandshakeError::LeftAfterOurMessage);
            }
            Err(e) => return Err(HandshakeError::Proof(e)),
        }
        if !verify(&self.key, side.other(), exporter, &theirs) {
            return Err(HandshakeError::KeyMismatch);
        }
        Ok(())
    }
}

pub type TlsStream<C> = futures_rustls::TlsStream<C>;

fn export<D>(connection: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], HandshakeError> {
    connection
        .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| HandshakeError::Tls(std::io::Error::other(e)))
}

fn remote_peer(connection: &rustls::CommonState) -> Result<PeerId, HandshakeError> {
    let Some([cert]) = connection.peer_certificates() else {
        // The verifiers below refuse anything but exactly one certificate.
        return Err(HandshakeError::Tls(std::io::Error::other(
            "the peer presented no single certificate",
        )));
    };
    certificate::parse(cert)
        .map(|c| c.peer_id())
        .map_err(|e| HandshakeError::Tls(std::io::Error::other(e)))
}

/// aws-lc's TLS 1.3 suites, AES-GCM first when the CPU accelerates it.
fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = if aes_is_accelerated() {
        vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ]
    } else {
        vec![
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ]
    };
    provider
}

fn aes_is_accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// This node's certificate, offered on every handshake.
#[derive(Debug)]
struct OurCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OurCertificate {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OurCertificate {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// libp2p's certificate rules: exactly one self-signed certificate whose
/// extension carries a valid signature by the peer's identity key; handshake
/// signatures by that certificate's key. Which peer is expected is checked by
/// the swarm after the upgrade, as with libp2p-tls.
#[derive(Debug)]
struct Libp2pVerifier;

fn verify_presented(
    end_entity: &CertificateDer,
    intermediates: &[CertificateDer],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "libp2p TLS requires exactly one certificate".into(),
        ));
    }
    certificate::parse(end_entity).map_err(invalid_certificate)?;
    Ok(())
}

fn verify_signature(
    cert: &CertificateDer,
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
) -> Result<HandshakeSignatureValid, rustls::Error> {
    certificate::parse(cert)
        .map_err(invalid_certificate)?
        .verify_signature(scheme, message, signature)
        .map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
    Ok(HandshakeSignatureValid::assertion())
}

fn invalid_certificate(e: certificate::ParseError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The schemes libp2p-tls verifies, most preferred first.
fn verification_schemes() -> Vec<SignatureScheme> {
    vec![
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA512,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA512,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ]
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General("TLS 1.2 is not offered".into()))
}

impl ServerCertVerifier for Libp2pVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _server_name: &ServerName,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_presented(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(cert, dss.scheme, message, dss.signature())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verification_schemes()
    }
}

impl ClientCertVerifier for Libp2pVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_presented(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(cert, dss.scheme, message, dss.signature())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verification_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_bound_to_its_side_its_session_and_the_key() {
        let key = NetworkKey::new([7; 32]);
        let session = [1u8; 32];
        let dialer = proof(&key, Side::Dialer, &session);
        assert!(verify(&key, Side::Dialer, &session, dialer.as_ref()));
        // Reflection: a node's own proof is no answer to itself.
        assert!(!verify(&key, Side::Listener, &session, dialer.as_ref()));
        // Replay or relay: another session's proof does not verify here.
        assert!(!verify(&key, Side::Dialer, &[2u8; 32], dialer.as_ref()));
        // Another key.
        assert!(!verify(
            &NetworkKey::new([8; 32]),
            Side::Dialer,
            &session,
            dialer.as_ref()
        ));
    }

    #[test]
    fn aes_gcm_is_preferred_where_the_cpu_accelerates_it() {
        let first = provider().cipher_suites[0].suite();
        if aes_is_accelerated() {
            assert_eq!(first, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        } else {
            assert_eq!(first, rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        }
    }
}
