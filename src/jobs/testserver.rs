//! A loopback HTTP(S) server for the job sources' tests: serves whatever body
//! the test sets for a path (with its query, else without), computes one from
//! the query, redirects, answers slowly, hangs (timeouts) or answers garbage;
//! counts the bytes of the bodies it served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A body computed from the request's path and query.
pub type Handler = Arc<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Clone)]
pub enum Route {
    Json(String),
    Status(u16),
    /// Accepts and never answers.
    Hang,
    /// 307 to this URL (an HA standby ResourceManager, a Spark UI under YARN).
    Redirect(String),
    /// Answers after this long.
    Slow(Duration, String),
    Compute(Handler),
}

#[derive(Clone, Default)]
pub struct TestServer {
    routes: Arc<Mutex<HashMap<String, Route>>>,
    pub url: String,
    /// Body bytes served so far.
    pub served: Arc<AtomicU64>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(None).await
    }

    /// An https server presenting `chain` (PEM certificates) with `key` (PEM).
    pub async fn start_tls(chain: &str, key: &str) -> TestServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        TestServer::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let port = listener.local_addr().unwrap().port();
        let server = TestServer {
            routes: Arc::default(),
            // A name, so a certificate for "localhost" matches.
            url: format!("{scheme}://localhost:{port}"),
            served: Arc::default(),
        };
        let (routes, served) = (server.routes.clone(), server.served.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (routes, served, tls) = (routes.clone(), served.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(s).await {
                                serve(s, &routes, &served).await;
                            }
                        }
                        None => serve(s, &routes, &served).await,
                    }
                });
            }
        });
        server
    }

    pub fn set(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }

    /// Every path with a JSON body, and the body.
    pub fn routes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(path, route)| match route {
                Route::Json(body) => Some((path.clone(), body.clone())),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    pub fn json(&self, path: &str, body: &str) {
        self.set(path, Route::Json(body.to_string()));
    }

    /// Every path not set otherwise answers with this route.
    pub fn fallback(&self, route: Route) {
        self.set("*", route);
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    routes: &Mutex<HashMap<String, Route>>,
    served: &AtomicU64,
) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/");
    let route = {
        let routes = routes.lock().unwrap();
        routes
            .get(&target)
            .or_else(|| routes.get(path))
            .or_else(|| routes.get("*"))
            .cloned()
    };
    let json = |body: &str| {
        served.fetch_add(body.len() as u64, Ordering::Relaxed);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    };
    let reply = match route {
        Some(Route::Json(body)) => json(&body),
        Some(Route::Compute(handler)) => json(&handler(&target)),
        Some(Route::Slow(delay, body)) => {
            tokio::time::sleep(delay).await;
            json(&body)
        }
        Some(Route::Redirect(to)) => format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Some(Route::Status(code)) => {
            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Some(Route::Hang) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        None => {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        }
    };
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown().await;
}
