//! The rendered Cilium policies allow or deny every flow the demo cares about
//! as intended. Pods come from the real manifests (labels, namespace, service
//! account); the table is printed (cargo test -p deploy-checks --test
//! policy_table -- --nocapture).

mod common;

use std::collections::BTreeMap;

use deploy_checks::cilium::{Evaluator, Peer, Protocol, Verdict};
use deploy_checks::manifest::Manifest;

/// Every pod template of the manifests, as Cilium would label it.
fn pods(all: &[Manifest]) -> BTreeMap<String, Peer> {
    let mut out = BTreeMap::new();
    for m in all {
        let Some(t) = m.pod_template() else { continue };
        let labels: BTreeMap<String, String> = t
            .pointer("/metadata/labels")
            .and_then(|l| l.as_object())
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let sa = t
            .pointer("/spec/serviceAccountName")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        out.insert(
            m.name().to_string(),
            Peer::pod(m.name(), m.namespace(), sa, &labels),
        );
    }
    let dns = BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]);
    out.insert(
        "kube-dns".into(),
        Peer::pod("kube-dns", "kube-system", "coredns", &dns),
    );
    for e in ["world", "host", "remote-node", "kube-apiserver"] {
        out.insert(e.into(), Peer::Entity(e.into()));
    }
    out.insert("api.github.com".into(), Peer::Fqdn("api.github.com".into()));
    out.insert("example.com".into(), Peer::Fqdn("example.com".into()));
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Allow,
    AllowAuth,
    Deny,
}
use Want::*;

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

/// (from, to, port, protocol, expected, why it matters)
const FLOWS: &[(&str, &str, u16, Protocol, Want, &str)] = &[
    (
        "world",
        "frontend",
        3000,
        TCP,
        Allow,
        "browsers reach the frontend (NodePort)",
    ),
    (
        "frontend",
        "backend",
        8443,
        TCP,
        Allow,
        "frontend sidecar -> backend sidecar (SPIFFE mTLS)",
    ),
    (
        "frontend",
        "backend",
        8000,
        TCP,
        Deny,
        "the backend's plain HTTP port is not for other pods",
    ),
    (
        "frontend",
        "backend",
        15000,
        TCP,
        Deny,
        "nor is the backend sidecar's admin port",
    ),
    (
        "frontend",
        "openbao",
        8200,
        TCP,
        Deny,
        "the frontend never talks to OpenBao",
    ),
    (
        "frontend",
        "postgres",
        5432,
        TCP,
        Deny,
        "the frontend never talks to PostgreSQL",
    ),
    (
        "frontend",
        "api.github.com",
        443,
        TCP,
        Deny,
        "only the backend calls GitHub",
    ),
    (
        "frontend",
        "spire-server",
        8008,
        TCP,
        Deny,
        "the frontend needs no JWKS",
    ),
    ("frontend", "kube-dns", 53, UDP, Allow, "DNS"),
    (
        "backend",
        "openbao",
        8200,
        TCP,
        AllowAuth,
        "backend sidecar -> OpenBao, Cilium mutual auth",
    ),
    (
        "backend",
        "postgres",
        5432,
        TCP,
        AllowAuth,
        "backend -> PostgreSQL, Cilium mutual auth",
    ),
    ("backend", "api.github.com", 443, TCP, Allow, "GitHub API"),
    (
        "backend",
        "example.com",
        443,
        TCP,
        Deny,
        "no other internet",
    ),
    (
        "backend",
        "frontend",
        3000,
        TCP,
        Deny,
        "nothing calls back into the frontend",
    ),
    (
        "backend",
        "spire-server",
        8081,
        TCP,
        Deny,
        "workloads use the agent's socket, not the server",
    ),
    (
        "backend",
        "kube-apiserver",
        6443,
        TCP,
        Deny,
        "apps have no API access",
    ),
    ("backend", "kube-dns", 53, UDP, Allow, "DNS"),
    (
        "world",
        "backend",
        8443,
        TCP,
        Deny,
        "the backend is not exposed",
    ),
    (
        "world",
        "openbao",
        8200,
        TCP,
        Deny,
        "OpenBao is not exposed",
    ),
    (
        "host",
        "backend",
        15000,
        TCP,
        Deny,
        "the sidecar admin stays on loopback (exec probes)",
    ),
    (
        "host",
        "frontend",
        15100,
        TCP,
        Deny,
        "the sidecar admin stays on loopback (exec probes)",
    ),
    (
        "openbao",
        "postgres",
        5432,
        TCP,
        Allow,
        "OpenBao creates and drops the short-lived users",
    ),
    (
        "openbao",
        "spire-server",
        8008,
        TCP,
        Allow,
        "OpenBao fetches the JWKS",
    ),
    (
        "openbao",
        "spire-server",
        8081,
        TCP,
        Deny,
        "but not the SPIRE server API",
    ),
    (
        "openbao",
        "world",
        443,
        TCP,
        Deny,
        "OpenBao has no internet",
    ),
    (
        "openbao-bootstrap",
        "openbao",
        8200,
        TCP,
        Allow,
        "bootstrap Job initialises and configures OpenBao",
    ),
    (
        "openbao-bootstrap",
        "postgres",
        5432,
        TCP,
        Allow,
        "bootstrap Job runs roles.sql",
    ),
    (
        "openbao-bootstrap",
        "kube-apiserver",
        6443,
        TCP,
        Allow,
        "bootstrap Job keeps the unseal keys in a Secret",
    ),
    (
        "postgres",
        "world",
        443,
        TCP,
        Deny,
        "PostgreSQL starts no connection",
    ),
    ("postgres", "kube-dns", 53, UDP, Deny, "not even DNS"),
    (
        "spire-agent",
        "spire-server",
        8081,
        TCP,
        Allow,
        "agents attest and fetch SVIDs",
    ),
    (
        "spire-agent",
        "host",
        10250,
        TCP,
        Allow,
        "workload attestation asks the kubelet",
    ),
    (
        "spire-server",
        "kube-apiserver",
        6443,
        TCP,
        Allow,
        "token reviews, bundle ConfigMap, ClusterSPIFFEIDs",
    ),
    (
        "spire-server",
        "world",
        443,
        TCP,
        Deny,
        "SPIRE has no internet",
    ),
    (
        "spiffe-csi-driver",
        "spire-server",
        8081,
        TCP,
        Deny,
        "the CSI driver only mounts a socket",
    ),
    (
        "psql-report",
        "openbao",
        8200,
        TCP,
        AllowAuth,
        "the example job's sidecar logs in and gets its user",
    ),
    (
        "psql-report",
        "postgres",
        5432,
        TCP,
        AllowAuth,
        "the example job's psql",
    ),
    (
        "psql-report",
        "backend",
        8443,
        TCP,
        Deny,
        "the example job is not the frontend",
    ),
    (
        "psql-report",
        "world",
        443,
        TCP,
        Deny,
        "the example job has no internet",
    ),
];

