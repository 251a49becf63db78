//! Fuzz targets of the service stream's framing, driven into what each side
//! does with a decoded frame (kept out of proxy.rs, which is the byte path):
//! a consumer's header into the provider's admission (a real peer on libvirt's
//! test driver, members of each role), a provider's answer into what the
//! consumer keeps and shows.

use proptest::prelude::*;

use super::proxy::{Answer, Hello, MAX_HEADER, read_frame};
use crate::control::Role;
use crate::fuzzing::{CASES, bytes_like, config, sized};
use crate::peer::fuzz::harness;

fn framed(json: &[u8]) -> Vec<u8> {
    let mut out = (json.len().min(usize::from(u16::MAX)) as u16)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(json);
    out
}

/// Headers at the 4 KiB limit: a service name grown to it and just past it.
fn headers_near_the_limit() -> impl Strategy<Value = Vec<u8>> {
    (MAX_HEADER - 2..MAX_HEADER + 3).prop_map(|len| {
        let json = sized(
            |n| format!(r#"{{"service":"{}"}}"#, "x".repeat(n)).into_bytes(),
            len,
        );
        framed(&json)
    })
}

/// Headers built from service names a consumer might send.
fn structured_headers() -> impl Strategy<Value = Vec<u8>> {
    let names = prop_oneof![
        4 => Just(harness().exposed.clone()),
        2 => "[a-z][a-z0-9-]{0,12}",
        1 => "\\PC{0,40}",
        1 => Just(String::new()),
    ];
    (names, any::<bool>()).prop_map(|(service, served_here)| {
        framed(
            &serde_json::to_vec(&Hello {
                service,
                served_here,
            })
            .unwrap(),
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config(CASES / 2))]
    /// Stream headers from consumers, into the provider's admission
    /// (`admit_stream`) for a member of each role: a header over 4 KiB is
    /// refused unread; an observer is refused; a consumer or controller is
    /// admitted exactly to the service this peer exposes (or told it is rate
    /// limited); every refusal, sent back to the consumer, is one line.
    #[test]
    fn fuzz_service_stream_headers(
        bytes in prop_oneof![
            4 => structured_headers(),
            4 => bytes_like(vec![
                framed(br#"{"service":"fuzz-echo"}"#),
                framed(br#"{"service":"web-1","served_here":true}"#),
            ]),
            1 => headers_near_the_limit(),
        ],
        who in 0..3usize,
    ) {
        let h = harness();
        let Ok(hello) = runtime().block_on(read_frame::<_, Hello>(&mut bytes.as_slice())) else {
            return Ok(());
        };
        prop_assert!(bytes.len() <= 2 + MAX_HEADER, "a {} byte frame decoded", bytes.len());
        let (role, from) = h.members[who];
        let admitted = h.rt.block_on(async {
            h.peer.admit_stream(from, &hello.service).await.map(|(s, _)| s.spec.name)
        });
        match admitted {
            Ok(name) => {
                prop_assert!(role >= Role::Consume, "a {role} member was admitted");
                prop_assert_eq!(&name, &hello.service);
                prop_assert_eq!(&name, &h.exposed);
            }
            Err(reason) => {
                prop_assert!(!reason.contains('\n'), "{reason:?}");
                let expected = if role < Role::Consume {
                    reason.contains("may not consume")
                } else {
                    hello.service != h.exposed || reason.starts_with("rate limit")
                };
                prop_assert!(expected, "a {role} member asking for {:?}: {reason}", hello.service);
            }
        }
    }

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
