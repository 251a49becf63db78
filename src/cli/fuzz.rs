//! Fuzz target of the reply lines the CLI (and an attached console) reads from
//! a node's control socket, through the real client (`ControlClient::call`:
//! bounded line reader, decoding) into the plain-text output the commands
//! print. The node is this operator's own; its figures come from other peers.

use proptest::prelude::*;

use crate::control::client::ControlClient;
use crate::control::{MAX_LINE, Outcome, Reply, Request};
use crate::fuzzing::{CASES, bytes_like, config, sized};
use crate::model::{ServiceView, Status, VmView};

fn valid_outcomes() -> Vec<Vec<u8>> {
    let status = Status {
        vms: vec![VmView {
            name: "web-1".into(),
            ..VmView::default()
        }],
        services: vec![ServiceView {
            name: "web".into(),
            ..ServiceView::default()
        }],
        ..Status::default()
    };
    [
        Outcome::Ok(Reply::Done {
            message: "ok".into(),
        }),
        Outcome::Error("no such VM".into()),
        Outcome::Ok(Reply::Status(Box::new(status))),
        Outcome::Ok(Reply::Vms {
            vms: vec![VmView::default()],
        }),
        Outcome::Ok(Reply::Grants {
            grants: vec![("12D3Koo".into(), "control".into())],
            default_role: "consume".into(),
        }),
    ]
    .iter()
    .map(|o| serde_json::to_vec(o).unwrap())
    .collect()
}

/// Replies at the 8 MiB line limit: an error message grown to it and past it.
fn replies_near_the_limit() -> impl Strategy<Value = Vec<u8>> {
    (MAX_LINE - 1..MAX_LINE + 2).prop_map(|len| {
        sized(
            |n| serde_json::to_vec(&Outcome::Error("x".repeat(n))).unwrap(),
            len,
        )
    })
}

/// A node that answers any request with `reply` (a newline added), then closes.
fn call_with_reply(reply: Vec<u8>) -> anyhow::Result<Reply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let node = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(&reply).await;
            let _ = stream.write_all(b"\n").await;
        });
        let reply = ControlClient::new(&path).call(&Request::Status).await;
        node.abort();
        reply
    })
}

/// Whatever the line, the client answers a reply or an error, never a panic;
/// a reply over 8 MiB is an error saying so; what decodes is printed by the
/// commands' own text functions without a panic.
fn check_reply(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let over = bytes.len() > MAX_LINE;
    match call_with_reply(bytes) {
        Err(e) => {
            let e = format!("{e:#}");
            prop_assert!(!over || e.contains("too large"), "{e}");
        }
        Ok(reply) => {
            prop_assert!(!over, "a reply over the limit was read");
            match reply {
                Reply::Status(status) => {
                    let _ = super::status::status_text(&status);
                    let _ = super::top::table(&status.vms);
                    let _ = super::services::services_text(&status.services);
                }
                Reply::Vms { vms } => {
                    let _ = super::vm::vms_text(&vms);
                    for vm in &vms {
                        let _ = super::top::stats_line(vm);
                    }
                }
                Reply::Services { services } => {
                    let _ = super::services::services_text(&services);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES / 5))]
    #[test]
    fn fuzz_control_socket_reply(bytes in bytes_like(valid_outcomes())) {
        check_reply(bytes)?;
    }
}

proptest! {
    // 8 whatever PROPTEST_CASES says: each case is 8 MiB.
    #![proptest_config(proptest::test_runner::Config { cases: 8, ..config(8) })]
    #[test]
    fn fuzz_control_socket_reply_at_the_limit(bytes in replies_near_the_limit()) {
        check_reply(bytes)?;
    }
}
