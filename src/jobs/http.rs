//! The job sources' HTTP client: reqwest (rustls, a maintained client) with
//! what real clusters need: https with the cluster's own CA (`ca=FILE`),
//! bounded redirects (an HA standby ResourceManager redirects to the active
//! one, a Spark UI under YARN to the RM proxy), gzip, an overall deadline per
//! request ("timeout after N s"), a cap on a reply's size (read as it
//! streams in), and alternatives (`standby=URL`: RM HA as two URLs, the one
//! that last answered asked first). SPNEGO (Kerberos) is not supported: an
//! `auth=spnego` source is refused with that said.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

// reqwest's errors hide the TLS or connection reason a level or two down.
use crate::node::error_chain;

/// Replies above this are refused (a filtered REST listing is kilobytes).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// Options of a source's endpoint, from its `--yarn`/`--spark` argument.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointOptions {
    /// PEM file of the CA that signed the cluster's certificates (added to
    /// none other: a cluster's own CA is the point).
    pub ca_file: Option<String>,
    /// Further URLs of the same service (an HA standby ResourceManager).
    pub alternatives: Vec<String>,
}

impl EndpointOptions {
    /// Takes the option `key=value` if it is one of the endpoint's; false if not.
    pub fn take(&mut self, key: &str, value: &str) -> Result<bool> {
        match key {
            "ca" => self.ca_file = Some(value.to_string()),
            "standby" => self.alternatives.push(value.to_string()),
            "auth"
                if value.eq_ignore_ascii_case("spnego")
                    || value.eq_ignore_ascii_case("kerberos") =>
            {
                bail!(
                    "auth={value}: SPNEGO (Kerberos) is not supported by peervisor; poll through a proxy that authenticates, or a UI without Kerberos"
                )
            }
            "auth" => bail!("auth={value}: unknown (only SPNEGO exists, and it is not supported)"),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A source's `--FLAG URL[,history=URL][,standby=URL][,ca=FILE][,auth=...]`
/// argument taken apart: its URL, endpoint options and history server.
pub struct SourceArg {
    pub base: BaseUrl,
    /// The history server, with the same CA and no standby.
    pub history: Option<BaseUrl>,
}

impl SourceArg {
    /// `expected` lists the options the flag takes, for the error on others.
    pub fn parse(flag: &str, arg: &str, expected: &str) -> Result<SourceArg> {
        let mut parts = arg.split(',');
        let url = parts.next().unwrap_or("");
        let mut options = EndpointOptions::default();
        let mut history = None;
        for p in parts {
            let (key, value) = p.split_once('=').unwrap_or((p, ""));
            if key == "history" {
                history = Some(value.to_string());
            } else if !options
                .take(key, value)
                .with_context(|| format!("{flag} {arg:?}"))?
            {
                bail!("{flag} {arg:?}: unknown option {p:?} (expected {expected})");
            }
        }
        let base = BaseUrl::with_options(url, &options)?;
        let history_options = EndpointOptions {
            alternatives: Vec::new(),
            ..options
        };
        let history = history
            .map(|h| BaseUrl::with_options(&h, &history_options))
            .transpose()
            .with_context(|| format!("{flag} {arg:?}: history"))?;
        Ok(SourceArg { base, history })
    }
}

/// A service's base URL(s) (`http(s)://host[:port][/base]`), with the client
/// that asks them.
#[derive(Debug, Clone)]
pub struct BaseUrl {
    urls: Vec<String>,
    /// Index of the URL that answered last.
    active: Arc<AtomicUsize>,
    client: reqwest::Client,
}

impl PartialEq for BaseUrl {
    fn eq(&self, other: &Self) -> bool {
        self.urls == other.urls
    }
}

impl BaseUrl {
    /// One URL with the default options.
    #[cfg(test)]
    pub fn parse(url: &str) -> Result<BaseUrl> {
        BaseUrl::with_options(url, &EndpointOptions::default())
    }

    pub fn with_options(url: &str, options: &EndpointOptions) -> Result<BaseUrl> {
        let mut urls = vec![check_url(url)?];
        for alt in &options.alternatives {
            urls.push(check_url(alt)?);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent("peervisor")
            .connect_timeout(Duration::from_secs(5))
            .use_rustls_tls();
        if let Some(ca) = &options.ca_file {
            builder = builder.add_root_certificate(load_ca(Path::new(ca))?);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(BaseUrl {
            urls,
            active: Arc::default(),
            client,
        })
    }

    /// The URL asked first (the one that answered last).
    pub fn display(&self) -> String {
        self.urls[self.active.load(Ordering::Relaxed) % self.urls.len()].clone()
    }
}

fn check_url(url: &str) -> Result<String> {
    let url = url.trim();
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("{url:?}: only http:// and https:// URLs are supported");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        bail!("{url:?}: no host");
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn load_ca(path: &Path) -> Result<reqwest::Certificate> {
    let pem = std::fs::read(path).with_context(|| format!("ca={}", path.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| anyhow!("ca={}: not a PEM certificate: {e}", path.display()))
}

/// What a GET returned.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// GET `base + path` (`path` may carry a query), each URL in turn from the
/// one that answered last; the whole exchange with one URL must finish
/// within `timeout`.
pub async fn get(url: &BaseUrl, path: &str, timeout: Duration) -> Result<Response> {
    let first = url.active.load(Ordering::Relaxed);
    let mut errors = Vec::new();
    let mut unreachable = true;
    for k in 0..url.urls.len() {
        let i = (first + k) % url.urls.len();
        let full = format!("{}{path}", url.urls[i]);
        match tokio::time::timeout(timeout, exchange(&url.client, &full)).await {
            Ok(Ok(response)) => {
                url.active.store(i, Ordering::Relaxed);
                return Ok(response);
            }
            Ok(Err(e)) => {
                unreachable &= e.is::<Unreachable>();
                errors.push(format!("GET {full}: {e:#}"));
            }
            Err(_) => {
                unreachable = false;
                errors.push(format!(
                    "GET {full}: timeout after {} s",
                    timeout.as_secs_f64()
                ));
            }
        }
    }
    let message = errors.join("; ");
    if unreachable {
        return Err(Unreachable(message).into());
    }
    Err(anyhow!(message))
}

/// No server answered at any of a service's URLs (connection refused, no
/// route): the service is gone, not slow or broken. `is_unreachable` tells.
#[derive(Debug)]
struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// True when `e` (from `get` or `get_json`) says no server answered at all.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.is::<Unreachable>()
}

async fn exchange(client: &reqwest::Client, url: &str) -> Result<Response> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            let message = error_chain(&e);
            if e.is_connect() {
                anyhow::Error::from(Unreachable(message))
            } else {
                anyhow!(message)
            }
        })?;
    let status = response.status().as_u16();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        bail!("reply larger than {MAX_BODY} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow!("{}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            bail!("reply larger than {MAX_BODY} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, body })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_clear_errors() {
        let u = BaseUrl::parse("http://rm:8088/gateway/").unwrap();
        assert_eq!(u.display(), "http://rm:8088/gateway");
        assert!(BaseUrl::parse("https://rm:8090").is_ok());
        let e = BaseUrl::parse("ftp://rm").unwrap_err().to_string();
        assert!(e.contains("only http:// and https://"), "{e}");
        assert!(BaseUrl::parse("http://rm:notaport").is_err());
        let e = BaseUrl::with_options(
            "https://rm",
            &EndpointOptions {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("ca=/nonexistent/ca.pem"), "{e:#}");
    }

    #[test]
    fn spnego_is_refused_with_a_reason() {
        let mut o = EndpointOptions::default();
        let e = o.take("auth", "spnego").unwrap_err().to_string();
        assert!(e.contains("SPNEGO (Kerberos) is not supported"), "{e}");
        assert!(o.take("ca", "/etc/ca.pem").unwrap());
        assert!(!o.take("history", "http://h").unwrap());
    }
}
