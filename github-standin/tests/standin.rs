//! The stand-in behaves like the parts of GitHub's API the backend uses.

use std::time::{Duration, Instant};

use github_standin::{
    AuthScheme, GithubStandIn, Mode, SeedUser, DEMO_REPOS, DEMO_TOKEN, EMPTY_TOKEN, SECOND_TOKEN,
};
use reqwest::blocking::Client;
use serde_json::Value;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn get(gh: &GithubStandIn, path: &str, auth: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(format!("{}{path}", gh.url()));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().unwrap()
}

#[test]
fn user_answers_for_token_and_bearer_schemes() {
    let gh = GithubStandIn::start().unwrap();
    for auth in [
        format!("token {DEMO_TOKEN}"),
        format!("Bearer {DEMO_TOKEN}"),
    ] {
        let r = get(&gh, "/user", Some(&auth));
        assert_eq!(r.status(), 200);
        let u: Value = r.json().unwrap();
        assert_eq!(u["login"], "jake-peralta");
        assert_eq!(u["name"], "Jake Peralta");
        for k in [
            "avatar_url",
            "html_url",
            "public_repos",
            "followers",
            "following",
            "bio",
            "company",
            "location",
        ] {
            assert!(u.get(k).is_some(), "missing {k}");
        }
    }
    let r = get(&gh, "/user", Some(&format!("token {SECOND_TOKEN}")));
    assert_eq!(r.json::<Value>().unwrap()["login"], "amy-santiago");
    let r = get(&gh, "/user", Some(&format!("token {EMPTY_TOKEN}")));
    let u: Value = r.json().unwrap();
    assert_eq!(u["login"], "rosa-diaz");
    assert_eq!(
        u["name"],
        Value::Null,
        "nullable fields are null like GitHub's"
    );
    let reqs = gh.requests();
    assert_eq!(reqs[0].auth, AuthScheme::Token);
    assert_eq!(reqs[1].auth, AuthScheme::Bearer);
    assert_eq!(reqs[0].login.as_deref(), Some("jake-peralta"));
    assert!(
        !format!("{reqs:?}").contains(DEMO_TOKEN),
        "the request log must not hold tokens"
    );
}

#[test]
fn missing_unknown_and_malformed_credentials_get_401() {
    let gh = GithubStandIn::start().unwrap();
    let r = get(&gh, "/user", None);
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().unwrap()["message"],
        "Requires authentication"
    );
    for bad in [
        "token ghp_nope".to_string(),
        "Basic Zm9vOmJhcg==".to_string(),
        "token ".to_string(),
        format!("token {}", "x".repeat(10_000)),
        "token ' OR 1=1 --".to_string(),
    ] {
        let r = get(&gh, "/user", Some(&bad));
        assert_eq!(r.status(), 401, "{bad:.40}");
    }
    let r = get(&gh, "/user/repos", Some("token ghp_nope"));
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["message"], "Bad credentials");
}

#[test]
fn repos_paginate_with_link_headers_and_sort_by_update() {
    let gh = GithubStandIn::start().unwrap();
    let auth = format!("token {DEMO_TOKEN}");
    let r = get(&gh, "/user/repos?sort=updated&per_page=30", Some(&auth));
    assert_eq!(r.status(), 200);
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.contains("page=2") && link.contains("rel=\"next\""),
        "{link}"
    );
    assert!(link.contains("rel=\"last\""), "{link}");
    let page1: Vec<Value> = r.json().unwrap();
    assert_eq!(page1.len(), 30);
    let updated: Vec<&str> = page1
        .iter()
        .map(|r| r["updated_at"].as_str().unwrap())
        .collect();
    let mut sorted = updated.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(updated, sorted, "sort=updated is newest first by default");
    assert_eq!(
        page1[0]["full_name"],
        format!("jake-peralta/{}", page1[0]["name"].as_str().unwrap())
    );

    let r = get(
        &gh,
        "/user/repos?sort=updated&per_page=30&page=2",
        Some(&auth),
    );
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        !link.contains("rel=\"next\""),
        "last page has no next: {link}"
    );
    assert!(link.contains("rel=\"prev\""), "{link}");
    let page2: Vec<Value> = r.json().unwrap();
    assert_eq!(page1.len() + page2.len(), DEMO_REPOS);
    assert!(page2[0]["updated_at"].as_str().unwrap() <= updated[29]);

    // Beyond the end: an empty page. Garbage paging values fall back to defaults.
    let r = get(&gh, "/user/repos?page=9", Some(&auth));
    assert_eq!(r.json::<Vec<Value>>().unwrap().len(), 0);
    let r = get(&gh, "/user/repos?page=abc&per_page=-5", Some(&auth));
    assert_eq!(r.json::<Vec<Value>>().unwrap().len(), 30);
    let r = get(&gh, "/user/repos?per_page=1000", Some(&auth));
    assert_eq!(
        r.json::<Vec<Value>>().unwrap().len(),
        DEMO_REPOS,
        "per_page is capped at 100"
    );
    // A single page has no Link header at all.
    let r = get(&gh, "/user/repos", Some(&format!("token {SECOND_TOKEN}")));
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Vec<Value>>().unwrap().len(), 3);
}

