//! Fuzz targets of the control socket (moved here from control/ because they
//! drive a real peer, and only `peer` may import every feature): request lines
//! through the real control server and line reader into `Peer::handle`, at
//! sizes up to and past the 8 MiB line limit.

use proptest::prelude::*;

use super::{harness, names};
use crate::api::{Reply, Request, Role};
use crate::control::tests::{read_all_lines, wire_examples};
use crate::control::{Line, MAX_LINE, Outcome, server};
use crate::fuzzing::{CASES, bytes_like, config};
use crate::model::ServiceSpec;

fn valid_requests() -> Vec<Vec<u8>> {
    let (requests, _) = wire_examples();
    requests
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect()
}

/// Requests built field by field (names as a confused or hostile
/// caller might type them), one JSON line each.
fn structured_requests() -> impl Strategy<Value = Vec<u8>> {
    let foreign = any::<bool>();
    let spec = (
        names(),
        names(),
        any::<u16>(),
        proptest::option::of(0u32..3),
    )
        .prop_map(|(name, kind, port, max_conns)| ServiceSpec {
            name: name.into(),
            kind,
            port,
            tags: Vec::new(),
            max_conns,
            allow: Vec::new(),
        });
    let create = (
        names(),
        prop_oneof![Just(0u32), 1u32..4, any::<u32>()],
        prop_oneof![Just(0u64), 1u64..512, any::<u64>()],
        prop_oneof![Just("default".to_string()), names()],
        proptest::collection::vec(spec, 0..3),
        proptest::option::of(prop_oneof![Just(0u64), 1u64..256, any::<u64>()]),
        proptest::option::of(names()),
    )
        .prop_map(
            |(name, vcpus, memory_mib, image, services, data_disk_mib, disk)| Request::VmCreate {
                name: name.into(),
                vcpus,
                memory_mib,
                image,
                services,
                data_disk_mib,
                nic: None,
                no_overlay: disk.is_some(),
                user_data: None,
                disk,
            },
        );
    // The test driver's own domain is "test": not ours, so foreign.
    let vm = prop_oneof![Just("test".to_string()), names()];
    let lifecycle = (0..7usize, vm, foreign).prop_map(|(op, name, foreign)| match op {
        5 => Request::VmAdopt {
            name: name.into(),
            services: Vec::new(),
        },
        6 => Request::VmRelease { name: name.into() },
        0 => Request::VmStart {
            name: name.into(),
            foreign,
        },
        1 => Request::VmPause {
            name: name.into(),
            foreign,
        },
        2 => Request::VmResume {
            name: name.into(),
            foreign,
        },
        3 => Request::VmRemove {
            name: name.into(),
            foreign,
        },
        _ => Request::VmStop {
            name: name.into(),
            force: true,
            timeout_s: None,
            foreign,
        },
    });
    let targets = prop_oneof![
        Just("127.0.0.1:9".to_string()),
        Just("[::1]:9".to_string()),
        Just("localhost:0".to_string()),
        names(),
    ];
    let expose = (
        names(),
        targets,
        proptest::option::of(names()),
        proptest::option::of(0u32..3),
    )
        .prop_map(|(name, target, kind, max_conns)| Request::Expose {
            name: name.into(),
            target,
            kind,
            allow: Vec::new(),
            max_conns,
        });
    let consume = (
        prop_oneof![Just("fuzz-echo".to_string()), names()],
        proptest::option::of(prop_oneof![Just(0u16), Just(1u16), any::<u16>()]),
        proptest::option::of(prop_oneof![
            Just("127.0.0.1".to_string()),
            Just("0.0.0.0".to_string()),
            names()
        ]),
    )
        .prop_map(|(service, local_port, bind)| Request::Consume {
            service: service.into(),
            local_port,
            bind,
        });
    let role = prop_oneof![
        Just(Role::Observe),
        Just(Role::Consume),
        Just(Role::Control)
    ];
    let peers = (names(), role, any::<bool>()).prop_map(|(peer, role, allow)| {
        if allow {
            Request::PeersAllow {
                peer: peer.into(),
                role,
            }
        } else {
            Request::PeersForget { peer: peer.into() }
        }
    });
    let simple = prop_oneof![
        Just(Request::Status),
        Just(Request::VmList),
        Just(Request::Services),
        Just(Request::PeersList),
        names().prop_map(|name| Request::VmStats { name: name.into() }),
        names().prop_map(|vm| Request::MigrateAbort { vm: vm.into() }),
        names().prop_map(|service| Request::Unconsume {
            service: service.into()
        }),
        names().prop_map(|name| Request::Unexpose { name: name.into() }),
    ];
    prop_oneof![create, lifecycle, expose, consume, peers, simple].prop_map(|r| {
        let mut line = serde_json::to_vec(&r).unwrap();
        line.push(b'\n');
        line
    })
}

