//! HTTP-level tests of the frontend (phase 1): the real app on a real port,
//! talking to an in-process stand-in for our backend API. Session, CSRF,
//! redirects, `next` validation, forged cookies, error mapping, escaping of
//! hostile strings, bad input of every form and parameter.

mod support;

use serde_json::json;
use support::*;

/// `s` as askama escapes it in HTML.
fn html(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

const PROTECTED: [&str; 5] = [
    "/",
    "/github",
    "/github/repos",
    "/github/profile",
    "/zero-trust",
];

#[actix_web::test]
async fn login_sets_an_httponly_strict_session_cookie_and_returns_to_next() {
    let site = Site::start();
    let mut c = site.client();
    let page = c.get("/login?next=/github/repos%3Fpage%3D2").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"name="next" value="/github/repos?page=2""#),
        "{}",
        page.body
    );
    let csrf_cookie = page
        .cookie("zt_csrf")
        .expect("csrf cookie set on first visit");
    assert!(
        csrf_cookie.has("httponly") && csrf_cookie.attr("samesite").as_deref() == Some("lax"),
        "{csrf_cookie:?}"
    );

    let r = c
        .post_login("jake", "jake99", &page.csrf(), "/github/repos?page=2")
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location().as_deref(), Some("/github/repos?page=2"));
    let s = r.cookie("zt_session").expect("session cookie");
    assert!(s.has("httponly"), "{s:?}");
    assert_eq!(s.attr("samesite").as_deref(), Some("strict"));
    assert_eq!(s.attr("path").as_deref(), Some("/"));
    assert_eq!(s.attr("max-age").as_deref(), Some("3600"));
    assert!(
        !s.has("secure"),
        "plain HTTP on loopback with auto: no Secure"
    );
    // The password went to the backend once, in the body, never in a URL.
    let seen = site.backend.seen();
    let login: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/api/auth/login")
        .collect();
    assert_eq!(login.len(), 1);
    assert!(login[0].body.contains("jake99"));

    let dash = c.get("/").await;
    assert_eq!(dash.status, 200);
    assert!(dash.body.contains("Hi, jake"), "{}", dash.body);
    assert!(dash.body.contains("Signed in as <strong"));
}