#[test]
fn policy_table() {
    let all = common::deployed();
    let eval = Evaluator::new(&all).unwrap_or_else(|e| panic!("{e}"));
    let pods = pods(&all);
    let mut failures = Vec::new();
    println!(
        "\n{:<18} {:<16} {:>6}  {:<14} {:<14} why",
        "from", "to", "port", "expected", "evaluated"
    );
    println!("{}", "-".repeat(110));
    for &(from, to, port, proto, want, why) in FLOWS {
        let f = pods
            .get(from)
            .unwrap_or_else(|| panic!("no pod/peer {from}"));
        let t = pods.get(to).unwrap_or_else(|| panic!("no pod/peer {to}"));
        let got = eval.verdict(f, t, port, proto);
        let got_want = match &got {
            Verdict::Allowed { auth: true } => AllowAuth,
            Verdict::Allowed { auth: false } => Allow,
            Verdict::Denied(_) => Deny,
        };
        let show = |w: Want| match w {
            Allow => "allow",
            AllowAuth => "allow+mutual",
            Deny => "DENY",
        };
        let proto_s = if proto == UDP { "/udp" } else { "" };
        let mark = if got_want == want { "" } else { "   <-- WRONG" };
        println!(
            "{from:<18} {to:<16} {:>6}  {:<14} {:<14} {why}{mark}",
            format!("{port}{proto_s}"),
            show(want),
            show(got_want)
        );
        if let Verdict::Denied(reason) = &got {
            println!("{:>44} ({reason})", "");
        }
        if got_want != want {
            failures.push(format!(
                "{from} -> {to}:{port}: expected {want:?}, evaluated {got:?} ({why})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "policy table mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_platform_pod_is_under_default_deny_both_ways() {
    let all = common::deployed();
    let eval = Evaluator::new(&all).unwrap();
    for (name, peer) in pods(&all) {
        if let Peer::Endpoint { labels, .. } = &peer {
            if labels
                .get("io.kubernetes.pod.namespace")
                .map(String::as_str)
                == Some("kube-system")
            {
                continue;
            }
            assert_eq!(
                eval.enforced(&peer),
                (true, true),
                "{name} is not under default deny for ingress and egress"
            );
        }
    }
}

#[test]
fn evaluator_refuses_fields_it_does_not_evaluate() {
    for (what, spec) in [
        ("L7 http rules field at rule level", "endpointSelector: {}\ningress:\n  - fromEndpoints: [{}]\n    toRequires: [{}]\n"),
        ("port ranges", "endpointSelector: {}\negress:\n  - toEntities: [world]\n    toPorts: [{ports: [{port: \"80\", endPort: 90}]}]\n"),
        ("CIDR peers", "endpointSelector: {}\negress:\n  - toCIDR: [10.0.0.0/8]\n"),
        ("ports without a peer", "endpointSelector: {}\ningress:\n  - toPorts: [{ports: [{port: \"80\"}]}]\n"),
    ] {
        let text = format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: x, namespace: y}}\nspec:\n{}", spec.lines().map(|l| format!("  {l}\n")).collect::<String>());
        let m = deploy_checks::manifest::parse(&text, what).unwrap();
        assert!(Evaluator::new(&m).is_err(), "{what}: the evaluator must refuse what it cannot evaluate");
    }
}

#[test]
fn deny_rules_win_over_allow_rules() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {}\n  egress:\n    - toEntities: [world]\n  egressDeny:\n    - toEntities: [world]\n      toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]\n";
    let m = deploy_checks::manifest::parse(text, "deny").unwrap();
    let eval = Evaluator::new(&m).unwrap();
    let pod = Peer::pod("p", "a", "default", &BTreeMap::new());
    let world = Peer::Entity("world".into());
    assert!(matches!(
        eval.verdict(&pod, &world, 443, TCP),
        Verdict::Denied(_)
    ));
    assert_eq!(
        eval.verdict(&pod, &world, 80, TCP),
        Verdict::Allowed { auth: false }
    );
    let other_ns = Peer::pod("q", "b", "default", &BTreeMap::new());
    assert_eq!(
        eval.verdict(&other_ns, &world, 443, TCP),
        Verdict::Allowed { auth: false },
        "a policy of namespace a does not select pods of b"
    );
}
