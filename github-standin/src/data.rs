//! Seeded GitHub users and repositories, keyed by the token that unlocks them.

use std::collections::HashMap;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// The token the demo uses (`make demo` without `GITHUB_TOKEN`): user
/// `jake-peralta` with [`DEMO_REPOS`] repositories (two pages at GitHub's
/// default `per_page=30`).
pub const DEMO_TOKEN: &str = "ghp_standin_demo_token_0123456789abcdef";
/// A second user, `amy-santiago`, with [`SECOND_REPOS`] repositories: lets
/// tests tell two users' tokens apart.
pub const SECOND_TOKEN: &str = "ghp_standin_second_token_fedcba9876543210";
/// A user with no repositories at all, `rosa-diaz`.
pub const EMPTY_TOKEN: &str = "ghp_standin_empty_token_00000000000000000";
/// How many repositories [`DEMO_TOKEN`]'s user has.
pub const DEMO_REPOS: usize = 35;
/// How many repositories [`SECOND_TOKEN`]'s user has.
pub const SECOND_REPOS: usize = 3;

/// A GitHub user as the stand-in serves it from `GET /user`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedUser {
    /// Numeric account id.
    pub id: u64,
    /// `login`.
    pub login: String,
    /// Display name (GitHub returns `null` when unset).
    pub name: Option<String>,
    /// `bio`, nullable.
    pub bio: Option<String>,
    /// `company`, nullable.
    pub company: Option<String>,
    /// `location`, nullable.
    pub location: Option<String>,
    /// Follower count.
    pub followers: u64,
    /// Following count.
    pub following: u64,
    /// The user's repositories, in no particular order.
    pub repos: Vec<SeedRepo>,
}

/// A repository as the stand-in serves it from `GET /user/repos`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRepo {
    /// Numeric id.
    pub id: u64,
    /// Short name (`full_name` is `<login>/<name>`).
    pub name: String,
    /// Private repositories do not count in `public_repos`.
    pub private: bool,
    /// Nullable description.
    pub description: Option<String>,
    /// Nullable main language.
    pub language: Option<String>,
    /// Stars.
    pub stargazers_count: u64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last update (what `sort=updated` orders by).
    pub updated_at: OffsetDateTime,
    /// Last push.
    pub pushed_at: OffsetDateTime,
}

fn ts(t: OffsetDateTime) -> String {
    // Whole seconds, `Z`: the shape GitHub uses.
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl SeedUser {
    /// `GET /user` JSON (the fields GitHub returns that anyone might read).
    pub fn to_json(&self, base_url: &str) -> Value {
        let public = self.repos.iter().filter(|r| !r.private).count();
        json!({
            "login": self.login,
            "id": self.id,
            "node_id": format!("U_standin{}", self.id),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", self.id),
            "html_url": format!("https://github.com/{}", self.login),
            "url": format!("{base_url}/users/{}", self.login),
            "repos_url": format!("{base_url}/users/{}/repos", self.login),
            "type": "User",
            "site_admin": false,
            "name": self.name,
            "company": self.company,
            "blog": "",
            "location": self.location,
            "email": null,
            "hireable": null,
            "bio": self.bio,
            "twitter_username": null,
            "public_repos": public,
            "public_gists": 0,
            "followers": self.followers,
            "following": self.following,
            "created_at": "2013-09-17T20:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        })
    }

    /// One repository's JSON as `GET /user/repos` returns it.
    pub fn repo_json(&self, repo: &SeedRepo, base_url: &str) -> Value {
        let full_name = format!("{}/{}", self.login, repo.name);
        json!({
            "id": repo.id,
            "node_id": format!("R_standin{}", repo.id),
            "name": repo.name,
            "full_name": full_name,
            "private": repo.private,
            "owner": { "login": self.login, "id": self.id, "type": "User" },
            "html_url": format!("https://github.com/{full_name}"),
            "description": repo.description,
            "fork": false,
            "url": format!("{base_url}/repos/{full_name}"),
            "created_at": ts(repo.created_at),
            "updated_at": ts(repo.updated_at),
            "pushed_at": ts(repo.pushed_at),
            "stargazers_count": repo.stargazers_count,
            "watchers_count": repo.stargazers_count,
            "language": repo.language,
            "visibility": if repo.private { "private" } else { "public" },
            "default_branch": "main",
        })
    }
}

/// The seeded users, keyed by token: [`DEMO_TOKEN`], [`SECOND_TOKEN`], [`EMPTY_TOKEN`].
pub fn default_users() -> HashMap<String, SeedUser> {
    // A fixed "now" keeps responses identical from run to run.
    let base =
        OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let languages = [
        Some("Rust"),
        Some("Go"),
        None,
        Some("Python"),
        Some("TypeScript"),
    ];
    // Updates are deliberately not in id order, so sorting is observable.
    let jake_repos = (0..DEMO_REPOS)
        .map(|i| {
            let i64v = i as i64;
            let hours = (i64v * 37) % (DEMO_REPOS as i64) * 11 + 1;
            SeedRepo {
                id: 1000 + i as u64,
                name: format!("nine-nine-case-{i:02}"),
                private: i % 7 == 3,
                description: if i % 5 == 2 {
                    None
                } else {
                    Some(format!("Case file #{i}: cool cool cool, no doubt no doubt"))
                },
                language: languages[i % languages.len()].map(str::to_string),
                stargazers_count: (i as u64 * 13) % 50,
                created_at: base - Duration::days(400 + i64v),
                updated_at: base - Duration::hours(hours),
                pushed_at: base - Duration::hours(hours + 2),
            }
        })
        .collect();
    let amy_repos = [
        "binder-organizer",
        "color-coded-tabs",
        "captain-holt-quotes",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| SeedRepo {
        id: 2000 + i as u64,
        name: (*name).to_string(),
        private: false,
        description: Some(format!("{name}, alphabetised")),
        language: Some("Rust".into()),
        stargazers_count: 99,
        created_at: base - Duration::days(100),
        updated_at: base - Duration::days(i as i64 + 1),
        pushed_at: base - Duration::days(i as i64 + 1),
    })
    .collect();
    let mut users = HashMap::new();
    users.insert(
        DEMO_TOKEN.to_string(),
        SeedUser {
            id: 9901,
            login: "jake-peralta".into(),
            name: Some("Jake Peralta".into()),
            bio: Some("Detective, Brooklyn 99. Title of your sex tape.".into()),
            company: Some("NYPD".into()),
            location: Some("Brooklyn, NY".into()),
            followers: 99,
            following: 9,
            repos: jake_repos,
        },
    );
    users.insert(
        SECOND_TOKEN.to_string(),
        SeedUser {
            id: 9902,
            login: "amy-santiago".into(),
            name: Some("Amy Santiago".into()),
            bio: None,
            company: Some("NYPD".into()),
            location: None,
            followers: 42,
            following: 1,
            repos: amy_repos,
        },
    );
    users.insert(
        EMPTY_TOKEN.to_string(),
        SeedUser {
            id: 9903,
            login: "rosa-diaz".into(),
            name: None,
            bio: None,
            company: None,
            location: None,
            followers: 0,
            following: 0,
            repos: Vec::new(),
        },
    );
    users
}
