//! Phase 2 acceptance: real headless Chromium against the REAL stack:
//! devstack (SPIRE, OpenBao, PostgreSQL), the backend with its zt-sidecar,
//! this frontend with its zt-sidecar (outbound SPIFFE mTLS) and the GitHub
//! stand-in, booted by `devstack::platform`. Nothing is mocked but GitHub.
//!
//! Needs the workspace binaries next to this test (`cargo test --workspace`
//! builds them; alone: `cargo build -p zt-sidecar -p app-backend -p
//! github-standin -p app-frontend` first, or set ZT_*_BIN).
//!
//! One platform boot serves every step (booting takes tens of seconds);
//! each step is a named function so a failure says which behaviour broke.
//! Screenshots: `<target>/screenshots/e2e/`, listed in the output.

mod support;

use std::time::{Duration, Instant};

use devstack::platform::{Platform, PlatformOptions};
use serde_json::json;
use support::browser::Browser;

struct Ctx {
    platform: Platform,
    b: Browser,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.platform.frontend_url())
    }

    async fn login(&self, user: &str, password: &str) {
        self.b.goto(&self.url("/login")).await;
        self.b.fill("#username", user).await;
        self.b.fill("#password", password).await;
        self.b.click("main form button[type=submit]").await;
    }

    async fn logout(&self) {
        self.b.click("header form[action='/logout'] button").await;
        assert_eq!(self.b.path().await, "/login?msg=logged_out");
    }

    async fn has_session_cookie(&self) -> bool {
        self.b
            .cookie_names()
            .await
            .iter()
            .any(|c| c == "zt_session")
    }
}

#[test]
fn acceptance_in_a_real_browser_against_the_real_stack() {
    let platform = Platform::start(PlatformOptions::ephemeral().expect("free ports"))
        .expect("the platform starts (SPIRE, OpenBao, PostgreSQL, both sidecars, backend, frontend, GitHub stand-in)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let b = Browser::start("e2e").await;
        let mut ctx = Ctx { platform, b };
        protected_page_without_session_redirects_to_login(&mut ctx).await;
        wrong_password_shows_an_error_and_sets_no_cookie(&mut ctx).await;
        jake_logs_in_and_sees_the_dashboard(&mut ctx).await;
        github_token_configure_repos_profile_remove(&mut ctx).await;
        zero_trust_shows_identities_and_a_rotating_database_user(&mut ctx).await;
        register_logout_and_login_again(&mut ctx).await;
        forged_cookie_is_rejected(&mut ctx).await;
        ctx.b.list_shots();
        let Ctx { b, platform } = ctx;
        b.close().await;
        drop(platform);
    });
}

async fn protected_page_without_session_redirects_to_login(ctx: &mut Ctx) {
    for (page, next) in [
        ("/github/repos", "/login?next=/github/repos"),
        ("/zero-trust", "/login?next=/zero-trust"),
        ("/", "/login"),
    ] {
        ctx.b.goto(&ctx.url(page)).await;
        assert_eq!(ctx.b.path().await, next, "{page}");
    }
    ctx.b.shoot("login").await;
}

async fn wrong_password_shows_an_error_and_sets_no_cookie(ctx: &mut Ctx) {
    ctx.login("jake", "not-jakes-password").await;
    assert!(ctx
        .b
        .text("#form-error")
        .await
        .contains("Invalid username or password"));
    assert!(!ctx.has_session_cookie().await);
    ctx.b.shoot("login-wrong-password").await;
}

async fn jake_logs_in_and_sees_the_dashboard(ctx: &mut Ctx) {
    ctx.login("jake", "jake99").await;
    assert_eq!(ctx.b.path().await, "/");
    assert_eq!(ctx.b.text("h1").await, "Hi, jake");
    assert!(ctx.b.body_text().await.contains("jake.peralta@99.precinct"));
    assert!(ctx.has_session_cookie().await);
    assert_eq!(
        ctx.b
            .js("return document.cookie.includes('zt_session')")
            .await,
        json!(false)
    );
    ctx.b.check_accessibility("dashboard").await;
    ctx.b.shoot("dashboard").await;
}

