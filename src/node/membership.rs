//! Overlay membership: before anything else on a connection, both sides prove they
//! hold the network key, without revealing it: each sends a fresh nonce, then an
//! HMAC-SHA256 of both nonces under the key. A peer without the key is refused with
//! a clear "network key mismatch" before noise even starts.
//!
//! Why not libp2p's pnet: pnet encrypts every byte a second time (XSalsa20 under
//! noise's ChaCha20-Poly1305); measured, it was the largest cost in the consume
//! proxy and migration paths. Noise already encrypts and authenticates; membership
//! only needs proof of the key. The key file keeps pnet's swarm.key format.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use sha2::{Digest, Sha256};

use super::identity::NetworkKey;

const MAGIC: &[u8; 8] = b"pvmembr1";
const CONTEXT: &[u8] = b"peervisor overlay membership v1";

/// Runs the proof both ways; the socket is returned untouched for noise.
pub async fn prove<S>(mut socket: S, key: NetworkKey) -> io::Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mine: [u8; 32] = rand::random();
    let mut hello = [0u8; 40];
    hello[..8].copy_from_slice(MAGIC);
    hello[8..].copy_from_slice(&mine);
    socket.write_all(&hello).await?;
    socket.flush().await?;

    let mut theirs_hello = [0u8; 40];
    socket.read_exact(&mut theirs_hello).await?;
    if &theirs_hello[..8] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a peervisor peer (or an incompatible version)",
        ));
    }
    let theirs: [u8; 32] = theirs_hello[8..].try_into().expect("32 bytes");

    socket.write_all(&proof(&key, &mine, &theirs)).await?;
    socket.flush().await?;
    let mut their_proof = [0u8; 32];
    socket.read_exact(&mut their_proof).await?;
    if !constant_time_eq(&their_proof, &proof(&key, &theirs, &mine)) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "network key mismatch",
        ));
    }
    Ok(socket)
}

/// What the side that chose `sender_nonce` must send.
fn proof(key: &NetworkKey, sender_nonce: &[u8; 32], receiver_nonce: &[u8; 32]) -> [u8; 32] {
    let mut message = Vec::with_capacity(CONTEXT.len() + 64);
    message.extend_from_slice(CONTEXT);
    message.extend_from_slice(sender_nonce);
    message.extend_from_slice(receiver_nonce);
    hmac_sha256(key.bytes(), &message)
}

/// HMAC-SHA256 (RFC 2104) for a 32-byte key.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_style_vector() {
        // RFC 4231 test case 1 uses a 20-byte key; padded with zeros to 32 bytes the
        // HMAC is the same, since HMAC zero-pads short keys to the block size.
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    async fn run(a: NetworkKey, b: NetworkKey) -> (io::Result<()>, io::Result<()>) {
        let (x, y) = futures_ringbuf_pair();
        let (ra, rb) = futures::join!(prove(x, a), prove(y, b));
        (ra.map(|_| ()), rb.map(|_| ()))
    }

    fn futures_ringbuf_pair() -> (
        tokio_util::compat::Compat<tokio::io::DuplexStream>,
        tokio_util::compat::Compat<tokio::io::DuplexStream>,
    ) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (x, y) = tokio::io::duplex(1024);
        (x.compat(), y.compat())
    }

    #[tokio::test]
    async fn same_key_passes_and_a_different_key_is_refused_on_both_sides() {
        let key = NetworkKey::new([7; 32]);
        let (a, b) = run(key, key).await;
        assert!(a.is_ok() && b.is_ok());
        let (a, b) = run(key, NetworkKey::new([8; 32])).await;
        assert_eq!(a.unwrap_err().to_string(), "network key mismatch");
        assert_eq!(b.unwrap_err().to_string(), "network key mismatch");
    }

    /// The other side of a connection that sends `input` and then closes.
    struct Scripted {
        input: futures::io::Cursor<Vec<u8>>,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, bytes_like, config};
        use proptest::prelude::*;

        fn valid_hello() -> Vec<u8> {
            let mut hello = MAGIC.to_vec();
            hello.extend_from_slice(&[9u8; 32]);
            hello.extend_from_slice(&[3u8; 32]); // a proof (wrong: nonces differ)
            hello
        }

        proptest! {
            #![proptest_config(config(CASES))]
            /// The first bytes of every incoming connection, before any other check.
            #[test]
            fn fuzz_membership_proof(bytes in bytes_like(vec![valid_hello()])) {
                let peer = Scripted { input: futures::io::Cursor::new(bytes) };
                let result = futures::executor::block_on(prove(peer, NetworkKey::new([7; 32])));
                let err = result.err().expect("random bytes cannot prove the key");
                let text = err.to_string();
                prop_assert!(
                    text == "network key mismatch"
                        || text.starts_with("not a peervisor peer")
                        || err.kind() == io::ErrorKind::UnexpectedEof,
                    "{text}"
                );
            }
        }
    }
}
