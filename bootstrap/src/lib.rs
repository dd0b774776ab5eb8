//! # zt-bootstrap
//!
//! Brings an OpenBao server from its first start to ready for the workloads,
//! from `policies/openbao/`: the code the Kubernetes bootstrap Job runs
//! (`deploy/bootstrap/bootstrap.sh` calls the `zt-bootstrap` binary) and the
//! code devstack (`make up`, the tests) configures its OpenBao with, so
//! OpenBao is configured by one piece of code everywhere.
//!
//! ```text
//!   openbao::state        uninitialised | sealed | unsealed
//!   openbao::initialise   sys/init, one Shamir share   → InitKeys
//!   openbao::unseal       sys/unseal                   → wait for openbao::active
//!   setup::OpenBaoSetup   load(policies/openbao) → apply(&Bao, &Environment):
//!                         ACL policies, jwt auth + roles, KV v2 (+ generated
//!                         secrets), database engine + roles, rotate-root
//! ```
//!
//! Every step is idempotent; errors carry OpenBao's messages, never a token
//! or a password.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod openbao;
pub mod setup;
