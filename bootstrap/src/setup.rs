//! Configures OpenBao from `policies/openbao/` — the one piece of code that
//! does so, used by devstack (tests, `make up`) and by the Kubernetes
//! bootstrap Job (`zt-bootstrap configure-openbao`). Every step is idempotent.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::openbao::Bao;

/// The parsed `policies/openbao/` folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBaoSetup {
    /// JWT-SVID auth.
    pub jwt: JwtSetup,
    /// KV v2 engine.
    pub kv: KvSetup,
    /// Database secrets engine.
    pub database: DatabaseSetup,
    /// ACL policies: (name, HCL text), one per `*.hcl` file.
    #[serde(skip)]
    pub policies: Vec<(String, String)>,
}

/// `[jwt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSetup {
    /// Auth mount path, e.g. `jwt`.
    pub mount: String,
    /// Roles workloads log in with.
    pub roles: Vec<JwtRole>,
}

/// `[[jwt.roles]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRole {
    /// Role name used at login.
    pub name: String,
    /// Exact `sub` (SPIFFE ID) accepted.
    pub bound_subject: String,
    /// Accepted `aud` values.
    pub bound_audiences: Vec<String>,
    /// Policies attached to issued tokens.
    pub policies: Vec<String>,
    /// Initial token TTL.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Hard token lifetime, renewals included.
    #[serde(with = "humantime_serde")]
    pub token_max_ttl: Duration,
}

/// `[kv]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSetup {
    /// Mount path, e.g. `secret`.
    pub mount: String,
    /// Secrets generated at bootstrap when absent.
    #[serde(default)]
    pub generate: Vec<KvGenerate>,
}

/// `[[kv.generate]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvGenerate {
    /// Path below the mount.
    pub path: String,
    /// Field that receives the random value.
    pub field: String,
    /// Random bytes (base64-encoded into the field).
    pub bytes: usize,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSetup {
    /// Mount path, e.g. `database`.
    pub mount: String,
    /// Connection name, e.g. `appdb`.
    pub connection: String,
    /// PostgreSQL database to connect to.
    pub database: String,
    /// PostgreSQL role OpenBao administers users with.
    pub admin_username: String,
    /// Go template for generated user names.
    pub username_template: String,
    /// Roles that issue credentials.
    pub roles: Vec<DbRole>,
}

/// `[[database.roles]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbRole {
    /// Role name (`database/creds/<name>`).
    pub name: String,
    /// Lease TTL of issued credentials.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest a lease can be renewed to.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// SQL run to create a user.
    pub creation_statements: Vec<String>,
    /// SQL run to drop a user.
    pub revocation_statements: Vec<String>,
}

/// Per-environment values the setup needs.
#[derive(Clone)]
pub struct Environment {
    /// Where OpenBao fetches the SPIRE JWKS.
    pub jwks_url: String,
    /// The `iss` of JWT-SVIDs (SPIRE server's `jwt_issuer`).
    pub bound_issuer: String,
    /// PostgreSQL host as OpenBao reaches it.
    pub pg_host: String,
    /// PostgreSQL port.
    pub pg_port: u16,
    /// Current password of the admin role.
    pub pg_admin_password: String,
    /// Rotate the admin password afterwards so only OpenBao knows it.
    pub rotate_root: bool,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("jwks_url", &self.jwks_url)
            .field("bound_issuer", &self.bound_issuer)
            .field("pg_host", &self.pg_host)
            .field("pg_port", &self.pg_port)
            .field("pg_admin_password", &"<redacted>")
            .field("rotate_root", &self.rotate_root)
            .finish()
    }
}

/// What a workload's token must be allowed on itself (the jwt roles attach
/// no `default` policy, which would have allowed these).
const TOKEN_UPKEEP: [&str; 2] = ["auth/token/renew-self", "auth/token/revoke-self"];

