//! KV v2 secrets rendered to files: re-read every `refresh_interval`,
//! rewritten only when OpenBao's version changes.

use std::path::PathBuf;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zt_contracts::KvFile;

use crate::backoff::Backoff;
use crate::config::{BackoffConfig, KvSecret};
use crate::openbao::OpenBao;
use crate::openbao::{current_token, sleep_or_cancel, TokenCheck, Tokens};
use crate::secrets::SecretsEnv;
use crate::secrets::{write_atomic, FilePolicy};
use crate::status::{SecretKind, State};

/// Keeps one `[[secrets.kv]]` file current.
pub(crate) struct KvRenderer {
    cfg: KvSecret,
    bao: OpenBao,
    tokens: watch::Receiver<Tokens>,
    state: State,
    policy: FilePolicy,
    file: PathBuf,
    backoff: BackoffConfig,
    check: TokenCheck,
}

impl KvRenderer {
    /// A renderer writing `<dir>/<name>.json`.
    pub(crate) fn new(cfg: KvSecret, env: SecretsEnv) -> Self {
        let file = env.dir.join(format!("{}.json", cfg.name));
        env.declare(
            &cfg.name,
            SecretKind::Kv,
            format!("{}/{}", cfg.mount, cfg.path),
            file.clone(),
            cfg.required,
        );
        Self {
            cfg,
            bao: env.bao,
            tokens: env.tokens,
            state: env.state,
            policy: env.policy,
            file,
            backoff: env.backoff,
            check: env.check,
        }
    }

    /// Runs until cancelled.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.backoff);
        let mut written_version = None;
        loop {
            let Some(token) = current_token(&mut self.tokens, &cancel).await else {
                return;
            };
            let delay = match self
                .bao
                .kv_read(&token.secret, &self.cfg.mount, &self.cfg.path)
                .await
            {
                Ok(Some(v)) => {
                    backoff.reset();
                    if written_version != Some(v.version) {
                        let file = KvFile {
                            version: v.version,
                            created_time: v.created_time,
                            data: v.data,
                        };
                        // serde_json's errors name no value (only a
                        // created_time out of RFC 3339's range can fail).
                        let written = file
                            .to_file_bytes()
                            .map_err(std::io::Error::other)
                            .and_then(|doc| write_atomic(&self.file, &doc, self.policy));
                        match written {
                            Ok(()) => {
                                tracing::info!(secret = %self.cfg.name, version = v.version, "KV secret written");
                                written_version = Some(v.version);
                                self.state.update_secret(&self.cfg.name, |s| {
                                    s.written = true;
                                    s.version = v.version;
                                });
                            }
                            Err(e) => {
                                self.state.failure("file");
                                tracing::error!(secret = %self.cfg.name, error = %e, "cannot write KV secret file");
                            }
                        }
                    }
                    self.cfg.refresh_interval
                }
                Ok(None) => {
                    self.state.failure("kv");
                    tracing::warn!(secret = %self.cfg.name, path = %self.cfg.path, "KV secret does not exist (yet)");
                    backoff.next_delay().min(self.cfg.refresh_interval)
                }
                Err(e) => {
                    self.state.failure("kv");
                    if e.is_invalid_credential() {
                        self.check.suspect();
                    }
                    let d = backoff.next_delay().min(self.cfg.refresh_interval);
                    tracing::warn!(secret = %self.cfg.name, error = %e, retry_in_ms = d.as_millis() as u64, "cannot read KV secret");
                    d
                }
            };
            if sleep_or_cancel(delay, &cancel).await {
                return;
            }
        }
    }
}
