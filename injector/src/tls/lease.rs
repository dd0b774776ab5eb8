//! Leader election on one pre-created Lease: the replica holding it is the
//! only one that changes the TLS Secret.
//!
//! Expiry is judged the way client-go does: by how long *this* replica has
//! seen the Lease unchanged, never by comparing another replica's
//! `renewTime` with our clock. Every write is a compare-and-swap on the
//! Lease's resourceVersion, so two replicas can never both take it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;

/// Tries to hold one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// (resourceVersion, when we first saw it)
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    /// An elector for the Lease `name` (in `api`'s namespace) as `identity`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            observed: None,
        }
    }

    /// Takes or renews the Lease; `Ok(true)` while we hold it.
    pub async fn try_lead(&mut self) -> Result<bool, kube::Error> {
        let lease = self.api.get(&self.name).await?;
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let now = Instant::now();
        match &self.observed {
            Some((seen, _)) if *seen == rv => {}
            _ => self.observed = Some((rv, now)),
        }
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| now.duration_since(*at));
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let free = holder.is_empty() || unchanged_for >= self.duration;
        if !ours && !free {
            return Ok(false);
        }
        let stamp = MicroTime(Timestamp::now());
        let mut updated = lease.clone();
        updated.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            renew_time: Some(stamp.clone()),
            acquire_time: if ours { spec.acquire_time } else { Some(stamp) },
            // A transition is a change of holder, not the first one.
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or(0) + i32::from(!ours && !holder.is_empty()),
            ),
            ..spec
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                if !ours {
                    tracing::info!(lease = %self.name, previous = %holder, "took the TLS rotation lease");
                }
                self.observed = Some((
                    written.metadata.resource_version.unwrap_or_default(),
                    Instant::now(),
                ));
                Ok(true)
            }
            // Another replica wrote it first: it leads.
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