impl OpenBaoSetup {
    /// Reads `setup.toml` and every `*.hcl` policy in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let file = dir.join("setup.toml");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut setup: Self =
            toml::from_str(&text).with_context(|| format!("invalid {}", file.display()))?;
        let mut entries: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "hcl"))
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .context("policy file name")?
                .to_string();
            setup.policies.push((name, std::fs::read_to_string(&path)?));
        }
        setup.check()?;
        Ok(setup)
    }

    fn check(&self) -> anyhow::Result<()> {
        for role in &self.jwt.roles {
            if role.token_ttl > role.token_max_ttl {
                bail!("jwt role {}: token_ttl exceeds token_max_ttl", role.name);
            }
            for p in &role.policies {
                if !self.policies.iter().any(|(n, _)| n == p) {
                    bail!(
                        "jwt role {} names policy {p}, but there is no {p}.hcl",
                        role.name
                    );
                }
            }
            // Its tokens get no `default` policy (token_no_default_policy):
            // a sidecar renews and revokes its own token, so one of the
            // role's policies must name those paths.
            for upkeep in TOKEN_UPKEEP {
                let named = format!("path \"{upkeep}\"");
                let granted = self
                    .policies
                    .iter()
                    .filter(|(n, _)| role.policies.contains(n))
                    .any(|(_, hcl)| hcl.contains(&named));
                if !granted {
                    bail!(
                        "jwt role {}: none of its policies ({}) has {named} {{ capabilities = [\"update\"] }}; \
                         its tokens get no `default` policy, and zt-sidecar renews and revokes its own token",
                        role.name,
                        role.policies.join(", ")
                    );
                }
            }
        }
        for role in &self.database.roles {
            if role.default_ttl > role.max_ttl {
                bail!("database role {}: default_ttl exceeds max_ttl", role.name);
            }
        }
        Ok(())
    }

    /// Sets every JWT role's token TTLs (tests use short ones).
    pub fn set_token_ttls(&mut self, ttl: Duration, max_ttl: Duration) {
        for r in &mut self.jwt.roles {
            r.token_ttl = ttl;
            r.token_max_ttl = max_ttl;
        }
    }

    /// Sets one database role's lease TTLs.
    pub fn set_db_ttls(&mut self, role: &str, ttl: Duration, max_ttl: Duration) {
        for r in self.database.roles.iter_mut().filter(|r| r.name == role) {
            r.default_ttl = ttl;
            r.max_ttl = max_ttl;
        }
    }

    /// Applies everything, idempotently, with a root (or bootstrap) token.
    pub fn apply(&self, bao: &Bao, env: &Environment) -> anyhow::Result<()> {
        for (name, hcl) in &self.policies {
            bao.write(
                &format!("sys/policies/acl/{name}"),
                &json!({ "policy": hcl }),
            )
            .with_context(|| format!("writing policy {name}"))?;
        }

        let jwt = &self.jwt.mount;
        ensure_mounted(bao, "sys/auth", jwt, json!({"type": "jwt"}))?;
        bao.write(
            &format!("auth/{jwt}/config"),
            &json!({ "jwks_url": env.jwks_url, "bound_issuer": env.bound_issuer }),
        )
        .context("configuring jwt auth (is the OIDC discovery provider up?)")?;
        for role in &self.jwt.roles {
            bao.write(
                &format!("auth/{jwt}/role/{}", role.name),
                &json!({
                    "role_type": "jwt",
                    "user_claim": "sub",
                    "bound_subject": role.bound_subject,
                    "bound_audiences": role.bound_audiences,
                    "token_policies": role.policies,
                    "token_ttl": role.token_ttl.as_secs(),
                    "token_max_ttl": role.token_max_ttl.as_secs(),
                    "token_type": "service",
                    // Only the role's own policies: `default` would also let
                    // the token renew and look up any lease by its id, and
                    // use cubbyhole and response wrapping. What a sidecar
                    // needs of it (renew-self, revoke-self) is in each policy.
                    "token_no_default_policy": true,
                }),
            )
            .with_context(|| format!("writing jwt role {}", role.name))?;
        }

        let kv = &self.kv.mount;
        ensure_mounted(
            bao,
            "sys/mounts",
            kv,
            json!({"type": "kv", "options": {"version": "2"}}),
        )?;
        for g in &self.kv.generate {
            let path = format!("{kv}/data/{}", g.path);
            if read_after_kv_upgrade(bao, &path)?.is_none() {
                let mut bytes = vec![0u8; g.bytes];
                rand::thread_rng().fill_bytes(&mut bytes);
                let value = base64::engine::general_purpose::STANDARD.encode(&bytes);
                bao.write(&path, &json!({ "data": { &g.field: value } }))
                    .with_context(|| format!("generating {path}"))?;
            }
        }

        let db = &self.database;
        ensure_mounted(bao, "sys/mounts", &db.mount, json!({"type": "database"}))?;
        bao.write(
            &format!("{}/config/{}", db.mount, db.connection),
            &json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!(
                    "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}?sslmode=disable",
                    env.pg_host, env.pg_port, db.database
                ),
                "username": db.admin_username,
                "password": env.pg_admin_password,
                "password_authentication": "scram-sha-256",
                "allowed_roles": db.roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                "username_template": db.username_template,
                "verify_connection": true,
            }),
        )
        .context("configuring the database connection (is PostgreSQL up, roles.sql applied?)")?;
        for role in &db.roles {
            bao.write(
                &format!("{}/roles/{}", db.mount, role.name),
                &json!({
                    "db_name": db.connection,
                    "default_ttl": role.default_ttl.as_secs(),
                    "max_ttl": role.max_ttl.as_secs(),
                    "creation_statements": role.creation_statements,
                    "revocation_statements": role.revocation_statements,
                }),
            )
            .with_context(|| format!("writing database role {}", role.name))?;
        }
        if env.rotate_root {
            bao.write(
                &format!("{}/rotate-root/{}", db.mount, db.connection),
                &json!({}),
            )
            .context("rotating the database admin password")?;
        }
        Ok(())
    }
}

