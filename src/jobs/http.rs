//! A minimal HTTP/1.1 GET client for the job sources' REST APIs, over tokio's
//! TcpStream. Hand-written rather than a dependency: these are plain GETs of small
//! JSON documents from http:// URLs (no TLS, no keep-alive), and the project has
//! no HTTP client yet; ureq or reqwest would add a TLS stack for nothing.
//! Handles Content-Length, chunked bodies and read-until-close; every call has
//! one overall deadline.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bodies above this are refused (a REST listing of jobs is kilobytes).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// `http://host[:port][/base]`, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub base: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl> {
        let rest = url
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| anyhow!("{url:?}: bad port {p:?}"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            bail!("{url:?}: no host");
        }
        Ok(BaseUrl {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            base: path.trim_end_matches('/').to_string(),
        })
    }

    pub fn display(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.base)
    }
}

/// What a GET returned.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// GET `base + path`; the whole exchange must finish within `timeout`.
pub async fn get(url: &BaseUrl, path: &str, timeout: Duration) -> Result<Response> {
    let full = format!("{}{}", url.display(), path);
    tokio::time::timeout(timeout, exchange(url, path))
        .await
        .map_err(|_| anyhow!("GET {full}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET {full}"))
}

/// GET and decode JSON; a non-200 status or bad JSON is an error naming the URL.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    url: &BaseUrl,
    path: &str,
    timeout: Duration,
) -> Result<T> {
    let r = get(url, path, timeout).await?;
    if r.status != 200 {
        bail!("GET {}{path}: HTTP {}", url.display(), r.status);
    }
    serde_json::from_slice(&r.body)
        .map_err(|e| anyhow!("GET {}{path}: malformed JSON: {e}", url.display()))
}

async fn exchange(url: &BaseUrl, path: &str) -> Result<Response> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let request = format!(
        "GET {}{} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/json\r\nUser-Agent: peervisor\r\nConnection: close\r\n\r\n",
        url.base, path, url.host, url.port
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_BODY {
            bail!("reply larger than {MAX_BODY} bytes");
        }
        if let Some(done) = complete(&raw)? {
            return Ok(done);
        }
    }
    parse(&raw, true)?.ok_or_else(|| anyhow!("connection closed before the reply was complete"))
}

/// The reply once `raw` holds all of it (by Content-Length or chunked framing).
fn complete(raw: &[u8]) -> Result<Option<Response>> {
    parse(raw, false)
}

/// Parses a reply; `closed`: the server closed the connection (ends an unframed body).
fn parse(raw: &[u8], closed: bool) -> Result<Option<Response>> {
    let Some(head_end) = find(raw, b"\r\n\r\n") else {
        return if closed {
            Err(anyhow!("malformed HTTP reply (no header end)"))
        } else {
            Ok(None)
        };
    };
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| anyhow!("non-UTF-8 HTTP header"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .filter(|_| status_line.starts_with("HTTP/1."))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| anyhow!("bad Content-Length {v:?}"))?,
            );
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let body = &raw[head_end + 4..];
    if chunked {
        return Ok(dechunk(body)?.map(|body| Response { status, body }));
    }
    match length {
        Some(n) if body.len() >= n => Ok(Some(Response {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) if closed => Err(anyhow!("connection closed mid-body")),
        Some(_) => Ok(None),
        None if closed => Ok(Some(Response {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

/// The decoded body once the last (zero) chunk arrived.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|_| anyhow!("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        if size > MAX_BODY {
            bail!("chunk of {size} bytes is larger than a reply may be");
        }
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_clear_errors() {
        let u = BaseUrl::parse("http://rm.example:8088/gateway/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("rm.example", 8088, "/gateway")
        );
        assert_eq!(BaseUrl::parse("http://10.0.0.1").unwrap().port, 80);
        assert!(
            BaseUrl::parse("https://x")
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        assert!(
            BaseUrl::parse("http://x:notaport")
                .unwrap_err()
                .to_string()
                .contains("bad port")
        );
    }

    #[test]
    fn replies_are_framed_by_length_chunks_or_close() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", false)
                .unwrap()
                .is_none()
        );
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n";
        assert_eq!(parse(c, false).unwrap().unwrap().body, b"hi!!!");
        let r = parse(b"HTTP/1.0 404 Not Found\r\n\r\ngone", true)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"gone"[..]));
        assert!(parse(b"garbage\r\n\r\n", true).is_err());
    }

    #[test]
    fn huge_chunk_size_is_an_error_not_an_overflow() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx";
        let err = parse(raw, false).unwrap_err().to_string();
        assert!(err.contains("chunk"), "{err}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, bytes_like, config};
        use proptest::prelude::*;

        fn valid() -> Vec<Vec<u8>> {
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"apps\":{}}".to_vec(),
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1,2]\r\n0\r\n\r\n"
                    .to_vec(),
                b"HTTP/1.0 404 Not Found\r\n\r\nnope".to_vec(),
            ]
        }

        proptest! {
            #![proptest_config(config(CASES))]
            /// Replies of YARN and Spark REST servers (any HTTP server on the network).
            #[test]
            fn fuzz_http_reply(raw in bytes_like(valid()), closed in any::<bool>()) {
                if let Ok(Some(r)) = parse(&raw, closed) {
                    prop_assert!(r.body.len() <= raw.len());
                }
            }
        }
    }
}
