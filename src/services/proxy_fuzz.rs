//! Fuzz targets of the service stream's framing, driven into what each side
//! does with a decoded frame (kept out of proxy.rs, which is the byte path): a
//! provider's answer into what the consumer keeps and shows. The consumer's
//! header into the provider's admission needs a real peer: peer/fuzz/.

use proptest::prelude::*;

use super::proxy::{Answer, MAX_HEADER, read_frame};
use crate::fuzzing::{CASES, bytes_like, config, sized};

/// `json` as one frame of the service stream (2-byte length, then the bytes).
pub(crate) fn framed(json: &[u8]) -> Vec<u8> {
    let mut out = (json.len().min(usize::from(u16::MAX)) as u16)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(json);
    out
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config(CASES / 2))]
    /// Answers from providers, into what the consumer makes of them
    /// (`Answer::outcome`): go on, or a reason it keeps as the consumption's
    /// `last_error` and logs: one line without control characters, bounded.
    #[test]
    fn fuzz_service_stream_answers(bytes in prop_oneof![
        4 => bytes_like(vec![
            framed(br#"{"error":null}"#),
            framed(br#"{"error":"'web' is not provided here (any more)"}"#),
            framed(b"{\"error\":\"\\u001b[2J\\u001b]0;pwned\\u0007\\nsecond line\"}"),
        ]),
        1 => (MAX_HEADER - 2..MAX_HEADER + 3).prop_map(|len| framed(&sized(
            |n| format!(r#"{{"error":"{}"}}"#, "\\u001b".repeat(n / 6 + 1)).into_bytes(), len))),
    ]) {
        let Ok(answer) = runtime().block_on(read_frame::<_, Answer>(&mut bytes.as_slice())) else {
            return Ok(());
        };
        match (answer.outcome(), &answer.error) {
            (Ok(()), None) => {}
            (Err(shown), Some(_)) => {
                prop_assert!(!shown.chars().any(char::is_control), "{shown:?}");
                prop_assert!(shown.chars().count() <= crate::node::protocol::MAX_PEER_TEXT + 1);
            }
            (outcome, error) => prop_assert!(false, "{error:?} gave {outcome:?}"),
        }
    }
}
