use std::collections::BTreeMap;

use super::*;
use crate::testing::{env, CHART_DEFAULTS};

#[test]
fn the_chart_defaults_parse_with_every_default() {
    let s = Settings::parse(CHART_DEFAULTS, &env()).unwrap();
    assert_eq!(s.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(s.health_listen, DEFAULT_HEALTH_LISTEN.parse().unwrap());
    assert_eq!(s.identity, "zt-injector-0");
    assert_eq!(s.trust_domain, "demo.local");
    assert_eq!(s.kubernetes.namespace, "zt-injector");
    assert_eq!(s.kubernetes.tls_secret, DEFAULT_TLS_SECRET);
    assert_eq!(s.kubernetes.lease, DEFAULT_LEASE);
    assert_eq!(
        s.kubernetes.webhook_configuration,
        DEFAULT_WEBHOOK_CONFIGURATION
    );
    assert_eq!(s.tls.ca_validity, DEFAULT_CA_VALIDITY);
    assert_eq!(s.tls.cert_validity, DEFAULT_CERT_VALIDITY);
    assert_eq!(s.tls.stale_after(), DEFAULT_POLL_INTERVAL * 3);
    assert_eq!(s.sidecar.image, DEFAULT_IMAGE);
    assert_eq!(s.sidecar.run_as_user, 10000);
    assert_eq!(s.sidecar.secrets_group, 10000, "the sidecar's own group");
    assert_eq!(s.sidecar.workload_api, DEFAULT_WORKLOAD_API);
    assert_eq!(s.sidecar.resources.memory_limit.as_str(), "128Mi");
    assert!(!s.log.json);
    assert_eq!(
        s.kubernetes.sans(),
        vec![
            San::Dns("zt-injector.zt-injector.svc".into()),
            San::Dns("zt-injector.zt-injector.svc.cluster.local".into()),
            San::Dns("zt-injector.zt-injector".into()),
            San::Dns("zt-injector".into()),
        ]
    );
}

#[test]
fn the_injectors_namespace_and_kube_system_are_always_excluded() {
    let mut s = Settings::parse(
        "[kubernetes]\nexclude_namespaces = [\"monitoring\"]\nextra_sans = [\"127.0.0.1\", \"localhost\"]\n",
        &BTreeMap::from([
            ("POD_NAME".to_string(), "a".to_string()),
            ("POD_NAMESPACE".to_string(), "zt-system".to_string()),
        ]),
    )
    .unwrap();
    assert_eq!(s.kubernetes.namespace, "zt-system", "POD_NAMESPACE");
    for ns in ["zt-system", "kube-system", "monitoring"] {
        assert!(s.kubernetes.excluded(ns), "{ns}");
    }
    assert!(!s.kubernetes.excluded("99-apps"));
    assert!(s
        .kubernetes
        .sans()
        .contains(&San::Ip("127.0.0.1".parse().unwrap())));
    assert!(s.kubernetes.sans().contains(&San::Dns("localhost".into())));
    s.kubernetes.exclude_namespaces.clear();
    assert!(s.kubernetes.excluded("kube-system"));
}

#[test]
fn every_bad_setting_is_refused_naming_its_key() {
    let cases = [
        ("listen = \"8443\"", "listen: `8443` is not an address like 0.0.0.0:8443"),
        ("listen = \"0.0.0.0:9090\"", "health_listen: must differ from listen"),
        ("trust_domain = \"Demo.Local\"", "trust_domain: `Demo.Local` is not a SPIFFE trust domain"),
        ("lsiten = \"0.0.0.0:1\"", "unknown field `lsiten`"),
        ("[kubernetes]\nnamespace = \"Bad_NS\"", "kubernetes.namespace: `Bad_NS` is not a Kubernetes name"),
        ("[kubernetes]\nextra_sans = [\"not a name\"]", "kubernetes.extra_sans[0]: `not a name` is not a Kubernetes name"),
        ("[kubernetes]\nexclude_namespaces = [\"\"]", "kubernetes.exclude_namespaces[0]: `` is not a Kubernetes name"),
        ("[kubernetes]\nconfigmap_timeout = \"soon\"", "kubernetes.configmap_timeout: `soon` is not a duration"),
        ("[tls]\npoll_interval = \"0s\"", "tls.poll_interval: must be greater than zero"),
        ("[tls]\nca_validity = \"6m\"", "tls.ca_validity: 6m is too short: a third of it must exceed two rotation_dwell plus three poll_interval (2m 15s)"),
        ("[tls]\ncert_validity = \"30s\"", "tls.cert_validity: is too short"),
        ("[tls]\ncert_validity = \"9000h\"", "tls.cert_validity: must not exceed tls.ca_validity"),
        ("[tls]\nrotation_dwell = \"15s\"", "tls.rotation_dwell: must exceed three poll_interval"),
        ("[tls]\nlease_duration = \"10s\"", "tls.lease_duration: must exceed two poll_interval"),
        ("[sidecar]\nimage = \"\"", "sidecar.image: `` is not an image reference"),
        ("[sidecar]\nimage_pull_policy = \"Sometimes\"", "sidecar.image_pull_policy: `Sometimes` is not one of Always, IfNotPresent, Never"),
        ("[sidecar]\nrun_as_user = 0", "sidecar.run_as_user: 0 is not a non-root id"),
        ("[sidecar]\nsecrets_group = -5", "sidecar.secrets_group: -5 is not a non-root id"),
        ("[sidecar]\nsecrets_size_limit = \"big\"", "sidecar.secrets_size_limit: `big` is not a quantity"),
        ("[sidecar]\ncpu_request = \"2\"", "sidecar.cpu_request: 2 is above the limit 500m"),
        ("[sidecar]\nmemory_limit = \"1Mi\"", "sidecar.memory_request: 32Mi is above the limit 1Mi"),
        ("[sidecar.openbao]\nauth_mount = \"jwt\"", "sidecar.openbao.address: is required in [sidecar.openbao]"),
        ("[sidecar.openbao]\naddress = \"openbao:8200\"", "sidecar: the sidecar configuration these defaults make is invalid: openbao.address: `openbao:8200` must start with http:// or https://"),
        ("[sidecar.database]\nport = 0", "sidecar.database.port: 0 is not a TCP port"),
        ("[sidecar]\nworkload_api = \"unix:/tmp/agent.sock\"", "sidecar: the sidecar configuration these defaults make is invalid: identity.workload_api unix:/tmp/agent.sock is outside /run/spire/sockets"),
        ("[sidecar]\nworkload_api_host_path = \"run/spire\"", "sidecar.workload_api_host_path: `run/spire` is not an absolute path without `..`"),
        ("[sidecar]\nworkload_api_host_path = \"/run/../etc\"", "sidecar.workload_api_host_path: `/run/../etc` is not an absolute path without `..`"),
        ("[sidecar]\nlog_format = \"xml\"", "sidecar: the sidecar configuration these defaults make is invalid: log.format: `xml` is not one of: text, json"),
        ("[log]\nformat = \"xml\"", "log.format: `xml` is not one of: text, json"),
        ("[log]\nlevel = \"[\"", "log.level: `[` is not a log filter"),
        ("this is not toml", "TOML parse error"),
    ];
    let mut with_ns = env();
    with_ns.insert("POD_NAMESPACE".into(), "zt-injector".into());
    for (text, want) in cases {
        // The namespace case must not be overridden by POD_NAMESPACE.
        let env = if text.contains("namespace =") {
            env()
        } else {
            with_ns.clone()
        };
        let got = Settings::parse(text, &env)
            .expect_err("settings should be refused")
            .to_string();
        assert!(
            got.contains(want),
            "{text:?}\n  got:  {got}\n  want: {want}"
        );
    }
}

#[test]
fn pod_name_and_a_namespace_are_required() {
    let e = Settings::parse(
        "[kubernetes]\nnamespace = \"a\"\n",
        &BTreeMap::<String, String>::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("POD_NAME: is required"), "{e}");
    let e = Settings::parse("", &env()).unwrap_err().to_string();
    assert_eq!(
        e,
        "kubernetes.namespace: is required (or set POD_NAMESPACE)"
    );
    let e = Settings::parse(
        "[kubernetes]\nnamespace = \"a\"\n",
        &BTreeMap::from([("POD_NAME".to_string(), "Not A Name".to_string())]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("POD_NAME: `Not A Name` is not a Kubernetes name"),
        "{e}"
    );
}
