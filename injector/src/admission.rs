//! One AdmissionReview in, one answer out: leave the pod alone, attach the
//! sidecar (a JSON patch), or refuse the pod with a message that names the
//! annotation at fault.
//!
//! The handler has no side effects (the webhook is registered with
//! `sideEffects: None`): a dry-run request is answered exactly like a real
//! one. The only call it makes is a `get` of the ConfigMap named by
//! `config-map`, bounded by `kubernetes.configmap_timeout`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

use crate::annotations::{
    self, AnnotationError, Intent, Leave, Refusal, Source, CONFIG_MAP, CONFIG_MAP_KEY,
};
use crate::patch::{self, Plan};
use crate::render;
use crate::settings::Settings;

/// Reads the `sidecar.toml` of a ConfigMap (a trait so unit tests pass a map).
pub trait ConfigMaps: Send + Sync {
    /// The TOML text, or what went wrong in words for the refusal.
    fn sidecar_toml(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// ConfigMaps read from the API server.
#[derive(Clone)]
pub struct KubeConfigMaps {
    client: kube::Client,
    timeout: Duration,
}

impl KubeConfigMaps {
    /// Reads with `client`, giving up after `timeout`.
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

impl ConfigMaps for KubeConfigMaps {
    async fn sidecar_toml(&self, namespace: &str, name: &str) -> Result<String, String> {
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(self.client.clone(), namespace);
        let got = tokio::time::timeout(self.timeout, api.get_opt(name))
            .await
            .map_err(|_| {
                format!(
                    "ConfigMap {namespace}/{name}: no answer from the API server within {}",
                    humantime::format_duration(self.timeout)
                )
            })?;
        let cm = match got {
            Ok(Some(cm)) => cm,
            Ok(None) => return Err(format!("ConfigMap {namespace}/{name} does not exist")),
            Err(kube::Error::Api(s)) if s.is_forbidden() => {
                return Err(format!(
                    "ConfigMap {namespace}/{name}: the injector may not read it ({})",
                    s.message
                ))
            }
            Err(e) => return Err(format!("ConfigMap {namespace}/{name}: cannot read it: {e}")),
        };
        cm.data
            .and_then(|mut d| d.remove(CONFIG_MAP_KEY))
            .ok_or_else(|| format!("ConfigMap {namespace}/{name} has no key {CONFIG_MAP_KEY}"))
    }
}

/// What happened to one pod (for the log line and the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a pod being created: nothing to do.
    NotAPodCreate,
    /// In a namespace the injector never touches.
    Excluded,
    /// Left alone (why).
    Left(Leave),
    /// The sidecar was attached.
    Injected,
    /// Refused with this message.
    Refused(String),
}

/// The admission logic, shared by the HTTPS server and the tests.
pub struct Injector<C> {
    settings: Arc<Settings>,
    configmaps: C,
}

impl<C: ConfigMaps> Injector<C> {
    /// An injector with these settings, reading ConfigMaps through `configmaps`.
    pub fn new(settings: Arc<Settings>, configmaps: C) -> Self {
        Self {
            settings,
            configmaps,
        }
    }

    /// Answers the AdmissionReview in `body` with an AdmissionReview.
    pub async fn review(&self, body: &[u8]) -> AdmissionReview<DynamicObject> {
        let started = Instant::now();
        let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "not an AdmissionReview");
                return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}"))
                    .into_review();
            }
        };
        let req: AdmissionRequest<Pod> = match review.try_into() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "AdmissionReview without a request");
                return AdmissionResponse::invalid(e.to_string()).into_review();
            }
        };
        let (response, outcome) = self.admit(&req).await;
        let pod = req
            .object
            .as_ref()
            .and_then(|p| {
                p.metadata
                    .name
                    .clone()
                    .or_else(|| p.metadata.generate_name.clone())
            })
            .unwrap_or_default();
        let ns = req.namespace.as_deref().unwrap_or_default();
        let micros = started.elapsed().as_micros() as u64;
        match &outcome {
            Outcome::Injected => tracing::info!(
                namespace = ns,
                pod = %pod,
                micros,
                dry_run = req.dry_run,
                "sidecar injected"
            ),
            Outcome::Refused(message) => {
                tracing::info!(namespace = ns, pod = %pod, micros, message = %message, "pod refused")
            }
            other => {
                tracing::debug!(namespace = ns, pod = %pod, micros, outcome = ?other, "pod left alone")
            }
        }
        response.into_review()
    }

    /// The decision for one request.
    pub async fn admit(&self, req: &AdmissionRequest<Pod>) -> (AdmissionResponse, Outcome) {
        let allow = AdmissionResponse::from(req);
        let (Some(pod), Operation::Create, "") = (
            req.object.as_ref(),
            req.operation.clone(),
            req.sub_resource.as_deref().unwrap_or_default(),
        ) else {
            return (allow, Outcome::NotAPodCreate);
        };
        if req.kind.kind != "Pod" {
            return (allow, Outcome::NotAPodCreate);
        }
        let namespace = req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        if self.settings.kubernetes.excluded(&namespace) {
            // The webhook's namespaceSelector should not have sent it: say so.
            tracing::warn!(namespace, "pod of an excluded namespace sent to the injector; left alone (check the webhook's namespaceSelector)");
            return (allow, Outcome::Excluded);
        }
        match self.plan(pod, &namespace).await {
            Ok(Decision::Leave(leave)) => (allow, Outcome::Left(leave)),
            Ok(Decision::Inject(patch)) => match allow.clone().with_patch(patch) {
                Ok(r) => (r, Outcome::Injected),
                Err(e) => {
                    let message = format!(
                        "{}: cannot encode the patch: {e}",
                        annotations::key(annotations::INJECT)
                    );
                    (deny(allow, &message), Outcome::Refused(message))
                }
            },
            Err(refusal) => {
                let message = refusal.to_string();
                (deny(allow, &message), Outcome::Refused(message))
            }
        }
    }

    /// What to do with `pod`: leave it, patch it, or refuse it.
    pub async fn plan(&self, pod: &Pod, namespace: &str) -> Result<Decision, Refusal> {
        let s = &self.settings;
        let injection = match annotations::parse(&annotations_of(pod), &s.trust_domain)? {
            Intent::Leave(leave) => return Ok(Decision::Leave(leave)),
            Intent::Inject(i) => i,
        };
        let rendered = match &injection.source {
            Source::Annotations(a) => render::from_annotations(a, s)?,
            Source::ConfigMap(name) => {
                let text = self
                    .configmaps
                    .sidecar_toml(namespace, name)
                    .await
                    .map_err(|p| Refusal::from(AnnotationError::new(CONFIG_MAP, p)))?;
                render::from_config_map(name, &text, s)?
            }
        };
        let plan = Plan::new(&injection, &rendered, s)?;
        patch::mutation(pod, &plan, s).map(Decision::Inject)
    }
}

/// What to do with a pod the annotations accept.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing (why).
    Leave(Leave),
    /// Apply this patch.
    Inject(json_patch::Patch),
}

fn annotations_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.annotations.clone().unwrap_or_default()
}

/// A refusal the API server passes on: `admission webhook "…" denied the
/// request: <message>`, HTTP 400 (the pod as written is invalid).
fn deny(allow: AdmissionResponse, message: &str) -> AdmissionResponse {
    let mut r = allow.deny(message);
    r.result.code = 400;
    r.result.reason = "BadRequest".into();
    r
}

#[cfg(test)]
mod tests;
