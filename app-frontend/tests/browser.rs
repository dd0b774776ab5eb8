//! Phase 1 browser tests: real headless Chromium against the real frontend,
//! with the in-process stand-in for our backend API. Walks every page,
//! checks behaviour (JS enhancements, HttpOnly cookie, redirects) and basic
//! accessibility, and writes screenshots at desktop and phone width under
//! `<target>/screenshots/browser/` (listed in the test output).

mod support;

use std::time::Duration;

use serde_json::json;
use support::browser::Browser;
use support::*;

#[actix_web::test]
async fn every_page_in_a_real_browser_with_screenshots() {
    let site = Site::start();
    let base = site.frontend.url.clone();
    let mut b = Browser::start("browser").await;
    let url = |p: &str| format!("{base}{p}");

    // A protected page without a session lands on the login form, keeping next.
    b.goto(&url("/github")).await;
    assert_eq!(b.path().await, "/login?next=/github");
    b.check_accessibility("login").await;
    b.shoot("login").await;

    // Wrong password: an error, and no session cookie.
    b.fill("#username", "jake").await;
    b.fill("#password", "not-his-password").await;
    b.click("button[type=submit]").await;
    assert!(b
        .text("#form-error")
        .await
        .contains("Invalid username or password"));
    assert!(!b.cookie_names().await.contains(&"zt_session".to_string()));
    assert_eq!(
        b.js("return document.activeElement.id").await,
        json!("password"),
        "focus goes back to the password"
    );
    b.shoot("login-error").await;

    // Right password: back to /github; the session cookie is invisible to scripts.
    b.fill("#username", "jake").await;
    b.fill("#password", "jake99").await;
    b.click("button[type=submit]").await;
    assert_eq!(b.path().await, "/github");
    assert!(b.cookie_names().await.contains(&"zt_session".to_string()));
    assert_eq!(
        b.js("return document.cookie.includes('zt_session')").await,
        json!(false),
        "HttpOnly"
    );
    b.check_accessibility("github").await;
    b.shoot("github-empty").await;

    // Configure a token: status flips, the field stays empty.
    b.fill("#token", "ghp_good_browser_token_123").await;
    b.click("#save-token").await;
    assert_eq!(b.path().await, "/github?msg=token_saved");
    assert!(b.text("#github-status").await.contains("Configured"));
    assert_eq!(
        b.js("return document.getElementById('token').value").await,
        json!("")
    );
    assert!(!b
        .js("return document.documentElement.outerHTML")
        .await
        .as_str()
        .unwrap()
        .contains("ghp_good_browser_token_123"));
    b.shoot("github-configured").await;

    b.goto(&url("/")).await;
    assert!(b.text("h1").await.contains("Hi, jake"));
    b.check_accessibility("dashboard").await;
    b.shoot("dashboard").await;

    // Repositories: 30 rows, the instant filter (script) and the server filter.
    b.goto(&url("/github/repos")).await;
    b.check_accessibility("repos").await;
    assert_eq!(
        b.js("return document.querySelectorAll('#repo-list tr').length")
            .await,
        json!(30)
    );
    b.shoot("repos").await;
    b.fill("#q", "number 1").await;
    b.wait_for(
        "instant filter",
        "return [...document.querySelectorAll('#repo-list tr')].filter(r => !r.hidden && r.offsetParent !== null).length === 8",
        Duration::from_secs(5),
    )
    .await;
    b.click("form[role=search] button[type=submit]").await;
    assert_eq!(b.path().await, "/github/repos?q=number+1");
    assert!(b
        .text("#repo-summary")
        .await
        .contains("8 repositories match"));
    b.shoot("repos-filtered").await;
    b.goto(&url("/github/repos")).await;
    b.click("a[rel=next]").await;
    assert_eq!(b.path().await, "/github/repos?page=2");
    assert!(b.body_text().await.contains("Page 2"));

    b.goto(&url("/github/profile")).await;
    assert_eq!(b.text("#profile-login").await, "@octocat");
    b.check_accessibility("profile").await;
    b.shoot("profile").await;

    // Zero trust: countdowns tick, copy buttons appear, the panel refreshes
    // itself and shows a rotated database user without a reload.
    b.goto(&url("/zero-trust")).await;
    b.check_accessibility("zero-trust").await;
    assert_eq!(
        b.text("#backend-spiffe-id").await,
        "spiffe://demo.local/ns/99-apps/sa/backend"
    );
    assert_eq!(
        b.text("#frontend-spiffe-id").await,
        "spiffe://demo.local/ns/99-apps/sa/frontend"
    );
    let first = b.text("#db-user").await;
    assert_eq!(first, "v-backend-role-x1y2z3a4b5-1795874910");
    assert_eq!(
        b.js("return document.querySelector('button[data-copy]').hidden")
            .await,
        json!(false)
    );
    let t0 = b.text("time[data-countdown]").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_ne!(b.text("time[data-countdown]").await, t0, "countdown ticks");
    b.shoot("zero-trust").await;
    b.js("window.__marker = 'no reload'; return true").await;
    {
        let mut s = site.backend.state();
        s.db_user = "v-backend-role-rotated-0002".into();
        s.db_rotations = 1;
    }
    b.wait_for(
        "the rotated user on the page",
        "return document.getElementById('db-user').textContent === 'v-backend-role-rotated-0002'",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        b.js("return window.__marker").await,
        json!("no reload"),
        "updated in place"
    );
    assert_eq!(b.text("#db-rotations").await, "1");
    assert!(b.text("#zt-announce").await.contains("rotated"));

    // Sign out, register, sign in again.
    b.goto(&url("/logout")).await;
    b.check_accessibility("logout").await;
    b.shoot("logout").await;
    b.click("main form button[type=submit]").await;
    assert_eq!(b.path().await, "/login?msg=logged_out");
    assert!(!b.cookie_names().await.contains(&"zt_session".to_string()));
    b.goto(&url("/register")).await;
    b.check_accessibility("register").await;
    b.shoot("register").await;
    b.fill("#username", "scully").await;
    b.fill("#email", "scully@99.precinct").await;
    b.fill("#password", "scully99").await;
    b.fill("#password_confirm", "scully99").await;
    b.click("main form button[type=submit]").await;
    assert_eq!(b.path().await, "/?msg=welcome");
    assert!(b.text("h1").await.contains("Hi, scully"));
    b.shoot("dashboard-welcome").await;

    // Friendly 404 and backend-down pages.
    b.goto(&url("/no/such/page")).await;
    assert!(b.text("h1").await.contains("Page not found"));
    b.shoot("not-found").await;
    site.backend.state().mesh_down = true;
    b.goto(&url("/github")).await;
    assert!(b.text("h1").await.contains("The backend is unreachable"));
    b.shoot("backend-unreachable").await;
    site.backend.state().mesh_down = false;

    // A forged cookie: treated as signed out, with a message.
    // (Set from a script: the real HttpOnly cookie is deleted first.)
    b.client.delete_cookie("zt_session").await.unwrap();
    b.js(
        "document.cookie = 'zt_session=eyJhbGciOiJIUzI1NiJ9.eyJ1c2VybmFtZSI6Impha2UiLCJleHAiOjQxMDI0NDQ4MDB9.Zm9yZ2Vk; path=/; samesite=strict'; return true",
    )
    .await;
    b.goto(&url("/zero-trust")).await;
    assert_eq!(b.path().await, "/login?next=/zero-trust&msg=expired");
    assert!(b
        .body_text()
        .await
        .contains("Your session has expired or is no longer valid"));
    b.shoot("session-expired").await;

    b.list_shots();
    b.close().await;
}
