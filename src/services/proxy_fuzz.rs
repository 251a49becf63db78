//! Fuzz target of the service stream's framing (kept out of proxy.rs, which is
//! the byte path).

use proptest::prelude::*;

use super::proxy::{Answer, Hello, read_frame};
use crate::fuzzing::{CASES, bytes_like, config};

fn framed(json: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(json);
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config(CASES))]
    /// Stream headers from consumers (provider side) and answers from providers
    /// (consumer side); a short input ends in EOF, never a wait.
    #[test]
    fn fuzz_service_stream_frames(bytes in bytes_like(vec![
        framed(br#"{"service":"web-1"}"#),
        framed(br#"{"error":null}"#),
        framed(br#"{"error":"'web' is not provided here (any more)"}"#),
    ])) {
        let rt = runtime();
        rt.block_on(async {
            if let Err(e) = read_frame::<_, Hello>(&mut bytes.as_slice()).await {
                assert!(!format!("{e:#}").is_empty());
            }
            let _ = read_frame::<_, Answer>(&mut bytes.as_slice()).await;
        });
    }
}