/// Sends `input` on a fresh connection to a real control server whose
/// handler is a real peer's (`Peer::handle`, libvirt's test driver);
/// returns the reply lines and whether the server closed the connection.
/// Requests that wait on the network (find, migrate, replicate) or on a
/// guest (a graceful stop) get a stand-in answer: their arguments are
/// checked by other tests.
fn serve_once(input: &[u8]) -> (Vec<Vec<u8>>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness();
    h.rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = server::bind(&path).await.unwrap();
        let peer = h.peer.clone();
        let handler = std::sync::Arc::new(move |request: Request| {
            let peer = peer.clone();
            async move {
                match request {
                    Request::Find { .. }
                    | Request::Migrate { .. }
                    | Request::Replicate { .. }
                    | Request::VmStop { force: false, .. } => Ok(Reply::Done {
                        message: "not run by the fuzz target".into(),
                    }),
                    request => peer.handle(request).await,
                }
                .map(server::Answer::Reply)
            }
        });
        let serving = tokio::spawn(server::serve(listener, handler));
        let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (mut read, mut write) = stream.split();
        // The server may stop reading (a line over the limit): the
        // write may then fail, the replies still come.
        let sent = async {
            let _ = write.write_all(input).await;
            let _ = write.shutdown().await;
        };
        let mut replies = Vec::new();
        let got = async { read.read_to_end(&mut replies).await };
        let limit = std::time::Duration::from_secs(30);
        let (_, got) = tokio::time::timeout(limit, async { tokio::join!(sent, got) })
            .await
            .expect("the control server answered within 30 s");
        serving.abort();
        let closed = got.is_ok();
        let lines = replies
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        (lines, closed)
    })
}

/// Request lines at the 8 MiB limit: a valid request with a field grown
/// to the limit and just past it, newline-terminated or not.
fn lines_near_the_limit() -> impl Strategy<Value = Vec<u8>> {
    (MAX_LINE - 1..MAX_LINE + 2, any::<bool>()).prop_map(|(len, newline)| {
        let mut line = crate::fuzzing::sized(
            |n| {
                let name = "x".repeat(n);
                serde_json::to_vec(&Request::VmStats { name: name.into() }).unwrap()
            },
            len,
        );
        if newline {
            line.push(b'\n');
        }
        line
    })
}

/// What the server must answer to the lines in `input`.
fn check_replies(input: &[u8], replies: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let lines = read_all_lines(input);
    for reply in replies {
        let outcome = serde_json::from_slice::<Outcome>(reply);
        prop_assert!(outcome.is_ok(), "{:?}", String::from_utf8_lossy(reply));
    }
    // One reply per line, up to and including a line over the limit,
    // which is the last one answered.
    prop_assert_eq!(replies.len(), lines.len(), "{} lines", lines.len());
    if lines.last() == Some(&Line::TooLong) {
        let last = String::from_utf8_lossy(replies.last().unwrap()).into_owned();
        prop_assert!(last.contains("request too large"), "{last}");
    }
    for (line, reply) in lines.iter().zip(replies) {
        if let Line::Text(text) = line
            && let Err(e) = server::decode_request(text)
        {
            let told = serde_json::from_slice::<Outcome>(reply).unwrap();
            prop_assert_eq!(told, Outcome::Error(e));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES / 5))]
    /// Request lines on the control socket, through the real server and
    /// line reader into a real peer's handler: every line is answered
    /// with one decodable reply (the decoder's error for a malformed
    /// one), whatever the handler makes of it; the server and the peer
    /// survive every request.
    #[test]
    fn fuzz_control_socket_request(bytes in prop_oneof![
        structured_requests(),
        bytes_like(valid_requests()),
    ]) {
        let (replies, _) = serve_once(&bytes);
        check_replies(&bytes, &replies)?;
    }
}

proptest! {
    // 8 whatever PROPTEST_CASES says: each case is 8 MiB.
    #![proptest_config(proptest::test_runner::Config { cases: 8, ..config(8) })]
    /// The same at the 8 MiB line limit (each case sends 8 MiB): a line
    /// of exactly the limit is decoded and answered; one byte more is
    /// answered "request too large" and the connection ends.
    #[test]
    fn fuzz_control_socket_at_the_limit(bytes in lines_near_the_limit()) {
        let (replies, closed) = serve_once(&bytes);
        check_replies(&bytes, &replies)?;
        prop_assert!(closed);
        let over = bytes.len() - usize::from(bytes.last() == Some(&b'\n')) > MAX_LINE;
        let told = String::from_utf8_lossy(&replies[0]).into_owned();
        prop_assert_eq!(over, told.contains("request too large"), "{}", told);
    }
}
