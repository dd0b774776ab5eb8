//! Real headless Chromium driven through chromedriver (WebDriver) with
//! fantoccini: one chromedriver per test on a free port, a fresh profile
//! dir, screenshots at desktop (1280x800) and phone (390x844) size under
//! `<target>/screenshots/<suite>/`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Debian's packages (`make tools` installs them).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Screenshot sizes: (label, CSS width, CSS height).
pub const SIZES: [(&str, u32, u32); 2] = [("desktop", 1280, 800), ("phone", 390, 844)];

/// A browser session. Dropping it ends chromedriver's whole process group.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
    shots_dir: PathBuf,
    /// Every screenshot written, in order.
    pub shots: Vec<PathBuf>,
}

fn free_port() -> u16 {
    devstack::free_port().unwrap()
}

/// `<target dir>/screenshots/<suite>` (`target/` of the workspace unless
/// CARGO_TARGET_DIR says otherwise).
pub fn screenshots_dir(suite: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().unwrap_or(tmp);
    let d = target.join("screenshots").join(suite);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Browser {
    /// Starts chromedriver + headless Chromium.
    pub async fn start(suite: &str) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run `make tools` (or `apt-get install chromium chromium-driver`)"
            );
        }
        let profile = tempfile::Builder::new()
            .prefix("zt-chromium-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            // Own process group: Drop ends chromedriver and the browsers it started.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-crash-reporter".into(),
            "--disable-breakpad".into(),
            "--hide-scrollbars".into(),
            "--force-device-scale-factor=1".into(),
            "--window-size=1280,800".into(),
            format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let mut last_err = None;
        let mut client = None;
        for _ in 0..3 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(e) => {
                    last_err = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let client = client.unwrap_or_else(|| panic!("cannot start Chromium: {last_err:?}"));
        let b = Browser {
            client,
            driver,
            profile,
            shots_dir: screenshots_dir(suite),
            shots: Vec::new(),
        };
        b.resize(1280, 800).await;
        b
    }

    /// Makes the viewport exactly `w`x`h` CSS pixels.
    pub async fn resize(&self, w: u32, h: u32) {
        self.client.set_window_size(w, h).await.unwrap();
        // The window may include some frame; correct by the difference.
        let inner = self
            .js("return [window.innerWidth, window.innerHeight]")
            .await;
        let (iw, ih) = (
            inner[0].as_u64().unwrap() as u32,
            inner[1].as_u64().unwrap() as u32,
        );
        if (iw, ih) != (w, h) {
            self.client
                .set_window_size(w + (w.saturating_sub(iw)), h + (h.saturating_sub(ih)))
                .await
                .unwrap();
        }
    }

    /// Runs a script, returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Navigates to `url` and waits for the document to be complete.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        while self.js("return document.readyState").await != json!("complete") {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "page never loaded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The current URL's path and query.
    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Visible text of the first element matching `css` (read in one
    /// script call, so a panel swapped by the page's own script in between
    /// cannot leave a stale element reference).
    pub async fn text(&self, css: &str) -> String {
        let v = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null;",
                vec![json!(css)],
            )
            .await
            .unwrap();
        match v {
            Value::String(s) => s,
            _ => panic!("no element matches {css} on {}", self.path().await),
        }
    }

    /// The whole page's visible text.
    pub async fn body_text(&self) -> String {
        self.text("body").await
    }

    /// Types into a field (clearing it first).
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    /// Clicks something that loads a new page (link, form button) and
    /// waits until the new document has replaced the old one.
    pub async fn click(&self, css: &str) {
        self.js("window.__zt_old_page = true; return true").await;
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        el.click().await.unwrap();
        let start = Instant::now();
        loop {
            // Errors while the old document unloads are expected; retry.
            if let Ok(v) = self
                .client
                .execute(
                    "return window.__zt_old_page !== true && document.readyState === 'complete'",
                    vec![],
                )
                .await
            {
                if v == json!(true) {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "clicking {css} loaded no new page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `script` (returning a boolean) until true.
    pub async fn wait_for(&self, what: &str, script: &str, patience: Duration) {
        let start = Instant::now();
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            assert!(start.elapsed() < patience, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Names of the cookies the browser holds for this site (HttpOnly ones
    /// included: WebDriver sees them, page scripts do not).
    pub async fn cookie_names(&self) -> Vec<String> {
        self.client
            .get_all_cookies()
            .await
            .unwrap()
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }

    /// Accessibility smoke checks on the current page: every visible form
    /// control has a label, every image an alt text, one `h1`, `lang` set,
    /// and the first Tab stop is the skip link.
    pub async fn check_accessibility(&self, page: &str) {
        let problems = self
            .js(
                r##"
                const out = [];
                if (!document.documentElement.lang) out.push("html has no lang");
                if (document.querySelectorAll("h1").length !== 1) out.push("expected one h1, got " + document.querySelectorAll("h1").length);
                for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
                  if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label")) out.push("unlabelled " + (el.name || el.id));
                }
                for (const img of document.querySelectorAll("img")) {
                  if (!img.hasAttribute("alt")) out.push("img without alt " + img.src);
                }
                for (const b of document.querySelectorAll("button, a[href]")) {
                  if (b.offsetParent !== null && !b.textContent.trim() && !b.getAttribute("aria-label")) out.push("control without text " + b.outerHTML.slice(0, 80));
                }
                const first = document.querySelector("a[href], button, input:not([type=hidden])");
                if (!first || first.getAttribute("href") !== "#main") out.push("first focusable is not the skip link");
                if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push("horizontal overflow: " + document.documentElement.scrollWidth + " > " + window.innerWidth);
                return out;
                "##,
            )
            .await;
        assert_eq!(problems, json!([]), "accessibility problems on {page}");
    }

    /// Screenshots of the current page at every size in [`SIZES`] (viewport,
    /// plus the full length when the page scrolls), checking for
    /// horizontal overflow at each width. Returns to desktop size.
    pub async fn shoot(&mut self, name: &str) {
        for (label, w, h) in SIZES {
            self.resize(w, h).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            let overflow = self
                .js("return document.documentElement.scrollWidth - window.innerWidth")
                .await;
            assert!(
                overflow.as_i64().unwrap_or(0) <= 1,
                "{name} overflows horizontally at {label} width by {overflow}px"
            );
            let png = self.client.screenshot().await.unwrap();
            let path = self.shots_dir.join(format!("{name}-{label}.png"));
            std::fs::write(&path, png).unwrap();
            self.shots.push(path);
            let full = self
                .js("return document.documentElement.scrollHeight")
                .await;
            let full = full.as_u64().unwrap_or(0) as u32;
            if full > h + 4 {
                self.resize(w, full.min(4000)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let png = self.client.screenshot().await.unwrap();
                let path = self.shots_dir.join(format!("{name}-{label}-full.png"));
                std::fs::write(&path, png).unwrap();
                self.shots.push(path);
            }
        }
        self.resize(1280, 800).await;
    }

    /// Prints every screenshot path (the test output lists them).
    pub fn list_shots(&self) {
        println!("screenshots ({}):", self.shots.len());
        for s in &self.shots {
            println!("  {}", s.display());
        }
    }

    /// Ends the WebDriver session.
    pub async fn close(self) {
        let Browser { client, .. } = &self;
        let _ = client.clone().close().await;
    }

    /// The chromedriver log (for failures).
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromedriver.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Our own child's process group only (chromedriver and its Chromium).
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
