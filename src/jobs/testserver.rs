//! A loopback HTTP server for the job sources' tests: serves whatever body the
//! test sets for a path, can hang (timeouts) or answer garbage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone)]
pub enum Route {
    Json(String),
    Status(u16),
    /// Accepts and never answers.
    Hang,
}

#[derive(Clone, Default)]
pub struct TestServer {
    routes: Arc<Mutex<HashMap<String, Route>>>,
    pub url: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = TestServer {
            routes: Arc::default(),
            url: format!("http://{}", listener.local_addr().unwrap()),
        };
        let routes = server.routes.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let route = routes.lock().unwrap().get(&path).cloned();
                    let reply = match route {
                        Some(Route::Json(body)) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                            body.len()
                        ),
                        Some(Route::Status(code)) => {
                            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n")
                        }
                        Some(Route::Hang) => {
                            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                            return;
                        }
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
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
}