async fn github_token_configure_repos_profile_remove(ctx: &mut Ctx) {
    ctx.b.goto(&ctx.url("/github")).await;
    assert!(ctx
        .b
        .text("#github-status")
        .await
        .contains("Not configured"));
    ctx.b.shoot("github-empty").await;

    // A token GitHub (the stand-in) rejects: a readable message, nothing stored.
    ctx.b
        .fill("#token", "ghp_this_token_is_unknown_to_github_00000")
        .await;
    ctx.b.click("#save-token").await;
    let err = ctx.b.text("#form-error").await;
    assert!(!err.is_empty(), "an error message is shown");
    assert!(ctx
        .b
        .text("#github-status")
        .await
        .contains("Not configured"));
    ctx.b.shoot("github-token-rejected").await;

    ctx.b.fill("#token", github_standin::DEMO_TOKEN).await;
    ctx.b.click("#save-token").await;
    assert_eq!(ctx.b.path().await, "/github?msg=token_saved");
    assert!(ctx.b.text("#github-status").await.contains("Configured"));
    let html = ctx.b.js("return document.documentElement.outerHTML").await;
    assert!(
        !html.as_str().unwrap().contains(github_standin::DEMO_TOKEN),
        "token echoed"
    );
    ctx.b.shoot("github-configured").await;

    ctx.b.goto(&ctx.url("/github/repos")).await;
    let rows = ctx
        .b
        .js("return document.querySelectorAll('#repo-list tr').length")
        .await;
    assert_eq!(
        rows,
        json!(30),
        "first page of the stand-in's 35 repositories"
    );
    assert!(ctx.b.body_text().await.contains("nine-nine-case-"));
    ctx.b.check_accessibility("repos").await;
    ctx.b.shoot("repos").await;
    ctx.b.click("a[rel=next]").await;
    assert_eq!(ctx.b.path().await, "/github/repos?page=2");
    let rows = ctx
        .b
        .js("return document.querySelectorAll('#repo-list tr').length")
        .await;
    assert_eq!(rows, json!(github_standin::DEMO_REPOS - 30));
    ctx.b.shoot("repos-page-2").await;

    ctx.b.goto(&ctx.url("/github/profile")).await;
    assert_eq!(ctx.b.text("#profile-login").await, "@jake-peralta");
    assert_eq!(ctx.b.text("#profile-name").await, "Jake Peralta");
    ctx.b.check_accessibility("profile").await;
    ctx.b.shoot("profile").await;

    ctx.b.goto(&ctx.url("/github")).await;
    ctx.b.click("#remove-token").await;
    assert_eq!(ctx.b.path().await, "/github?msg=token_removed");
    assert!(ctx
        .b
        .text("#github-status")
        .await
        .contains("Not configured"));
    ctx.b.goto(&ctx.url("/github/repos")).await;
    assert!(ctx.b.body_text().await.contains("No GitHub token yet"));
}

