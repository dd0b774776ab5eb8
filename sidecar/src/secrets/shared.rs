//! What every secret-keeping task shares.

use std::path::PathBuf;

use tokio::sync::watch;

use crate::config::BackoffConfig;
use crate::openbao::OpenBao;
use crate::openbao::{TokenCheck, Tokens};
use crate::secrets::FilePolicy;
use crate::status::{SecretKind, SecretStatus, State};

/// The shared context of database rotators and KV renderers.
#[derive(Clone)]
pub(crate) struct SecretsEnv {
    /// OpenBao client.
    pub bao: OpenBao,
    /// Current and retired tokens.
    pub tokens: watch::Receiver<Tokens>,
    /// Status and metrics.
    pub state: State,
    /// The secrets dir.
    pub dir: PathBuf,
    /// Mode and ownership of files.
    pub policy: FilePolicy,
    /// Retry delays.
    pub backoff: BackoffConfig,
    /// Where to report a refused token.
    pub check: TokenCheck,
}

impl SecretsEnv {
    /// Registers a secret in the status before it is first written.
    pub(crate) fn declare(
        &self,
        name: &str,
        kind: SecretKind,
        source: String,
        file: PathBuf,
        required: bool,
    ) {
        self.state
            .declare_secret(name, SecretStatus::declared(kind, source, file, required));
    }
}
