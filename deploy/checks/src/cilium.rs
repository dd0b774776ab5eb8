//! A small evaluator for the subset of CiliumNetworkPolicy the platform uses:
//! `endpointSelector` (matchLabels/matchExpressions, namespaced), `ingress` /
//! `egress` with `fromEndpoints`/`toEndpoints`, `fromEntities`/`toEntities`,
//! `toFQDNs` (matchName), `toPorts` (port + protocol; L7 `rules` are
//! accepted and not evaluated), `ingressDeny`/`egressDeny`, and
//! `authentication.mode`. Any other field is refused, so a policy can never
//! use something this evaluator silently ignores.
//!
//! Semantics (Cilium's): a flow is allowed when the source's egress and the
//! destination's ingress both allow it. A direction is enforced for an
//! endpoint as soon as one policy selecting it has rules for that direction
//! (an empty rule `{}` enforces and allows nothing). Deny rules win over
//! allow rules. Peer selectors in a namespaced policy match only its own
//! namespace unless they name `io.kubernetes.pod.namespace`. A flow needs
//! mutual authentication when any allow rule it matches says
//! `authentication.mode: required`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::manifest::Manifest;
use crate::{CheckError, Result};

/// Cilium's label for the pod's namespace.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Cilium's label for the pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";

/// Something traffic comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A pod (Cilium endpoint) with its identity labels.
    Endpoint {
        /// Human name for tables.
        name: String,
        /// Labels without source prefix (`io.kubernetes.pod.namespace`, `app`, ...).
        labels: BTreeMap<String, String>,
    },
    /// A reserved entity: `world`, `host`, `remote-node`, `kube-apiserver`.
    Entity(String),
    /// An external name reached through DNS (toFQDNs); also part of `world`.
    Fqdn(String),
}

impl Peer {
    /// A pod of `namespace` running as `service_account` with these labels.
    pub fn pod(
        name: &str,
        namespace: &str,
        service_account: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let mut l = labels.clone();
        l.insert(NAMESPACE_LABEL.into(), namespace.into());
        l.insert(SERVICE_ACCOUNT_LABEL.into(), service_account.into());
        Peer::Endpoint {
            name: name.into(),
            labels: l,
        }
    }
    /// Name for tables.
    pub fn name(&self) -> &str {
        match self {
            Peer::Endpoint { name, .. } | Peer::Entity(name) | Peer::Fqdn(name) => name,
        }
    }
    fn namespace(&self) -> Option<&str> {
        match self {
            Peer::Endpoint { labels, .. } => labels.get(NAMESPACE_LABEL).map(String::as_str),
            _ => None,
        }
    }
}

/// L4 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

