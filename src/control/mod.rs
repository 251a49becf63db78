//! The local control API: a running node (console or headless) serves a unix
//! socket in its data dir; the CLI and an attached console send it requests.
//! One JSON object per line each way.

pub mod client;
#[cfg(test)]
mod json_shape;
pub mod server;

// The vocabulary lives in `api` (the console builds requests too); it is the
// control API's, so it is named here as well.
pub use crate::api::{MigrationReport, ReplicationReport, Reply, Request, Role};

use serde::{Deserialize, Serialize};

/// What travels back: a reply or a one-line error for the operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Reply),
    Error(String),
}

/// Largest request or reply line accepted (a status with many VMs stays far below).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// One line read from a control connection.
#[derive(Debug, PartialEq)]
pub enum Line {
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE`]: the rest is not read (the connection is done).
    TooLong,
    Eof,
}

/// Reads one line, never buffering more than [`MAX_LINE`] bytes of it.
pub async fn read_line<R>(reader: &mut R) -> std::io::Result<Line>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(buf))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::ServiceSpec;

    /// Every line `bytes` holds, as the server's reader splits them.
    pub(crate) fn read_all_lines(bytes: &[u8]) -> Vec<Line> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = tokio::io::BufReader::new(bytes);
            let mut out = Vec::new();
            loop {
                match read_line(&mut reader).await.unwrap() {
                    Line::Eof => return out,
                    Line::TooLong => {
                        out.push(Line::TooLong);
                        return out;
                    }
                    line => out.push(line),
                }
            }
        })
    }

    #[test]
    fn lines_are_split_and_bounded() {
        let lines = read_all_lines(b"a\nbc\n\nlast");
        let texts: Vec<Line> = ["a", "bc", "", "last"]
            .iter()
            .map(|t| Line::Text(t.as_bytes().to_vec()))
            .collect();
        assert_eq!(lines, texts);
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(read_all_lines(&long), vec![Line::TooLong]);
        let mut exact = vec![b'x'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(read_all_lines(&exact).len(), 1);
    }

    /// Every request the CLI and the console send, and the replies they read,
    /// as bytes on the socket: the wire format must not move when the types do.
    pub(crate) fn wire_examples() -> (Vec<Request>, Vec<Outcome>) {
        let requests = vec![
            Request::Status,
            Request::VmList,
            Request::VmCreate {
                name: "web-2".into(),
                vcpus: 1,
                memory_mib: 128,
                image: "default".into(),
                services: vec![ServiceSpec {
                    name: "site".into(),
                    kind: "http".into(),
                    port: 80,
                    ..ServiceSpec::default()
                }],
                data_disk_mib: Some(64),
                nic: None,
                disk: None,
                no_overlay: false,
                user_data: None,
            },
            Request::VmStart {
                name: "a".into(),
                foreign: false,
            },
            Request::VmStop {
                name: "a".into(),
                force: false,
                timeout_s: None,
                foreign: false,
            },
            Request::VmPause {
                name: "a".into(),
                foreign: true,
            },
            Request::VmResume {
                name: "a".into(),
                foreign: false,
            },
            Request::VmRemove {
                name: "a".into(),
                foreign: false,
            },
            Request::VmStats { name: "a".into() },
            Request::VmBootLog { name: "a".into() },
            Request::Migrate {
                vm: "web-1".into(),
                to: "peer-b".into(),
                max_downtime_ms: Some(300),
                bandwidth_mib_s: None,
                foreign: false,
                detach: true,
            },
            Request::MigrateAbort { vm: "web-1".into() },
            Request::Replicate {
                vm: "web-1".into(),
                to: "peer-b".into(),
                name: None,
                detach: false,
            },
            Request::Services,
            Request::Find { name: "web".into() },
            Request::Consume {
                service: "web".into(),
                local_port: Some(8080),
                bind: None,
            },
            Request::Unconsume {
                service: "web".into(),
            },
            Request::Expose {
                name: "pg".into(),
                target: "127.0.0.1:5432".into(),
                kind: None,
                allow: Vec::new(),
                max_conns: None,
            },
            Request::Unexpose { name: "pg".into() },
            Request::PeersAllow {
                peer: "peer-b".into(),
                role: Role::Control,
            },
            Request::PeersForget {
                peer: "peer-b".into(),
            },
            Request::PeersList,
        ];
        let outcomes = vec![
            Outcome::Ok(Reply::Status(Box::default())),
            Outcome::Ok(Reply::Done {
                message: "ok".into(),
            }),
            Outcome::Ok(Reply::MigrationStarted {
                vm: "web-1".into(),
                to: "peer-b".into(),
                operation: 3,
            }),
            Outcome::Ok(Reply::Migrated(MigrationReport {
                vm: "web-1".into(),
                from: "peer-a".into(),
                to: "peer-b".into(),
                to_peer_id: "12D3KooWB".into(),
                seconds: 1.5,
                downtime_ms: Some(90),
                transferred_bytes: None,
                disk_bytes: None,
                probe_downtime_ms: Some(120),
                transport: Some("direct (forced by --migration-transport)".into()),
            })),
            Outcome::Ok(Reply::Grants {
                grants: vec![("12D3Koo".into(), "control".into())],
                default_role: "consume".into(),
            }),
            Outcome::Ok(Reply::BootLog(crate::api::BootLog {
                vm: "a".into(),
                host: "peer-b".into(),
                path: "/var/lib/peervisor/console/a.log".into(),
                size: 6,
                text: "ready\n".into(),
            })),
            Outcome::Error("no such VM".into()),
        ];
        (requests, outcomes)
    }

    #[test]
    fn the_control_socket_json_stays_byte_identical() {
        let (requests, outcomes) = wire_examples();
        let lines: Vec<String> = requests
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .chain(outcomes.iter().map(|o| serde_json::to_string(o).unwrap()))
            .collect();
        let expected = include_str!("wire_examples.jsonl");
        assert_eq!(lines.join("\n") + "\n", expected);
        // ... and each line reads back as what was written.
        for (r, line) in requests.iter().zip(&lines) {
            assert_eq!(&serde_json::from_str::<Request>(line).unwrap(), r);
        }
        for (o, line) in outcomes.iter().zip(&lines[requests.len()..]) {
            assert_eq!(&serde_json::from_str::<Outcome>(line).unwrap(), o);
        }
    }
}