async fn zero_trust_shows_identities_and_a_rotating_database_user(ctx: &mut Ctx) {
    ctx.b.goto(&ctx.url("/zero-trust")).await;
    assert_eq!(
        ctx.b.text("#backend-spiffe-id").await,
        devstack::spire::BACKEND_ID
    );
    assert_eq!(
        ctx.b.text("#frontend-spiffe-id").await,
        devstack::spire::FRONTEND_ID
    );
    let before = ctx.b.text("#db-user").await;
    assert!(before.starts_with("v-"), "a dynamic OpenBao user: {before}");
    // The page's user is the one the backend's sidecar holds right now.
    let status = ctx.platform.backend_sidecar.status().unwrap();
    let lease_user = status["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap()["username"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(before, lease_user);
    // The backend gave its schema-owner credentials back after migrating,
    // and the page says so.
    let migrator = status["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db-migrator")
        .unwrap();
    assert_eq!(migrator["released"], true, "{migrator}");
    let body = ctx.b.body_text().await;
    assert!(
        body.contains(
            "db-migrator (role backend-migrator): the backend gave these credentials back"
        ),
        "{body}"
    );
    ctx.b.check_accessibility("zero-trust").await;
    ctx.b.shoot("zero-trust").await;

    // Force a make-before-break rotation on the backend sidecar; the page
    // (auto-refreshing, no reload) must show the new user, never an error.
    ctx.b.js("window.__zt_same_page = true; return true").await;
    let rotated = ureq::post(&format!(
        "http://{}/rotate/db",
        ctx.platform.backend_sidecar.admin
    ))
    .header("X-ZT-Admin", "1")
    .send_empty()
    .expect("POST /rotate/db");
    assert_eq!(rotated.status().as_u16(), 202);
    let start = Instant::now();
    let after = loop {
        let now = ctx.b.text("#db-user").await;
        if now != before && now.starts_with("v-") {
            break now;
        }
        let problems = ctx
            .b
            .js("return [...document.querySelectorAll('#zt-panel [role=alert]')].map(e => e.textContent)")
            .await;
        assert_eq!(
            problems,
            json!([]),
            "the panel reported a problem during rotation"
        );
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the database user never changed on the page (still {now})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        ctx.b.js("return window.__zt_same_page === true").await,
        json!(true),
        "no reload"
    );
    assert_ne!(ctx.b.text("#db-rotations").await, "0");
    println!("database user rotated on the page: {before} -> {after}");
    ctx.b.shoot("zero-trust-after-rotation").await;
}

async fn register_logout_and_login_again(ctx: &mut Ctx) {
    ctx.logout().await;
    assert!(!ctx.has_session_cookie().await);
    let name = format!("boyle{}", std::process::id() % 100_000);
    ctx.b.goto(&ctx.url("/register")).await;
    ctx.b.shoot("register").await;
    ctx.b.fill("#username", &name).await;
    ctx.b.fill("#email", &format!("{name}@99.precinct")).await;
    ctx.b.fill("#password", "nutriboomer").await;
    ctx.b.fill("#password_confirm", "nutriboomer").await;
    ctx.b.click("main form button[type=submit]").await;
    assert_eq!(ctx.b.path().await, "/?msg=welcome");
    assert_eq!(ctx.b.text("h1").await, format!("Hi, {name}"));
    // The same name again is refused with the backend's message.
    ctx.logout().await;
    ctx.b.goto(&ctx.url("/register")).await;
    ctx.b.fill("#username", &name).await;
    ctx.b.fill("#password", "nutriboomer").await;
    ctx.b.fill("#password_confirm", "nutriboomer").await;
    ctx.b.click("main form button[type=submit]").await;
    assert!(!ctx.b.text("#form-error").await.is_empty());
    ctx.b.shoot("register-taken").await;
    ctx.login(&name, "nutriboomer").await;
    assert_eq!(ctx.b.text("h1").await, format!("Hi, {name}"));
}

async fn forged_cookie_is_rejected(ctx: &mut Ctx) {
    // Replace the real session with a well-formed JWT the backend never signed.
    ctx.b.client.delete_cookie("zt_session").await.unwrap();
    ctx.b
        .js("document.cookie = 'zt_session=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoxLCJ1c2VybmFtZSI6Impha2UiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.Zm9yZ2VkLXNpZ25hdHVyZS1mb3JnZWQtc2lnbmF0dXJl; path=/; samesite=strict'; return true")
        .await;
    ctx.b.goto(&ctx.url("/github")).await;
    assert_eq!(ctx.b.path().await, "/login?next=/github&msg=expired");
    assert!(ctx
        .b
        .body_text()
        .await
        .contains("Your session has expired or is no longer valid"));
    assert!(
        !ctx.has_session_cookie().await,
        "the forged cookie was deleted"
    );
    ctx.b.shoot("forged-cookie").await;
}