/// The outcome for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `auth` = Cilium mutual authentication required.
    Allowed {
        /// Whether an allow rule requires `authentication.mode: required`.
        auth: bool,
    },
    /// Denied, with the reason.
    Denied(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Expression>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expression {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Fqdn {
    match_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortProtocol {
    port: String,
    protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortRule {
    ports: Vec<PortProtocol>,
    /// L7 rules (DNS visibility): accepted, not evaluated.
    #[allow(dead_code)]
    rules: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Authentication {
    mode: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    from_endpoints: Option<Vec<Selector>>,
    from_entities: Option<Vec<String>>,
    to_endpoints: Option<Vec<Selector>>,
    to_entities: Option<Vec<String>>,
    #[serde(rename = "toFQDNs")]
    to_fqdns: Option<Vec<Fqdn>>,
    to_ports: Option<Vec<PortRule>>,
    authentication: Option<Authentication>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    #[allow(dead_code)]
    description: Option<String>,
    endpoint_selector: Selector,
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
    ingress_deny: Option<Vec<Rule>>,
    egress_deny: Option<Vec<Rule>>,
}

/// One CiliumNetworkPolicy, parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `namespace/name`.
    pub id: String,
    namespace: String,
    spec: Spec,
}

const ENTITIES: &[&str] = &[
    "world",
    "host",
    "remote-node",
    "kube-apiserver",
    "cluster",
    "all",
];

impl Policy {
    /// Parses a CiliumNetworkPolicy manifest (refusing fields outside the subset).
    pub fn from_manifest(m: &Manifest) -> Result<Self> {
        let bad = |problem: String| CheckError::Malformed {
            path: m.describe(),
            problem,
        };
        if m.api_version() != "cilium.io/v2" || m.kind() != "CiliumNetworkPolicy" {
            return Err(bad("not a cilium.io/v2 CiliumNetworkPolicy".into()));
        }
        if m.namespace().is_empty() {
            return Err(bad("CiliumNetworkPolicy without metadata.namespace".into()));
        }
        let spec: Spec =
            serde_json::from_value(m.value.get("spec").cloned().unwrap_or(Value::Null))
                .map_err(|e| bad(format!("outside the evaluated subset: {e}")))?;
        for rule in [
            &spec.ingress,
            &spec.egress,
            &spec.ingress_deny,
            &spec.egress_deny,
        ]
        .into_iter()
        .flatten()
        .flatten()
        {
            for e in rule.from_entities.iter().chain(&rule.to_entities).flatten() {
                if !ENTITIES.contains(&e.as_str()) {
                    return Err(bad(format!("entity {e:?} is not evaluated")));
                }
            }
            if let Some(a) = &rule.authentication {
                if a.mode != "required" && a.mode != "disabled" {
                    return Err(bad(format!(
                        "authentication.mode {:?} is not evaluated",
                        a.mode
                    )));
                }
            }
            let has_peer = rule.from_endpoints.is_some()
                || rule.from_entities.is_some()
                || rule.to_endpoints.is_some()
                || rule.to_entities.is_some()
                || rule.to_fqdns.is_some();
            if !has_peer && (rule.to_ports.is_some() || rule.authentication.is_some()) {
                return Err(bad(
                    "a rule with ports but no peer selector is not evaluated".into(),
                ));
            }
            for pr in rule.to_ports.iter().flatten() {
                for p in &pr.ports {
                    if p.port.parse::<u16>().map_or(true, |n| n == 0) {
                        return Err(bad(format!("port {:?} is not a single port", p.port)));
                    }
                    if !matches!(p.protocol.as_deref(), None | Some("TCP" | "UDP" | "ANY")) {
                        return Err(bad(format!("protocol {:?} is not evaluated", p.protocol)));
                    }
                }
            }
            for s in rule
                .from_endpoints
                .iter()
                .chain(&rule.to_endpoints)
                .flatten()
                .chain(std::iter::once(&spec.endpoint_selector))
            {
                for e in &s.match_expressions {
                    if !matches!(
                        e.operator.as_str(),
                        "In" | "NotIn" | "Exists" | "DoesNotExist"
                    ) {
                        return Err(bad(format!(
                            "selector operator {:?} is not evaluated",
                            e.operator
                        )));
                    }
                }
            }
        }
        Ok(Self {
            id: format!("{}/{}", m.namespace(), m.name()),
            namespace: m.namespace().to_string(),
            spec,
        })
    }
}

fn strip_source(key: &str) -> &str {
    key.strip_prefix("k8s:")
        .or_else(|| key.strip_prefix("any:"))
        .unwrap_or(key)
}

impl Selector {
    /// Whether the labels match; `policy_ns` restricts peers to the policy's
    /// namespace unless the selector names the namespace label.
    fn matches(&self, labels: &BTreeMap<String, String>, policy_ns: Option<&str>) -> bool {
        let names_ns = self
            .match_labels
            .keys()
            .chain(self.match_expressions.iter().map(|e| &e.key))
            .any(|k| strip_source(k) == NAMESPACE_LABEL);
        if let (Some(ns), false) = (policy_ns, names_ns) {
            if labels.get(NAMESPACE_LABEL).map(String::as_str) != Some(ns) {
                return false;
            }
        }
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(strip_source(k)) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let have = labels.get(strip_source(&e.key));
                match e.operator.as_str() {
                    "In" => have.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => have.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => have.is_some(),
                    _ => have.is_none(),
                }
            })
    }
}

fn entity_matches(entity: &str, peer: &Peer) -> bool {
    match (entity, peer) {
        ("all", _) => true,
        ("world", Peer::Fqdn(_)) => true,
        ("cluster", Peer::Endpoint { .. }) => true,
        ("cluster", Peer::Entity(e)) => e != "world",
        (want, Peer::Entity(e)) => want == e,
        _ => false,
    }
}

impl Rule {
    fn matches(
        &self,
        peer: &Peer,
        port: u16,
        proto: Protocol,
        policy_ns: &str,
        ingress: bool,
    ) -> bool {
        let (endpoints, entities) = if ingress {
            (&self.from_endpoints, &self.from_entities)
        } else {
            (&self.to_endpoints, &self.to_entities)
        };
        let peer_ok = endpoints.iter().flatten().any(|s| match peer {
            Peer::Endpoint { labels, .. } => s.matches(labels, Some(policy_ns)),
            _ => false,
        }) || entities.iter().flatten().any(|e| entity_matches(e, peer))
            || (!ingress
                && self
                    .to_fqdns
                    .iter()
                    .flatten()
                    .any(|f| matches!(peer, Peer::Fqdn(n) if *n == f.match_name)));
        let port_ok = match &self.to_ports {
            None => true,
            Some(rules) => rules.iter().flat_map(|r| &r.ports).any(|p| {
                p.port.parse::<u16>().ok() == Some(port)
                    && match p.protocol.as_deref() {
                        None | Some("ANY") => true,
                        Some("TCP") => proto == Protocol::Tcp,
                        Some("UDP") => proto == Protocol::Udp,
                        Some(_) => false,
                    }
            }),
        };
        peer_ok && port_ok
    }
}

/// All policies of the platform, evaluated together.
#[derive(Debug, Clone)]
pub struct Evaluator {
    policies: Vec<Policy>,
}

/// Result of one direction for one endpoint.
enum Side {
    Allowed { auth: bool },
    Denied(String),
}

impl Evaluator {
    /// Parses every CiliumNetworkPolicy among `manifests` (others are ignored).
    pub fn new(manifests: &[Manifest]) -> Result<Self> {
        let policies = manifests
            .iter()
            .filter(|m| m.kind() == "CiliumNetworkPolicy")
            .map(Policy::from_manifest)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { policies })
    }

    fn selecting<'a>(&'a self, endpoint: &'a Peer) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies.iter().filter(move |p| match endpoint {
            Peer::Endpoint { labels, .. } => {
                endpoint.namespace() == Some(p.namespace.as_str())
                    && p.spec.endpoint_selector.matches(labels, None)
            }
            _ => false,
        })
    }

    /// Whether `endpoint` is under default deny for ingress and for egress.
    pub fn enforced(&self, endpoint: &Peer) -> (bool, bool) {
        let ingress = self
            .selecting(endpoint)
            .any(|p| p.spec.ingress.is_some() || p.spec.ingress_deny.is_some());
        let egress = self
            .selecting(endpoint)
            .any(|p| p.spec.egress.is_some() || p.spec.egress_deny.is_some());
        (ingress, egress)
    }

    fn side(
        &self,
        endpoint: &Peer,
        peer: &Peer,
        port: u16,
        proto: Protocol,
        ingress: bool,
    ) -> Side {
        if !matches!(endpoint, Peer::Endpoint { .. }) {
            return Side::Allowed { auth: false };
        }
        let dir = if ingress { "ingress" } else { "egress" };
        for p in self.selecting(endpoint) {
            let deny = if ingress {
                &p.spec.ingress_deny
            } else {
                &p.spec.egress_deny
            };
            if deny
                .iter()
                .flatten()
                .any(|r| r.matches(peer, port, proto, &p.namespace, ingress))
            {
                return Side::Denied(format!("{dir} deny rule in {}", p.id));
            }
        }
        let (enf_in, enf_out) = self.enforced(endpoint);
        if !(if ingress { enf_in } else { enf_out }) {
            return Side::Allowed { auth: false };
        }
        let mut allowed = false;
        let mut auth = false;
        for p in self.selecting(endpoint) {
            let rules = if ingress {
                &p.spec.ingress
            } else {
                &p.spec.egress
            };
            for r in rules.iter().flatten() {
                if r.matches(peer, port, proto, &p.namespace, ingress) {
                    allowed = true;
                    auth |= r
                        .authentication
                        .as_ref()
                        .is_some_and(|a| a.mode == "required");
                }
            }
        }
        if allowed {
            Side::Allowed { auth }
        } else {
            Side::Denied(format!(
                "no {dir} rule of {} allows it (default deny)",
                endpoint.name()
            ))
        }
    }

    /// The verdict for `from` → `to` on `port`/`proto`.
    pub fn verdict(&self, from: &Peer, to: &Peer, port: u16, proto: Protocol) -> Verdict {
        let out = self.side(from, to, port, proto, false);
        let inn = self.side(to, from, port, proto, true);
        match (out, inn) {
            (Side::Denied(why), _) | (_, Side::Denied(why)) => Verdict::Denied(why),
            (Side::Allowed { auth: a }, Side::Allowed { auth: b }) => {
                Verdict::Allowed { auth: a || b }
            }
        }
    }
}