#[test]
fn failure_modes_answer_like_github() {
    let gh = GithubStandIn::start().unwrap();
    let auth = format!("token {DEMO_TOKEN}");

    gh.set_mode(Mode::Unauthorized);
    assert_eq!(get(&gh, "/user", Some(&auth)).status(), 401);

    gh.set_mode(Mode::RateLimited);
    let r = get(&gh, "/user/repos", Some(&auth));
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.headers().get("x-ratelimit-reset").is_some());
    assert!(r.json::<Value>().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("rate limit"));

    gh.set_mode(Mode::ServerError);
    assert_eq!(get(&gh, "/user", Some(&auth)).status(), 500);

    gh.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let short = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = short
        .get(format!("{}/user", gh.url()))
        .header("Authorization", &auth)
        .send()
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let start = Instant::now();
    assert_eq!(get(&gh, "/user", Some(&auth)).status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(1400));

    gh.set_mode(Mode::Normal);
    assert_eq!(get(&gh, "/user", Some(&auth)).status(), 200);
    // The probe used by `make up` answers whatever the mode.
    gh.set_mode(Mode::ServerError);
    assert_eq!(get(&gh, "/rate_limit", None).status(), 200);
}

#[test]
fn mode_can_be_switched_over_http() {
    let gh = GithubStandIn::start().unwrap();
    let c = client();
    let url = format!("{}/_standin/mode", gh.url());
    let r = c
        .put(&url)
        .json(&serde_json::json!({"mode": "rate_limited"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gh.mode(), Mode::RateLimited);
    let r = c
        .put(&url)
        .json(&serde_json::json!({"mode": "slow", "delay_ms": 250}))
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["delay_ms"], 250);
    assert_eq!(gh.mode(), Mode::Slow(Duration::from_millis(250)));
    for bad in [r#"{"mode": "explode"}"#, "not json", r#"{"mode": 5}"#] {
        let r = c
            .put(&url)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(
        gh.mode(),
        Mode::Slow(Duration::from_millis(250)),
        "refused changes change nothing"
    );
    assert_eq!(
        c.get(&url).send().unwrap().json::<Value>().unwrap()["mode"],
        "slow"
    );
}

#[test]
fn custom_users_and_unknown_routes() {
    let gh = GithubStandIn::start().unwrap();
    gh.add_user(
        "ghp_custom",
        SeedUser {
            id: 1,
            login: "hitchcock".into(),
            name: None,
            bio: None,
            company: None,
            location: None,
            followers: 0,
            following: 0,
            repos: Vec::new(),
        },
    );
    let r = get(&gh, "/user", Some("Bearer ghp_custom"));
    assert_eq!(r.json::<Value>().unwrap()["login"], "hitchcock");
    for path in ["/nope", "/user/../etc/passwd", "/users/jake-peralta/repos"] {
        let r = get(&gh, path, Some(&format!("token {DEMO_TOKEN}")));
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.json::<Value>().unwrap()["message"], "Not Found");
    }
}

#[test]
fn binary_refuses_bad_arguments_with_exit_64() {
    let bin = env!("CARGO_BIN_EXE_github-standin");
    for args in [["--listen", "nonsense"], ["--mode", "explode"]] {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("invalid configuration: "), "{err}");
    }
}

#[test]
fn binary_serves_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_github-standin"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/user");
    let start = Instant::now();
    let status = loop {
        match client()
            .get(&url)
            .header("Authorization", format!("token {DEMO_TOKEN}"))
            .send()
        {
            Ok(r) => break r.status(),
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("stand-in never answered: {e}"),
        }
    };
    assert_eq!(status, 200);
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code}");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("listening on"), "{out}");
    assert!(!out.contains(DEMO_TOKEN), "full tokens are never printed");
}
