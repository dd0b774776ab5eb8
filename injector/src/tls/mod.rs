//! The injector's own TLS: a serving CA shared by every replica through one
//! Secret, a Lease so that only one replica rotates it, and the
//! MutatingWebhookConfiguration's `caBundle` kept current by every replica.
//!
//! ```text
//!   Secret zt-injector-tls          ca-bundle.pem   every CA the API server must trust now
//!   (pre-created by the chart)      ca.pem/-key     the CA that signs serving certificates
//!                                   next-ca.pem/-key  a CA being introduced (phase ca-added)
//!                                   tls.pem/-key    the serving certificate every replica serves
//!                                   annotations: generation, phase, phase-since, names
//!
//!   every replica, every poll_interval:
//!     read the Secret ──▶ serve its tls.pem (rustls resolver, next handshake)
//!     try the Lease   ──▶ leader? step() the state machine, write the Secret (CAS)
//!     caBundle        ──▶ webhook configuration := ca-bundle.pem, if its
//!                          recorded generation is older than ours (never backwards)
//!
//!   CA rotation (leader, when a third of the CA's life is left):
//!     stable ──▶ ca-added      bundle [old, new]; still serving old-signed
//!            ──▶ ca-switched   after rotation_dwell: serving new-signed; bundle [old, new]
//!            ──▶ stable        after rotation_dwell: bundle [new]
//! ```
//!
//! At every moment each replica serves a certificate that the `caBundle`
//! trusts: the bundle gains the new CA a full dwell before any replica
//! serves a certificate it signed, and loses the old CA a full dwell after
//! the leader stopped issuing from it — longer than any replica that is
//! still ready takes to pick the new certificate up (a replica that could
//! not read the Secret for three polls reports not ready). A serving
//! certificate renewal keeps the CA, so the bundle does not change.

mod lease;
mod pki;
mod rotator;
mod serving;
mod state;

pub use lease::LeaderElector;
pub use pki::{Ca, Leaf, PrivatePem, TlsError};
pub use rotator::{Rotator, TlsStatus};
pub use serving::ServingCert;
pub use state::{step, Phase, StepConfig, TlsState, ANNOTATION_CA_GENERATION};
