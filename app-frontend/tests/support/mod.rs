//! Shared test support: the backend stand-in, the frontend under test on a
//! free port, a cookie-aware HTTP client that never follows redirects, and
//! a capture of everything the frontend logs (to prove secrets stay out).
#![allow(dead_code)]

pub mod browser;
pub mod fake_backend;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};

use app_frontend::FrontendConfig;

pub use fake_backend::FakeBackend;

/// Everything the frontend logged in this test process.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<LogCapture> = OnceLock::new();

/// Installs the capturing subscriber once; returns the capture.
pub fn logs() -> LogCapture {
    LOGS.get_or_init(|| {
        let cap = LogCapture::default();
        let w = cap.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,reqwest=info,actix_server=info,h2=info,rustls=info")
            .with_writer(move || w.clone())
            .with_ansi(false)
            .try_init();
        cap
    })
    .clone()
}

impl LogCapture {
    /// The log text so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The frontend under test.
pub struct Frontend {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Frontend {
    /// Starts the real app (the same `app_frontend::server` as `main`) with
    /// `extra` config on top of URLs pointing at `backend`.
    pub fn start(backend_url: &str, sidecar_url: &str, extra: &[(&str, &str)]) -> Frontend {
        logs();
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("BACKEND_URL".into(), backend_url.into());
        env.insert("FRONTEND_SIDECAR_ADMIN_URL".into(), sidecar_url.into());
        env.insert("FRONTEND_BACKEND_TIMEOUT".into(), "3s".into());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let config = FrontendConfig::from_source(&env).expect("test config");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = app_frontend::server(app_frontend::state(config).unwrap(), listener).unwrap();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Frontend { url, handle }
    }

    /// Stops it.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Backend stand-in + frontend pointing at it.
pub struct Site {
    pub backend: FakeBackend,
    pub frontend: Frontend,
}

impl Site {
    pub fn start() -> Site {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[(&str, &str)]) -> Site {
        let backend = FakeBackend::start();
        let frontend = Frontend::start(&backend.url, &backend.url, extra);
        Site { backend, frontend }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.frontend.url)
    }
}

/// A parsed `Set-Cookie`.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    pub attrs: Vec<String>,
}

impl SetCookie {
    fn parse(raw: &str) -> SetCookie {
        let mut parts = raw.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        SetCookie {
            name: name.into(),
            value: value.into(),
            attrs: parts.map(|a| a.to_ascii_lowercase()).collect(),
        }
    }

    pub fn has(&self, attr: &str) -> bool {
        self.attrs
            .iter()
            .any(|a| a == attr || a.starts_with(&format!("{attr}=")))
    }

    pub fn attr(&self, name: &str) -> Option<String> {
        self.attrs
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
    }

    pub fn is_removal(&self) -> bool {
        self.value.is_empty() && self.attr("max-age").as_deref() == Some("0")
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub cookies: Vec<SetCookie>,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    pub fn cookie(&self, name: &str) -> Option<&SetCookie> {
        self.cookies.iter().find(|c| c.name == name)
    }

    /// The CSRF token of the first form on the page.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf_token" value=""#;
        let i = self.body.find(marker).expect("page has a CSRF field") + marker.len();
        self.body[i..i + 64].to_string()
    }
}

/// A browser-like client: keeps cookies, never follows redirects.
pub struct Client {
    base: String,
    http: reqwest::Client,
    pub jar: BTreeMap<String, String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            jar: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, req: reqwest::RequestBuilder) -> Resp {
        let req = if self.jar.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let cookies: Vec<SetCookie> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| SetCookie::parse(v.to_str().unwrap()))
            .collect();
        for c in &cookies {
            if c.is_removal() {
                self.jar.remove(&c.name);
            } else {
                self.jar.insert(c.name.clone(), c.value.clone());
            }
        }
        let body = r.text().await.unwrap();
        Resp {
            status,
            headers,
            cookies,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        let req = self.http.get(format!("{}{path}", self.base));
        self.finish(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.finish(req).await
    }

    pub async fn post_raw(&mut self, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        self.finish(req).await
    }

    /// Posts the sign-in form with these fields.
    pub async fn post_login(&mut self, user: &str, password: &str, csrf: &str, next: &str) -> Resp {
        self.post(
            "/login",
            &[
                ("username", user),
                ("password", password),
                ("csrf_token", csrf),
                ("next", next),
            ],
        )
        .await
    }

    /// Signs in through the login form; asserts it worked.
    pub async fn login(&mut self, user: &str, password: &str) -> Resp {
        let csrf = self.get("/login").await.csrf();
        let r = self.post_login(user, password, &csrf, "").await;
        assert_eq!(r.status, 303, "login failed: {}", r.body);
        r
    }
}
