//! A consume loop across a provider's death: a service that names its provider,
//! and a loop of short requests that records which provider answered and when.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::TestNode;

/// Kills the node of `provider` (peer-a or peer-b, as the whoami server names
/// it) and names the provider left.
pub fn kill_provider(provider: &str, a: &mut TestNode, b: &mut TestNode) -> &'static str {
    match provider {
        "peer-a" => {
            a.kill_hard();
            "peer-b"
        }
        "peer-b" => {
            b.kill_hard();
            "peer-a"
        }
        other => panic!("unexpected provider {other:?}"),
    }
}

/// Answers each connection's first line with "PROVIDER LINE"; listens on `ip`.
pub fn whoami_server(ip: &str, provider: &'static str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = std::io::BufReader::new(&stream);
                if std::io::BufRead::read_line(&mut reader, &mut line).is_ok() {
                    let _ = (&stream).write_all(format!("{provider} {line}").as_bytes());
                }
            });
        }
    });
    port
}

/// One line (at most 256 bytes), without its newline.
pub fn read_line(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        if conn.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// What a consume loop saw across the kill.
pub struct Failover {
    /// Requests sent after the kill, and how many of them failed (with why).
    pub after: usize,
    pub failed: Vec<String>,
    /// Whether every answer after the kill came from the survivor.
    pub only_survivor: bool,
    /// From the kill to the first answer after it.
    pub first_answer: Option<Duration>,
    /// Between the last answer before the kill and the first after it.
    pub gap: Option<Duration>,
    /// The longest time without an answer from the last answer before the kill
    /// on (a request stuck on the dead provider shows here, not in `gap`).
    pub longest_gap: Duration,
    /// Whether the last 20 requests all got answers.
    pub goes_on: bool,
}

impl std::fmt::Display for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failover: {} request(s) after the kill, {} failed; first answer {:?} after the \
             kill; gap between answers across the kill {:?}, longest gap after it {:?} \
             (loop: a new connection every 50 ms); failures: {:?}",
            self.after,
            self.failed.len(),
            self.first_answer,
            self.gap,
            self.longest_gap,
            self.failed
        )
    }
}

/// Runs a loop of requests (a new connection every 50 ms) through the consume
/// listener at `addr:port` for `run` in all; after 2 s, `kill` is given the
/// provider that answered last, kills it and returns the survivor's name.
pub fn consume_loop_across_a_kill(
    addr: &str,
    port: u16,
    run: Duration,
    mut kill: impl FnMut(&str) -> &'static str,
) -> Failover {
    let request = |i: usize| -> std::io::Result<String> {
        let mut conn = TcpStream::connect((addr, port))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        conn.write_all(format!("ping {i}\n").as_bytes())?;
        let reply = read_line(&mut conn)?;
        match reply.strip_suffix(&format!(" ping {i}")) {
            Some(provider) => Ok(provider.to_string()),
            None => Err(std::io::Error::other(format!("bad reply {reply:?}"))),
        }
    };
    let started = Instant::now();
    let mut killed = None;
    let mut answers: Vec<(Instant, Result<String, String>)> = Vec::new();
    for i in 0.. {
        if killed.is_none() && started.elapsed() > Duration::from_secs(2) {
            // Kill the provider that answered last: the one the loop is using.
            let last = answers.iter().rev().find_map(|(_, r)| r.as_ref().ok());
            let Some(last) = last else {
                panic!("no answer in the first 2 s: {answers:?}");
            };
            let survivor = kill(last);
            killed = Some((Instant::now(), survivor));
        }
        if started.elapsed() > run {
            break;
        }
        let answer = request(i).map_err(|e| e.to_string());
        answers.push((Instant::now(), answer));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (killed_at, survivor) = killed.expect("the loop ran past 2 s");
    let after: Vec<&(Instant, Result<String, String>)> =
        answers.iter().filter(|(t, _)| *t >= killed_at).collect();
    // Answers are timed when they arrive; the kill happens between two requests.
    let last_before = answers
        .iter()
        .rev()
        .find(|(t, r)| *t < killed_at && r.is_ok())
        .map(|(t, _)| *t);
    let first_after = after.iter().find(|(_, r)| r.is_ok()).map(|(t, _)| *t);
    let answered: Vec<Instant> = last_before
        .into_iter()
        .chain(after.iter().filter(|(_, r)| r.is_ok()).map(|(t, _)| *t))
        .collect();
    let longest_gap = answered
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    Failover {
        longest_gap,
        after: after.len(),
        failed: after
            .iter()
            .filter_map(|(t, r)| {
                let error = r.as_ref().err()?;
                Some(format!("{:?} after the kill: {error}", *t - killed_at))
            })
            .collect(),
        only_survivor: after
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .all(|p| p == survivor),
        first_answer: first_after.map(|t| t - killed_at),
        gap: first_after.zip(last_before).map(|(a, b)| a - b),
        goes_on: after.len() >= 20 && after.iter().rev().take(20).all(|(_, r)| r.is_ok()),
    }
}