#[actix_web::test]
async fn wrong_password_shows_an_error_and_sets_no_session_cookie() {
    let site = Site::start();
    let mut c = site.client();
    let page = c.get("/login").await;
    let r = c
        .post(
            "/login",
            &[
                ("username", "jake"),
                ("password", "wrong-pass-7781"),
                ("csrf_token", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("Invalid username or password"),
        "{}",
        r.body
    );
    assert!(r.cookie("zt_session").is_none());
    assert!(!c.jar.contains_key("zt_session"));
    // The username is kept, the password is not echoed.
    assert!(r.body.contains(r#"value="jake""#));
    assert!(!r.body.contains("wrong-pass-7781"));
    assert!(!logs().text().contains("wrong-pass-7781"));
}

#[actix_web::test]
async fn login_tells_the_backend_which_browser_it_is_for() {
    // The backend's failed-login limit is per client: the frontend forwards
    // the browser's TCP address (never a client-supplied X-Forwarded-For).
    let site = Site::start();
    let mut c = site.client();
    c.login("jake", "jake99").await;
    let login = site
        .backend
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/auth/login")
        .expect("a login call");
    assert_eq!(login.forwarded_for.as_deref(), Some("127.0.0.1"));
}

#[actix_web::test]
async fn registration_tells_the_backend_which_browser_it_is_for() {
    // Registrations are limited per client too (issue 16, 3): without the
    // browser's address every registration would count against the frontend.
    let site = Site::start();
    let mut c = site.client();
    let csrf = c.get("/register").await.csrf();
    let r = c
        .post(
            "/register",
            &[
                ("username", "boyle_jr"),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let register = site
        .backend
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/auth/register")
        .expect("a registration call");
    assert_eq!(register.forwarded_for.as_deref(), Some("127.0.0.1"));
}

#[actix_web::test]
async fn cookie_is_secure_over_tls_or_when_configured() {
    let site = Site::start_with(&[("FRONTEND_COOKIE_SECURE", "true")]);
    let mut c = site.client();
    let r = c.login("jake", "jake99").await;
    assert!(r.cookie("zt_session").unwrap().has("secure"));

    // auto: a TLS-terminating proxy in front says https.
    let site = Site::start();
    let mut c = site.client();
    let page = c.get("/login").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let r = http
        .post(format!("{}/login", site.frontend.url))
        .header("x-forwarded-proto", "https")
        .header("cookie", format!("zt_csrf={}", c.jar["zt_csrf"]))
        .form(&[
            ("username", "jake"),
            ("password", "jake99"),
            ("csrf_token", &page.csrf()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(set.contains("secure"), "{set}");
}

#[actix_web::test]
async fn protected_pages_redirect_to_login_with_next_and_come_back() {
    let site = Site::start();
    let mut c = site.client();
    for p in PROTECTED {
        let r = c.get(p).await;
        assert_eq!(r.status, 303, "{p}");
        let loc = r.location().unwrap();
        if p == "/" {
            assert_eq!(loc, "/login");
        } else {
            assert_eq!(loc, format!("/login?next={p}"), "{p}");
        }
    }
    let r = c.get("/github/repos?page=2&q=rust").await;
    assert_eq!(
        r.location().as_deref(),
        Some("/login?next=/github/repos%3Fpage%3D2%26q%3Drust")
    );
    // Following it: the login form carries next, and login returns there.
    let page = c.get(&r.location().unwrap()).await;
    assert!(
        page.body.contains(&format!(
            r#"value="{}""#,
            html("/github/repos?page=2&q=rust")
        )),
        "{}",
        page.body
    );
    let r = c
        .post(
            "/login",
            &[
                ("username", "jake"),
                ("password", "jake99"),
                ("csrf_token", &page.csrf()),
                ("next", "/github/repos?page=2&q=rust"),
            ],
        )
        .await;
    assert_eq!(r.location().as_deref(), Some("/github/repos?page=2&q=rust"));
    assert_eq!(
        site.backend
            .seen()
            .iter()
            .filter(|s| s.path.starts_with("/api/github"))
            .count(),
        0
    );
}

#[actix_web::test]
async fn next_never_redirects_off_site() {
    let site = Site::start();
    for evil in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "/login",
        "",
    ] {
        let mut c = site.client();
        let page = c.get("/login").await;
        let r = c
            .post(
                "/login",
                &[
                    ("username", "jake"),
                    ("password", "jake99"),
                    ("csrf_token", &page.csrf()),
                    ("next", evil),
                ],
            )
            .await;
        assert_eq!(r.status, 303);
        assert_eq!(r.location().as_deref(), Some("/"), "next={evil:?}");
    }
    // And the GET form does not carry it either.
    let mut c = site.client();
    let page = c.get("/login?next=//evil.example").await;
    assert!(page.body.contains(r#"name="next" value="""#));
}

#[actix_web::test]
async fn every_post_without_a_valid_csrf_token_is_refused_before_the_backend() {
    let site = Site::start();
    let mut c = site.client();
    c.login("jake", "jake99").await;
    let calls = site.backend.api_calls();

    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("/login", vec![("username", "jake"), ("password", "jake99")]),
        (
            "/register",
            vec![
                ("username", "x1"),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
            ],
        ),
        ("/logout", vec![]),
        (
            "/github",
            vec![("action", "save"), ("token", "ghp_good_csrf_1")],
        ),
        ("/github", vec![("action", "remove")]),
    ];
    for (path, fields) in &cases {
        for token in ["", "00", &"a".repeat(64), &"z".repeat(64)] {
            let mut f = fields.clone();
            f.push(("csrf_token", token));
            let r = c.post(path, &f).await;
            assert_eq!(r.status, 403, "{path} with {token:?}: {}", r.body);
            assert!(
                r.body.contains("expired") || r.body.contains("has expired"),
                "{path}: {}",
                r.body
            );
        }
    }
    assert_eq!(
        site.backend.api_calls(),
        calls,
        "no refused form reached the backend"
    );
    assert!(
        c.jar.contains_key("zt_session"),
        "a forged logout did not sign the user out"
    );
}

#[actix_web::test]
async fn a_csrf_token_of_another_session_or_browser_is_refused() {
    let site = Site::start();
    let mut amy = site.client();
    amy.login("amy", "amy99").await;
    let amy_token = amy.get("/github").await.csrf();

    let mut jake = site.client();
    jake.login("jake", "jake99").await;
    let r = jake
        .post(
            "/github",
            &[("action", "remove"), ("csrf_token", &amy_token)],
        )
        .await;
    assert_eq!(r.status, 403);

    // Same browser, token issued before sign-in: bound to "no session".
    let mut c = site.client();
    let before = c.get("/login").await.csrf();
    c.login("jake", "jake99").await;
    let r = c.post("/logout", &[("csrf_token", &before)]).await;
    assert_eq!(r.status, 403);
    let fresh = c.get("/logout").await.csrf();
    let r = c.post("/logout", &[("csrf_token", &fresh)]).await;
    assert_eq!(r.status, 303);
}

#[actix_web::test]
async fn a_forged_session_cookie_is_rejected_and_cleared() {
    let site = Site::start();
    let mut c = site.client();
    // Well-formed JWT claiming to be jake, not signed by the backend.
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let forged = format!(
        "{}.{}.{}",
        e.encode(r#"{"alg":"HS256"}"#),
        e.encode(json!({"user_id": 1, "username": "jake", "exp": 4102444800i64}).to_string()),
        e.encode("forged-signature")
    );
    c.jar.insert("zt_session".into(), forged.clone());
    for p in PROTECTED {
        c.jar.insert("zt_session".into(), forged.clone());
        let r = c.get(p).await;
        assert_eq!(r.status, 303, "{p}: {}", r.body);
        let loc = r.location().unwrap();
        assert!(
            loc.starts_with("/login") && loc.ends_with("msg=expired"),
            "{p}: {loc}"
        );
        assert!(r.cookie("zt_session").unwrap().is_removal(), "{p}");
        assert!(!r.body.contains("jake"));
    }
    // The backend saw the forged token and said 401; the page shows the message.
    assert!(site
        .backend
        .seen()
        .iter()
        .any(|s| s.bearer.as_deref() == Some(forged.as_str())));
    let page = c.get("/login?next=/github&msg=expired").await;
    assert!(page
        .body
        .contains("Your session has expired or is no longer valid"));
    assert!(
        !logs().text().contains(&forged),
        "a session token was logged"
    );
}

#[actix_web::test]
async fn garbage_and_expired_cookies_never_reach_the_backend() {
    let site = Site::start();
    use base64::Engine as _;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let expired = format!(
        "{}.{}.sig",
        e.encode("{}"),
        e.encode(json!({"username": "jake", "exp": 1_000_000}).to_string())
    );
    for bad in [
        "garbage",
        "<script>alert(1)</script>",
        "a.b.c",
        &"x".repeat(5000),
        expired.as_str(),
    ] {
        let mut c = site.client();
        c.jar.insert("zt_session".into(), bad.to_string());
        let r = c.get("/github").await;
        assert_eq!(r.status, 303, "{bad:.30}");
        assert_eq!(
            r.location().as_deref(),
            Some("/login?next=/github&msg=expired")
        );
        assert!(r.cookie("zt_session").unwrap().is_removal());
    }
    assert_eq!(site.backend.api_calls(), 0);
}

#[actix_web::test]
async fn logout_clears_the_cookie_and_protected_pages_need_login_again() {
    let site = Site::start();
    let mut c = site.client();
    c.login("jake", "jake99").await;
    let page = c.get("/logout").await;
    assert!(page.body.contains("Sign out?"));
    let r = c.post("/logout", &[("csrf_token", &page.csrf())]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location().as_deref(), Some("/login?msg=logged_out"));
    assert!(r.cookie("zt_session").unwrap().is_removal());
    // Issue 16, 7: the backend revoked the token too (not just the cookie).
    let logout = site
        .backend
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/auth/logout")
        .expect("the frontend asked the backend to revoke the token");
    assert_eq!(logout.method, "POST");
    assert!(logout.bearer.is_some());
    assert!(c
        .get("/login?msg=logged_out")
        .await
        .body
        .contains("You have signed out."));
    assert_eq!(c.get("/").await.status, 303);
    assert!(c.get("/logout").await.body.contains("You are signed out"));
}

/// Posts the sign-in form of a `GET /login` made with `page_cookie` as the
/// session cookie (None: without one, as when SameSite=Strict holds it back
/// from a page opened from another site), the form itself carrying
/// `form_cookie`.
async fn sign_in_across(
    c: &mut Client,
    page_cookie: Option<&str>,
    form_cookie: Option<&str>,
    user: &str,
    password: &str,
) -> Resp {
    let set = |c: &mut Client, v: Option<&str>| match v {
        Some(v) => c.jar.insert("zt_session".into(), v.to_string()),
        None => c.jar.remove("zt_session"),
    };
    set(c, page_cookie);
    let page = c.get("/login").await;
    assert_eq!(page.status, 200);
    set(c, form_cookie);
    c.post_login(user, password, &page.csrf(), "").await
}

#[actix_web::test]
async fn signing_in_works_whatever_session_cookie_the_browser_still_holds() {
    let site = Site::start();
    let mut c = site.client();
    c.login("jake", "jake99").await;
    let jake = c.jar["zt_session"].clone();
    // (page cookie, form cookie): signed in already (switching user); a
    // page opened from another site (the session cookie held back from the
    // page, sent with the form); a stale or garbage cookie throughout.
    let stale = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VybmFtZSI6Impha2UifQ.c3RhbGU";
    for (page_cookie, form_cookie) in [
        (Some(jake.as_str()), Some(jake.as_str())),
        (None, Some(jake.as_str())),
        (Some(stale), Some(stale)),
        (Some("garbage"), Some("garbage")),
    ] {
        let r = sign_in_across(&mut c, page_cookie, form_cookie, "amy", "amy99").await;
        assert_eq!(
            (r.status, r.location().as_deref()),
            (303, Some("/")),
            "page {page_cookie:?}, form {form_cookie:?}: {}",
            r.body
        );
        assert_ne!(r.cookie("zt_session").unwrap().value, jake);
    }
    // Registration, the same way.
    for (i, cookie) in [Some(jake.as_str()), Some("garbage")]
        .into_iter()
        .enumerate()
    {
        c.jar.remove("zt_session");
        let page = c.get("/register").await;
        if let Some(v) = cookie {
            c.jar.insert("zt_session".into(), v.to_string());
        }
        let name = format!("hitchcock{i}");
        let r = c
            .post(
                "/register",
                &[
                    ("username", name.as_str()),
                    ("email", ""),
                    ("password", "scully99"),
                    ("password_confirm", "scully99"),
                    ("csrf_token", &page.csrf()),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{cookie:?}: {}", r.body);
    }
    // A sign-in form's token is still bound to this browser's nonce.
    let page = c.get("/login").await;
    let mut other = site.client();
    other.get("/login").await;
    let r = other.post_login("amy", "amy99", &page.csrf(), "").await;
    assert_eq!(r.status, 403);
    // ... and is no good for the forms of a session.
    c.jar.insert("zt_session".into(), jake.clone());
    let r = c.post("/logout", &[("csrf_token", &page.csrf())]).await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[actix_web::test]
async fn signing_out_works_with_an_unusable_cookie_and_says_when_it_could_not_revoke() {
    let site = Site::start();
    let mut c = site.client();
    // A cookie the frontend cannot use (not shaped like a JWT): the page
    // still offers to sign out, and doing so works.
    c.jar.insert("zt_session".into(), "garbage".into());
    let page = c.get("/logout").await;
    assert!(page.body.contains("Sign out?"), "{}", page.body);
    let r = c.post("/logout", &[("csrf_token", &page.csrf())]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.cookie("zt_session").unwrap().is_removal());
    assert_eq!(site.backend.api_calls(), 0);

    // The backend cannot be reached: the cookie goes, and the page says the
    // session was not ended at the backend.
    c.login("jake", "jake99").await;
    let page = c.get("/logout").await;
    site.backend.state().mesh_down = true;
    let r = c.post("/logout", &[("csrf_token", &page.csrf())]).await;
    assert_eq!(r.status, 303);
    assert!(r.cookie("zt_session").unwrap().is_removal());
    let to = r.location().unwrap();
    assert_eq!(to, "/login?msg=logged_out_here");
    let shown = c.get(&to).await;
    assert!(
        shown
            .body
            .contains("the backend could not revoke the session"),
        "{}",
        shown.body
    );
    assert!(!shown.body.contains("You have signed out."));

    // A sign-out form posted after the session cookie expired: nothing to
    // end, no state changes, so no token to check.
    c.jar.remove("zt_session");
    let r = c.post("/logout", &[("csrf_token", "stale")]).await;
    assert_eq!(
        (r.status, r.location().as_deref()),
        (303, Some("/login?msg=logged_out"))
    );
}

#[actix_web::test]
async fn register_signs_in_and_reports_each_problem_clearly() {
    let site = Site::start();
    let mut c = site.client();
    let page = c.get("/register").await;
    let csrf = page.csrf();
    let calls = site.backend.api_calls();
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let bad: [Case<'_>; 7] = [
        (
            &[
                ("username", ""),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
            ],
            422,
            "Choose a username.",
        ),
        (
            &[
                ("username", "rosa2"),
                ("password", "short"),
                ("password_confirm", "short"),
            ],
            422,
            "at least 6 characters",
        ),
        (
            &[
                ("username", "rosa2"),
                ("password", "secret1"),
                ("password_confirm", "secret2"),
            ],
            422,
            "do not match",
        ),
        (
            &[
                ("username", "rosa2"),
                ("email", "no-at-sign"),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
            ],
            422,
            "needs an @",
        ),
        (
            &[
                ("username", &"u".repeat(51)),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
            ],
            422,
            "too long",
        ),
        (
            &[
                ("username", "a\u{1}b"),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
            ],
            422,
            "control characters",
        ),
        (
            &[
                ("username", "rosa2"),
                ("email", &format!("{}@x", "e".repeat(100))),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
            ],
            422,
            "too long",
        ),
    ];
    for (fields, status, msg) in bad {
        let mut f = fields.to_vec();
        f.push(("csrf_token", &csrf));
        let r = c.post("/register", &f).await;
        assert_eq!(r.status, status, "{fields:?}");
        assert!(r.body.contains(msg), "{fields:?}: want {msg:?}");
        assert!(
            !r.body.contains("secret1") && !r.body.contains("secret2"),
            "password echoed"
        );
        assert!(r.body.contains(r#"role="alert""#));
    }
    assert_eq!(
        site.backend.api_calls(),
        calls,
        "invalid forms are refused locally"
    );

    // Backend refusals become readable messages on the form.
    let r = c
        .post(
            "/register",
            &[
                ("username", "jake"),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 409);
    assert!(r
        .body
        .contains("That username or email address is not available"));
    assert!(r.body.contains(r#"aria-invalid="true""#));
    let r = c
        .post(
            "/register",
            &[
                ("username", "bad name!"),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("username: use letters"));

    let r = c
        .post(
            "/register",
            &[
                ("username", "hitchcock"),
                ("email", "hitchcock@99.precinct"),
                ("password", "secret1"),
                ("password_confirm", "secret1"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location().as_deref(), Some("/?msg=welcome"));
    assert!(r.cookie("zt_session").is_some());
    let dash = c.get("/?msg=welcome").await;
    assert!(dash.body.contains("Hi, hitchcock") && dash.body.contains("Welcome!"));
}

#[actix_web::test]
async fn login_problems_are_reported_on_the_form() {
    let site = Site::start();
    let mut c = site.client();
    let csrf = c.get("/login").await.csrf();
    let r = c
        .post(
            "/login",
            &[("username", ""), ("password", ""), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Enter your username and password."));
    let long = "p".repeat(2000);
    let r = c
        .post(
            "/login",
            &[
                ("username", "jake"),
                ("password", &long),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("too long"));
    assert_eq!(site.backend.api_calls(), 0);

    site.backend.state().rate_limited = true;
    let r = c
        .post(
            "/login",
            &[
                ("username", "jake"),
                ("password", "jake99"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("Please wait 30 seconds"), "{}", r.body);
    site.backend.state().rate_limited = false;

    site.backend.state().mesh_down = true;
    let r = c
        .post(
            "/login",
            &[
                ("username", "jake"),
                ("password", "jake99"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("The backend is unreachable right now"));
    assert!(r.cookie("zt_session").is_none());
}

#[actix_web::test]
async fn github_token_flow_never_echoes_or_logs_the_token() {
    let site = Site::start();
    let mut c = site.client();
    c.login("jake", "jake99").await;
    let page = c.get("/github").await;
    assert!(page.body.contains("Not configured"));
    assert!(
        page.body.contains(r#"type="password""#) && page.body.contains(r#"autocomplete="off""#)
    );

    let rejected = "ghp_rejected_DO_NOT_ECHO_4431";
    let r = c
        .post(
            "/github",
            &[
                ("action", "save"),
                ("token", rejected),
                ("csrf_token", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("GitHub rejected this token"), "{}", r.body);
    assert!(!r.body.contains(rejected));

    for (bad, msg) in [
        ("", "Paste a GitHub personal access token."),
        ("ghp with spaces", "no spaces"),
        (&"g".repeat(600)[..], "too long"),
    ] {
        let r = c
            .post(
                "/github",
                &[
                    ("action", "save"),
                    ("token", bad),
                    ("csrf_token", &page.csrf()),
                ],
            )
            .await;
        assert_eq!(r.status, 422, "{bad:.20}");
        assert!(r.body.contains(msg), "{msg}");
        assert!(bad.is_empty() || !r.body.contains(bad));
    }

    let good = "ghp_good_SECRET_VALUE_9921";
    let r = c
        .post(
            "/github",
            &[
                ("action", "save"),
                ("token", &format!("  {good}\n")),
                ("csrf_token", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location().as_deref(), Some("/github?msg=token_saved"));
    assert_eq!(
        site.backend.state().github_tokens["jake"],
        good,
        "trimmed token forwarded"
    );
    let page = c.get("/github?msg=token_saved").await;
    assert!(page
        .body
        .contains("GitHub token saved and verified with GitHub."));
    assert!(page.body.contains("Configured") && page.body.contains("Replace token"));
    assert!(!page.body.contains(good));

    let r = c
        .post(
            "/github",
            &[("action", "remove"), ("csrf_token", &page.csrf())],
        )
        .await;
    assert_eq!(r.location().as_deref(), Some("/github?msg=token_removed"));
    let r = c
        .post(
            "/github",
            &[("action", "remove"), ("csrf_token", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("There was no token to remove."));
    let r = c
        .post(
            "/github",
            &[("action", "explode"), ("csrf_token", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, 400);

    let log = logs().text();
    assert!(
        log.contains("signed in") && log.contains("github token refused"),
        "the capture works"
    );
    for secret in [good, rejected, "jake99"] {
        assert!(!log.contains(secret), "{secret} was logged");
    }
    // Tokens travel in request bodies only.
    assert!(site.backend.seen().iter().all(|s| !s.path.contains(good)));
}

#[actix_web::test]
async fn hostile_strings_from_the_backend_are_escaped_and_links_sanitised() {
    let site = Site::start();
    {
        let mut s = site.backend.state();
        s.github_tokens.insert("jake".into(), "ghp_good_x".into());
        s.repos = vec![json!({
            "name": "<script>alert('name')</script>",
            "full_name": "evil/<script>alert('full')</script>",
            "private": false,
            "html_url": "javascript:alert(document.cookie)",
            "description": "\"><img src=x onerror=alert(1)>",
            "language": "<b>Rust</b>",
            "stargazers_count": 1,
            "updated_at": "<time>"
        })];
        s.github_user = json!({
            "login": "<svg onload=alert(1)>", "name": "\"><script>x()</script>",
            "avatar_url": "javascript:alert(1)", "html_url": "data:text/html,<script>alert(1)</script>",
            "bio": "<iframe src=//evil>", "company": null, "location": "'; DROP TABLE users; --",
            "public_repos": 1, "followers": 0, "following": 0
        });
        s.db_user = "<script>alert('db')</script>".into();
    }
    let mut c = site.client();
    c.login("jake", "jake99").await;
    let repos = c.get("/github/repos").await;
    assert_eq!(repos.status, 200);
    let profile = c.get("/github/profile").await;
    let zt = c.get("/zero-trust").await;
    for page in [&repos, &profile, &zt] {
        for raw in [
            "<script>alert",
            "<img src=x",
            "<b>Rust",
            "<svg onload",
            "<iframe",
            "javascript:",
            "data:text/html",
        ] {
            assert!(!page.body.contains(raw), "raw {raw:?} in page");
        }
    }
    assert!(
        repos
            .body
            .contains(&html("evil/<script>alert('full')</script>")),
        "{}",
        repos.body
    );
    assert!(repos
        .body
        .contains(&html("\"><img src=x onerror=alert(1)>")));
    assert!(repos.body.contains(&html("<b>Rust</b>")));
    assert!(profile.body.contains(&html("<svg onload=alert(1)>")));
    assert!(profile.body.contains(&html("'; DROP TABLE users; --")));
    assert!(zt.body.contains(&html("<script>alert('db')</script>")));
    // No link for a javascript: URL; no image for a javascript: avatar.
    assert!(!repos.body.contains("<a href=\"javascript"));
    assert!(!profile.body.contains("<img"));
}

#[actix_web::test]
async fn repositories_paginate_and_filter_across_pages() {
    let site = Site::start();
    site.backend
        .state()
        .github_tokens
        .insert("jake".into(), "ghp_good_x".into());
    let mut c = site.client();
    c.login("jake", "jake99").await;

    let p1 = c.get("/github/repos").await;
    assert_eq!(p1.status, 200);
    assert_eq!(p1.body.matches("data-search=").count(), 30);
    assert!(p1.body.contains("octocat/repo-00") && !p1.body.contains("octocat/repo-30"));
    assert!(
        p1.body.contains(r#"href="/github/repos?page=2""#) && !p1.body.contains("rel=\"prev\"")
    );
    assert!(p1.body.contains("Private") && p1.body.contains("Public"));
    assert!(p1.body.contains("2,405"), "stars formatted");

    let p3 = c.get("/github/repos?page=3").await;
    assert_eq!(p3.body.matches("data-search=").count(), 5);
    assert!(
        p3.body.contains(r#"href="/github/repos?page=2""#) && !p3.body.contains("rel=\"next\"")
    );
    assert!(site
        .backend
        .seen()
        .iter()
        .any(|s| s.path == "/api/github/repos?page=3&per_page=30"));

    // The filter searches every repository, not only the page shown.
    // "number 1" is in the descriptions of repos 1, 10, 11, 13, 14, 16, 17, 19.
    let f = c.get("/github/repos?q=Number%201").await;
    assert!(
        f.body
            .contains("8 repositories match “Number 1” among all 65 repositories"),
        "{}",
        f.body
    );
    assert_eq!(f.body.matches("data-search=").count(), 8);
    assert!(
        f.body.contains("octocat/repo-01")
            && f.body.contains("octocat/repo-19")
            && !f.body.contains("octocat/repo-12")
    );
    assert!(site
        .backend
        .seen()
        .iter()
        .any(|s| s.path == "/api/github/repos?page=1&per_page=100"));
    let f = c.get("/github/repos?q=zzz-nothing").await;
    assert!(f.body.contains("No repository matches"));

    for (bad, msg) in [
        ("/github/repos?page=0", "whole number from 1 to 1000"),
        ("/github/repos?page=abc", "whole number from 1 to 1000"),
        (
            "/github/repos?page=99999999999",
            "whole number from 1 to 1000",
        ),
        (
            &format!("/github/repos?q={}", "x".repeat(101))[..],
            "limited to 100 characters",
        ),
        ("/github/repos?q=%00", "control characters"),
    ] {
        let r = c.get(bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.body.contains(msg), "{bad}: {}", r.body);
        assert!(r.body.contains("Error 400"));
    }
}

#[actix_web::test]
async fn github_problems_become_readable_messages() {
    let site = Site::start();
    let mut c = site.client();
    c.login("jake", "jake99").await;
    // Not configured: a link to configure, not an error.
    for p in ["/github/repos", "/github/profile"] {
        let r = c.get(p).await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("No GitHub token yet") && r.body.contains(r#"href="/github""#));
    }
    site.backend
        .state()
        .github_tokens
        .insert("jake".into(), "ghp_good_x".into());
    site.backend.state().github_error = Some((
        502,
        "github_rate_limited".into(),
        "GitHub's rate limit is exhausted; it resets at 15:04 UTC".into(),
    ));
    for (p, retry) in [
        ("/github/repos?page=2", "/github/repos?page=2"),
        ("/github/repos?q=zt", "/github/repos"),
        ("/github/profile", "/github/profile"),
    ] {
        let r = c.get(p).await;
        assert_eq!(r.status, 502, "{p}");
        assert!(
            r.body.contains(&html("GitHub's rate limit is exhausted")),
            "{}",
            r.body
        );
        assert!(
            r.body.contains(&format!(r#"<a href="{retry}" class="mt-4 inline-block font-semibold underline underline-offset-2">Try again</a>"#)),
            "{p}: {}",
            r.body
        );
    }
    // The backend's per-user limit on GitHub reads: a 429 with its
    // Retry-After, not a 502 (nothing is down).
    site.backend.state().github_error = Some((
        429,
        "rate_limited".into(),
        "Too many GitHub requests from this account; try again in 42 seconds".into(),
    ));
    for p in ["/github/repos", "/github/repos?q=zt", "/github/profile"] {
        let r = c.get(p).await;
        assert_eq!(r.status, 429, "{p}");
        assert_eq!(r.headers["retry-after"], "42", "{p}");
        assert!(
            r.body
                .contains("Too many GitHub requests from this account"),
            "{p}: {}",
            r.body
        );
    }
    // And the form's token check (the backend's check limit).
    let csrf = c.get("/github").await.csrf();
    let r = c
        .post(
            "/github",
            &[
                ("action", "save"),
                ("token", "ghp_good_again"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "42");
    assert!(r
        .body
        .contains("Too many GitHub requests from this account"));
    site.backend.state().github_error = None;
    let r = c.get("/github/profile").await;
    assert!(
        r.body.contains("The Octocat") && r.body.contains("@octocat") && r.body.contains("4,242")
    );
}

#[actix_web::test]
async fn backend_unreachable_gives_a_friendly_page_not_a_crash() {
    // Nothing listens on the backend URL at all.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let backend = FakeBackend::start();
    let fe = Frontend::start(&dead_url, &dead_url, &[]);
    let mut c = Client::new(&fe.url);
    let csrf = c.get("/login").await.csrf();
    let r = c
        .post(
            "/login",
            &[
                ("username", "jake"),
                ("password", "jake99"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("The backend is unreachable right now"));

    // Signed in (token from the stand-in), then the mesh goes down.
    let site = Site {
        frontend: Frontend::start(&backend.url, &backend.url, &[]),
        backend,
    };
    let mut c = site.client();
    c.login("jake", "jake99").await;
    site.backend.state().mesh_down = true;
    for p in ["/", "/github", "/github/repos", "/github/profile"] {
        let r = c.get(p).await;
        assert_eq!(r.status, 503, "{p}");
        assert!(r.body.contains("The backend is unreachable"), "{p}");
        assert!(
            r.body.contains(&format!(r#"href="{p}""#)),
            "retry link for {p}"
        );
        assert!(
            c.jar.contains_key("zt_session"),
            "an outage does not sign the user out"
        );
    }
    // The zero-trust page degrades in place instead.
    let r = c.get("/zero-trust").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains(&html("The backend's status is unavailable (HTTP 502)")),
        "{}",
        r.body
    );
    assert!(r
        .body
        .contains("spiffe://demo.local/ns/99-apps/sa/frontend"));
    // ... but only for a session the backend accepted: the frontend cannot
    // verify a token itself, so a forged cookie gets the outage page, and
    // nothing of the frontend's sidecar.
    use base64::Engine as _;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged = format!(
        "{}.{}.Zm9yZ2Vk",
        e.encode(r#"{"alg":"HS256"}"#),
        e.encode(r#"{"username":"x","exp":4102444800}"#)
    );
    let mut stranger = site.client();
    stranger.jar.insert("zt_session".into(), forged);
    for p in ["/zero-trust", "/zero-trust/panel"] {
        let r = stranger.get(p).await;
        assert_eq!(r.status, 503, "{p}: {}", r.body);
        assert!(r.body.contains("The backend is unreachable"), "{p}");
        assert!(!r.body.contains("spiffe://"), "{p}: {}", r.body);
        assert!(!r.body.contains("Signed in as"), "{p}");
    }
    site.backend.state().mesh_down = false;
    assert_eq!(
        c.get("/github").await.status,
        200,
        "recovers without restart"
    );

    // The backend answers, but with an error that does not verify the
    // token (its revocation check cannot reach the database): a session it
    // accepted keeps the degraded view; one it never accepted (signed out
    // before this frontend started, say) sees nothing of the sidecars.
    site.backend.state().db_down = true;
    let r = c.get("/zero-trust").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r
        .body
        .contains("spiffe://demo.local/ns/99-apps/sa/frontend"));
    for p in ["/zero-trust", "/zero-trust/panel"] {
        let r = stranger.get(p).await;
        assert_eq!(r.status, 502, "{p}: {}", r.body);
        assert!(
            r.body.contains("The database is unavailable"),
            "{p}: {}",
            r.body
        );
        assert!(!r.body.contains("spiffe://"), "{p}: {}", r.body);
    }
    site.backend.state().db_down = false;

    // A user who is not an operator, with a session from before this
    // frontend started: the backend's 403 verifies the session, so the page
    // shows the frontend's half, and goes on doing so in an outage.
    site.backend.state().not_operators.insert("amy".into());
    let mut amy = site.client();
    amy.login("amy", "amy99").await;
    let restarted = Frontend::start(&site.backend.url, &site.backend.url, &[]);
    let mut amy_later = Client::new(&restarted.url);
    amy_later.jar = amy.jar;
    for mesh_down in [false, true] {
        site.backend.state().mesh_down = mesh_down;
        let r = amy_later.get("/zero-trust").await;
        assert_eq!(r.status, 200, "mesh down: {mesh_down}: {}", r.body);
        assert!(r
            .body
            .contains("spiffe://demo.local/ns/99-apps/sa/frontend"));
    }
    site.backend.state().mesh_down = false;
    restarted.stop().await;
}

#[actix_web::test]
async fn zero_trust_page_shows_identities_credentials_and_rules() {
    let site = Site::start();
    let mut c = site.client();
    c.login("jake", "jake99").await;
    let r = c.get("/zero-trust").await;
    assert_eq!(r.status, 200);
    for want in [
        "spiffe://demo.local/ns/99-apps/sa/backend",
        "spiffe://demo.local/ns/99-apps/sa/frontend",
        r#"id="db-user""#,
        "v-backend-role-x1y2z3a4b5-1795874910",
        "secret/data/github/users/*",
        "GET, PUT, POST, DELETE",
        "backend-role",
        "data-countdown",
        r#"data-refresh-url="/zero-trust/panel""#,
        r#"<noscript><meta http-equiv="refresh" content="10"></noscript>"#,
    ] {
        assert!(r.body.contains(want), "missing {want:?}");
    }
    // The panel alone, after a rotation.
    {
        let mut s = site.backend.state();
        s.db_user = "v-backend-role-rotated-0002".into();
        s.db_rotations = 1;
    }
    let p = c.get("/zero-trust/panel").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("v-backend-role-rotated-0002") && !p.body.contains("<html"));
    // The frontend sidecar may be down: the backend half still shows.
    site.backend.state().sidecar_down = true;
    let r = c.get("/zero-trust").await;
    assert_eq!(r.status, 200);
    assert!(r
        .body
        .contains(&html("frontend sidecar's status is unavailable (HTTP 503)")));
    assert!(r.body.contains("spiffe://demo.local/ns/99-apps/sa/backend"));
    // Without a session the panel sends the script to log in for the page.
    let mut anon = site.client();
    let r = anon.get("/zero-trust/panel").await;
    assert_eq!(r.location().as_deref(), Some("/login?next=/zero-trust"));
}

#[actix_web::test]
async fn friendly_404_security_headers_and_hashed_static_files() {
    let site = Site::start();
    let mut c = site.client();
    let r = c.get("/no/such/page").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("Page not found") && r.body.contains("Go to the dashboard"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));

    let login = c.get("/login").await;
    let css = regex_find(&login.body, r#"href="(/static/app\.[0-9a-f]{12}\.css)""#);
    let js = regex_find(&login.body, r#"src="(/static/app\.[0-9a-f]{12}\.js)""#);
    let r = c.get(&css).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
    assert!(r.body.contains("tailwindcss"));
    assert_eq!(c.get(&js).await.status, 200);
    assert_eq!(c.get("/static/app.css").await.status, 404);
    assert_eq!(c.get("/static/app.000000000000.css").await.status, 404);
    assert_eq!(c.get("/healthz").await.body, "ok\n");
}

fn regex_find(body: &str, pattern: &str) -> String {
    // Tiny matcher for href="(/static/app.<12 hex>.<ext>)".
    let ext = if pattern.contains("css") { "css" } else { "js" };
    let start = body.find("/static/app.").unwrap();
    let rest = &body[start..];
    let mut from = 0;
    loop {
        let i = rest[from..].find("/static/app.").unwrap() + from;
        let cand = &rest[i..];
        let end = cand.find('"').unwrap();
        let url = &cand[..end];
        if url.ends_with(&format!(".{ext}")) {
            return url.to_string();
        }
        from = i + 1;
    }
}

#[actix_web::test]
async fn oversize_malformed_and_wrongly_typed_forms_get_clear_errors() {
    let site = Site::start();
    let mut c = site.client();
    let csrf = c.get("/login").await.csrf();
    let big = "a".repeat(64 * 1024);
    let r = c
        .post(
            "/login",
            &[("username", &big), ("password", "x"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 413);
    assert!(r.body.contains("That form was too large"));
    let r = c
        .post_raw(
            "/login",
            "application/json",
            br#"{"username":"jake"}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("HTML form submissions only"));
    let r = c
        .post_raw(
            "/login",
            "application/x-www-form-urlencoded",
            b"username=a&username=b".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("The form could not be read"));
    let r = c
        .post_raw(
            "/login",
            "application/x-www-form-urlencoded",
            vec![0xff, 0xfe, b'=', 0x80],
        )
        .await;
    assert!(r.status == 400 || r.status == 403, "{}", r.status);
    let r = c.get("/login?next=a&next=b").await;
    assert_eq!(r.status, 400);
    assert_eq!(site.backend.api_calls(), 0);
}

/// What [`trickle`] saw: the answer (whole, up to the close), when it
/// began and when the connection closed, counted from the end of the head.
struct Trickled {
    answer: String,
    first: std::time::Duration,
    closed: std::time::Duration,
}

impl Trickled {
    /// The answer has `status`, says `Connection: close`, and the frontend
    /// closed the connection within `within`.
    fn answered_then_closed(&self, status: &str, within: std::time::Duration) {
        let answer = &self.answer;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(self.closed < within, "closed after {:?}", self.closed);
    }
}

/// Sends `head` then `body` over a new connection to `site`, `step` bytes
/// every `pause` (then nothing, the connection kept open), reading the
/// answer meanwhile until the frontend closes the connection.
async fn trickle(
    site: &Site,
    head: &str,
    body: &[u8],
    step: usize,
    pause: std::time::Duration,
) -> Trickled {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = site.frontend.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (mut r, mut w) = s.into_split();
    let body = body.to_vec();
    let sender = tokio::spawn(async move {
        for piece in body.chunks(step) {
            tokio::time::sleep(pause).await;
            if w.write_all(piece).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 8192];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first.get_or_insert_with(|| started.elapsed());
                    answer.extend_from_slice(&buf[..n]);
                }
            }
        }
    })
    .await;
    sender.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        read.is_ok(),
        "the connection was still open after 30 s; answer so far: {answer}"
    );
    Trickled {
        first: first.unwrap_or_else(|| panic!("no answer before the close: {answer}")),
        closed: started.elapsed(),
        answer,
    }
}

#[actix_web::test]
async fn slow_clients_cannot_hold_a_connection_open() {
    let site = Site::start_with(&[("FRONTEND_BODY_TIMEOUT", "1s")]);
    let limit = std::time::Duration::from_secs(1);
    let pause = std::time::Duration::from_millis(100);
    let mut c = site.client();
    let csrf = c.get("/login").await.csrf();
    let cookies = format!("zt_csrf={}", c.jar["zt_csrf"]);
    let body = format!("username=jake&password=jake99&csrf_token={csrf}&next=");
    let form_head = |framing: &str| {
        format!(
            "POST /login HTTP/1.1\r\nHost: t\r\nCookie: {cookies}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
        )
    };
    let logins = || {
        site.backend
            .seen()
            .iter()
            .filter(|s| s.path == "/api/auth/login")
            .count()
    };

    // A form with a length, one byte every 100 ms: it would take seconds;
    // at 1 s the frontend answers 408 and closes. Nothing reaches the backend.
    let by_length = form_head(&format!("Content-Length: {}", body.len()));
    let t = trickle(&site, &by_length, body.as_bytes(), 1, pause).await;
    t.answered_then_closed("408", 5 * limit);
    assert!(
        t.answer.contains("That form arrived too slowly"),
        "{}",
        t.answer
    );
    assert!(
        t.first >= limit && t.first < 4 * limit,
        "answered after {:?}",
        t.first
    );
    assert_eq!(logins(), 0, "a form that came too slowly was used");
    assert!(
        logs()
            .text()
            .contains("form refused: its body did not arrive within FRONTEND_BODY_TIMEOUT"),
        "the refusal is logged"
    );

    // The same form chunked, a byte per chunk, and the client goes on
    // sending chunks after the answer: 408, and the connection closes all
    // the same (actix would otherwise read a chunked body on after
    // answering, with no time limit).
    let chunked: Vec<u8> = body
        .bytes()
        .flat_map(|b| [b'1', b'\r', b'\n', b, b'\r', b'\n'])
        .collect();
    let t = trickle(
        &site,
        &form_head("Transfer-Encoding: chunked"),
        &chunked,
        6,
        pause,
    )
    .await;
    t.answered_then_closed("408", 5 * limit);
    assert_eq!(logins(), 0);

    // A chunked body on a route that reads none, then silence; and the
    // first byte of a second request head, then silence (no connection
    // outlives its answer): answered, and closed.
    for (head, then) in [
        (
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
            b"".as_slice(),
        ),
        ("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", b"G".as_slice()),
    ] {
        trickle(&site, head, then, 1, pause)
            .await
            .answered_then_closed("200", 5 * limit);
    }

    // A body that is slow but whole within the limit is used: the same
    // form in four pieces 100 ms apart signs Jake in.
    let t = trickle(
        &site,
        &by_length,
        body.as_bytes(),
        body.len().div_ceil(4),
        pause,
    )
    .await;
    assert!(t.answer.starts_with("HTTP/1.1 303 "), "{}", t.answer);
    assert!(t.answer.contains("zt_session="), "{}", t.answer);
    assert_eq!(logins(), 1);
}