/// A fresh KV v2 mount answers 400 "Upgrading from non-versioned to versioned
/// data" for a moment while OpenBao upgrades it; wait that out.
fn read_after_kv_upgrade(bao: &Bao, path: &str) -> anyhow::Result<Option<Value>> {
    let start = std::time::Instant::now();
    loop {
        match bao.read(path) {
            Err(e)
                if e.to_string().contains("Upgrading from non-versioned")
                    && start.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn ensure_mounted(bao: &Bao, list: &str, mount: &str, body: Value) -> anyhow::Result<()> {
    let mounts = bao.read(list)?.unwrap_or(Value::Null);
    let key = format!("{mount}/");
    let present = mounts.get(&key).is_some() || mounts["data"].get(&key).is_some();
    if !present {
        bao.write(&format!("{list}/{mount}"), &body)
            .with_context(|| format!("mounting {mount} at {list}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's policies/openbao folder.
    fn repository_policies() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/openbao")
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(repository_policies().join("setup.toml"))
            .unwrap()
            .replace("[kv]\n", "[kv]\nbogus = 1\n");
        std::fs::write(dir.path().join("setup.toml"), text).unwrap();
        let err = OpenBaoSetup::load(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn role_naming_a_missing_policy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            repository_policies().join("setup.toml"),
            dir.path().join("setup.toml"),
        )
        .unwrap();
        let err = OpenBaoSetup::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no backend.hcl"), "{err:#}");
    }

    #[test]
    fn a_role_whose_policies_do_not_let_its_token_renew_and_revoke_itself_is_refused() {
        assert!(OpenBaoSetup::load(&repository_policies()).is_ok());
        for upkeep in TOKEN_UPKEEP {
            let dir = tempfile::tempdir().unwrap();
            for entry in std::fs::read_dir(repository_policies()).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap().replace(
                    &format!("path \"{upkeep}\""),
                    "path \"secret/data/elsewhere\"",
                );
                std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
            }
            let err = OpenBaoSetup::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(upkeep), "{err}");
            assert!(err.starts_with("jwt role backend:"), "{err}");
        }
    }
}
