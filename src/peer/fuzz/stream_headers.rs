//! Fuzz target of the service stream's header, driven into the provider's
//! admission (`Services::admit_stream`) on a real peer with members of each
//! role (here, not in services/, because it needs the peer harness).

use proptest::prelude::*;

use super::harness;
use crate::api::Role;
use crate::fuzzing::{CASES, bytes_like, config, sized};
use crate::services::proxy::{Hello, MAX_HEADER, read_frame};
use crate::services::proxy_fuzz::{framed, runtime};

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
            h.peer.services().admit_stream(from, &hello.service).await.map(|(s, _)| s.spec.name.to_string())
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
}
