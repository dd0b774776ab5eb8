//! The mutation: a JSON patch (RFC 6902, `add` operations only) that
//! attaches zt-sidecar to a pod.
//!
//! ```text
//!   metadata.annotations   + zt.demo.local/status: injected
//!   spec.initContainers    + [0] zt-sidecar   native sidecar: restartPolicy Always,
//!                                             startupProbe = `zt-sidecar probe` (/readyz),
//!                                             config in ZT_CONFIG, restricted securityContext
//!   spec.volumes           + zt-workload-api  SPIFFE CSI driver (Workload API socket;
//!                                             a hostPath if sidecar.workload_api_host_path is set)
//!                          + zt-run           memory-backed emptyDir with a sizeLimit
//!   every other container  + zt-run at /run/zt, read-only   (secrets/, openbao.sock)
//!   spec.securityContext   + supplementalGroups: the secrets group
//! ```
//!
//! Nothing of the pod is overwritten: a container, volume, port or mount
//! path that clashes with what would be added is a refusal.
//!
//! **Why the files are readable without `fsGroup`.** The sidecar (uid
//! 10000) writes each file with mode 0440 and group G, the *secrets group*
//! (default 10000, the sidecar's own group; `secrets-group` chooses
//! another), and the proxy socket with mode 0660 and group G. The patch
//! adds G to the pod's `supplementalGroups`, which the container runtime
//! gives every process of every container in the pod: the app reads the
//! files as a member of G whatever its uid, and the sidecar may hand files
//! to G because it is a member too. The secrets live in the zt-run volume,
//! which only the app containers mount.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    ExecAction, HostPathVolumeSource, Pod, PodSecurityContext, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use serde_json::Value;
use zt_sidecar::config::{ListenAddr, ENV_CONFIG};

use crate::annotations::{
    key, AnnotationError, Injection, Intent, Refusal, ResourceOverrides, Source, ADMIN_PORT,
    CPU_LIMIT, CPU_REQUEST, INJECT, MEMORY_LIMIT, MEMORY_REQUEST, STATUS, STATUS_INJECTED,
};
use crate::render::{Rendered, RUN_DIR, WORKLOAD_API_DIR};
use crate::settings::{Resources, Settings, WorkloadApiVolume};

/// Name of the injected container.
pub const CONTAINER_NAME: &str = "zt-sidecar";
/// Volume with the SPIFFE Workload API socket (SPIFFE CSI driver).
pub const WORKLOAD_API_VOLUME: &str = "zt-workload-api";
/// Memory-backed volume with the secret files and the proxy socket.
pub const RUN_VOLUME: &str = "zt-run";
/// The SPIFFE CSI driver.
pub const SPIFFE_CSI_DRIVER: &str = "csi.spiffe.io";
/// Where the image has the sidecar binary (the exec probes run it).
pub const SIDECAR_BINARY: &str = "/usr/local/bin/zt-sidecar";
/// The startup probe's period: the app starts at most this long after the sidecar is ready.
pub const STARTUP_PERIOD_SECONDS: i32 = 2;
/// Startup probe attempts: 150 × 2 s = 5 minutes to get an SVID and every secret.
pub const STARTUP_FAILURE_THRESHOLD: i32 = 150;

/// The volume with the Workload API socket's directory.
fn workload_api_volume(source: &WorkloadApiVolume) -> Volume {
    let mut v = Volume {
        name: WORKLOAD_API_VOLUME.into(),
        ..Default::default()
    };
    match source {
        WorkloadApiVolume::Csi => {
            v.csi = Some(CSIVolumeSource {
                driver: SPIFFE_CSI_DRIVER.into(),
                read_only: Some(true),
                ..Default::default()
            })
        }
        WorkloadApiVolume::HostPath(path) => {
            v.host_path = Some(HostPathVolumeSource {
                path: path.clone(),
                type_: Some("Directory".into()),
            })
        }
    }
    v
}

/// Everything the patch needs besides the pod.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The validated sidecar configuration.
    pub rendered: &'a Rendered,
    /// The image (annotation or default).
    pub image: String,
    /// Requests and limits (annotations over defaults).
    pub resources: Resources,
}

impl<'a> Plan<'a> {
    /// The plan for `injection` with its rendered configuration: the image
    /// and resources of its annotations over the injector's defaults.
    pub fn new(
        injection: &Injection,
        rendered: &'a Rendered,
        s: &Settings,
    ) -> Result<Self, Refusal> {
        Ok(Self {
            rendered,
            image: injection
                .image
                .clone()
                .unwrap_or_else(|| s.sidecar.image.clone()),
            resources: resources(&injection.resources, &s.sidecar.resources)?,
        })
    }
}

/// The pod as the webhook would have the API server store it, without a
/// cluster: for checks of manifests (deploy/checks) and the tests. A pod
/// whose configuration is in a ConfigMap is refused here (no cluster to read
/// it from); a pod the annotations leave alone comes back unchanged.
pub fn injected(pod: &Pod, s: &Settings) -> Result<Pod, Refusal> {
    let notes = pod.metadata.annotations.clone().unwrap_or_default();
    let injection = match crate::annotations::parse(&notes, &s.trust_domain)? {
        Intent::Leave(_) => return Ok(pod.clone()),
        Intent::Inject(i) => i,
    };
    let rendered = match &injection.source {
        Source::Annotations(a) => crate::render::from_annotations(a, s)?,
        Source::ConfigMap(_) => {
            return Err(Refusal::from(AnnotationError::new(
                crate::annotations::CONFIG_MAP,
                "cannot be read without a cluster",
            )))
        }
    };
    let patch = mutation(pod, &Plan::new(&injection, &rendered, s)?, s)?;
    let mut doc = json(pod);
    json_patch::patch(&mut doc, &patch.0).map_err(|e| {
        Refusal::from(AnnotationError::new(
            INJECT,
            format!("the patch does not apply: {e}"),
        ))
    })?;
    serde_json::from_value(doc).map_err(|e| {
        Refusal::from(AnnotationError::new(
            INJECT,
            format!("the patched pod is not a Pod: {e}"),
        ))
    })
}

/// Requests and limits: each annotation over its default; a request above
/// its limit is refused here rather than by the API server's generic message.
pub fn resources(o: &ResourceOverrides, defaults: &Resources) -> Result<Resources, Refusal> {
    let r = Resources {
        cpu_request: o
            .cpu_request
            .clone()
            .unwrap_or(defaults.cpu_request.clone()),
        cpu_limit: o.cpu_limit.clone().unwrap_or(defaults.cpu_limit.clone()),
        memory_request: o
            .memory_request
            .clone()
            .unwrap_or(defaults.memory_request.clone()),
        memory_limit: o
            .memory_limit
            .clone()
            .unwrap_or(defaults.memory_limit.clone()),
    };
    let mut errors = Vec::new();
    for (req, lim, set_req, req_name, lim_name) in [
        (
            &r.cpu_request,
            &r.cpu_limit,
            o.cpu_request.is_some(),
            CPU_REQUEST,
            CPU_LIMIT,
        ),
        (
            &r.memory_request,
            &r.memory_limit,
            o.memory_request.is_some(),
            MEMORY_REQUEST,
            MEMORY_LIMIT,
        ),
    ] {
        if req.value() > lim.value() {
            let (blame, problem) = if set_req {
                (req_name, format!("{req} is above the limit {lim}"))
            } else {
                (lim_name, format!("{lim} is below the request {req}"))
            };
            errors.push(AnnotationError::new(blame, problem));
        }
    }
    if errors.is_empty() {
        Ok(r)
    } else {
        Err(Refusal(errors))
    }
}

/// What the sidecar needs from the pod, read from its validated configuration.
struct Needs {
    /// The zt-run volume (secrets or the proxy socket).
    run_volume: bool,
    /// The group every container joins.
    group: Option<u32>,
    /// (TCP port, annotation) of every sidecar listener.
    listeners: Vec<(u16, String)>,
    /// Inbound mTLS ports, declared as container ports.
    inbound: Vec<u16>,
}

fn needs(r: &Rendered) -> Needs {
    let c = &r.config;
    let o = &r.origins;
    let unix_proxy = c
        .proxy
        .iter()
        .flat_map(|p| p.listen.iter())
        .any(|l| matches!(l, ListenAddr::Unix(_)));
    let run_volume = c.secrets.dir.is_some() || unix_proxy || c.identity.svid_dir.is_some();
    // The admin port always has an annotation that moves it.
    let mut listeners = vec![(c.admin.listen.port(), {
        let a = o.annotation("admin.listen");
        if a == INJECT {
            ADMIN_PORT.to_string()
        } else {
            a.to_string()
        }
    })];
    for (i, ib) in c.mtls.inbound.iter().enumerate() {
        listeners.push((
            ib.listen.port(),
            o.annotation(&format!("mtls.inbound[{i}]")).to_string(),
        ));
    }
    for (i, ob) in c.mtls.outbound.iter().enumerate() {
        listeners.push((
            ob.listen.port(),
            o.annotation(&format!("mtls.outbound[{i}]")).to_string(),
        ));
    }
    for (i, l) in c.proxy.iter().flat_map(|p| p.listen.iter()).enumerate() {
        if let ListenAddr::Tcp(a) = l {
            listeners.push((
                a.port(),
                o.annotation(&format!("proxy.listen[{i}]")).to_string(),
            ));
        }
    }
    Needs {
        run_volume,
        group: run_volume.then_some(c.secrets.group).flatten(),
        listeners,
        inbound: c.mtls.inbound.iter().map(|i| i.listen.port()).collect(),
    }
}

/// The JSON patch attaching the sidecar to `pod`, or why it cannot be attached.
pub fn mutation(pod: &Pod, plan: &Plan<'_>, s: &Settings) -> Result<Patch, Refusal> {
    let needs = needs(plan.rendered);
    let spec = pod.spec.clone().unwrap_or_default();
    let refuse = |name: &str, problem: String| Refusal::from(AnnotationError::new(name, problem));

    if spec.host_network == Some(true) {
        return Err(refuse(
            INJECT,
            "the pod uses hostNetwork: the sidecar's listeners would be on the node".into(),
        ));
    }
    if spec.os.as_ref().is_some_and(|o| o.name != "linux") {
        return Err(refuse(INJECT, "the sidecar runs on Linux pods only".into()));
    }
    let init = spec.init_containers.clone().unwrap_or_default();
    let apps = spec.containers.clone();
    let ephemeral: Vec<String> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    let mut errors = Vec::new();
    if init
        .iter()
        .chain(apps.iter())
        .map(|c| &c.name)
        .chain(ephemeral.iter())
        .any(|n| n == CONTAINER_NAME)
    {
        errors.push(AnnotationError::new(
            INJECT,
            format!("the pod already has a container named {CONTAINER_NAME}; rename it (the injector adds its own)"),
        ));
    }
    let mut ours = vec![WORKLOAD_API_VOLUME];
    if needs.run_volume {
        ours.push(RUN_VOLUME);
    }
    for v in spec.volumes.iter().flatten() {
        if ours.contains(&v.name.as_str()) {
            errors.push(AnnotationError::new(
                INJECT,
                format!(
                    "the pod already has a volume named {}; rename it (the injector adds its own)",
                    v.name
                ),
            ));
        }
    }
    for c in init.iter().chain(apps.iter()) {
        for p in c.ports.iter().flatten() {
            for (port, annotation) in &needs.listeners {
                if p.container_port == i32::from(*port) {
                    errors.push(AnnotationError::new(
                        annotation,
                        format!("port {port} is already used by container {}", c.name),
                    ));
                }
            }
            if let Some(name) = &p.name {
                for port in &needs.inbound {
                    if *name == port_name(*port) {
                        errors.push(AnnotationError::new(
                            &format!("{}{port}", crate::annotations::MTLS_INBOUND),
                            format!(
                                "the port name {name} is already used by container {}",
                                c.name
                            ),
                        ));
                    }
                }
            }
        }
        if needs.run_volume {
            for m in c.volume_mounts.iter().flatten() {
                let path = std::path::Path::new(&m.mount_path);
                if path.starts_with(RUN_DIR) {
                    errors.push(AnnotationError::new(
                        INJECT,
                        format!(
                            "container {} already mounts {} at {}, where the injector mounts the sidecar's files ({RUN_DIR})",
                            c.name, m.name, m.mount_path
                        ),
                    ));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(Refusal(errors));
    }

    let mut ops = Vec::new();
    let add = |ops: &mut Vec<PatchOperation>, tokens: &[&str], value: Value| {
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    };

    // The annotations exist: the pod asked for us with one.
    add(
        &mut ops,
        &["metadata", "annotations", &key(STATUS)],
        Value::String(STATUS_INJECTED.into()),
    );
    let sidecar = sidecar_container(plan, s, &needs);
    if init.is_empty() {
        add(&mut ops, &["spec", "initContainers"], json(&vec![sidecar]));
    } else {
        add(&mut ops, &["spec", "initContainers", "0"], json(&sidecar));
    }
    let mut volumes = vec![workload_api_volume(&s.sidecar.workload_api_volume)];
    if needs.run_volume {
        volumes.push(Volume {
            name: RUN_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(KQuantity(s.sidecar.secrets_size_limit.to_string())),
            }),
            ..Default::default()
        });
    }
    if spec.volumes.as_ref().is_none_or(Vec::is_empty) {
        add(&mut ops, &["spec", "volumes"], json(&volumes));
    } else {
        for v in &volumes {
            add(&mut ops, &["spec", "volumes", "-"], json(v));
        }
    }
    if needs.run_volume {
        let mount = VolumeMount {
            name: RUN_VOLUME.into(),
            mount_path: RUN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        };
        // Indices are the pod's own: the sidecar goes in front of the init
        // containers, so their patch paths shift by one.
        for (list, containers, shift) in [
            ("initContainers", &init, 1usize),
            ("containers", &apps, 0usize),
        ] {
            for (i, c) in containers.iter().enumerate() {
                let index = (i + shift).to_string();
                if c.volume_mounts.as_ref().is_none_or(Vec::is_empty) {
                    add(
                        &mut ops,
                        &["spec", list, &index, "volumeMounts"],
                        json(&vec![mount.clone()]),
                    );
                } else {
                    add(
                        &mut ops,
                        &["spec", list, &index, "volumeMounts", "-"],
                        json(&mount),
                    );
                }
            }
        }
    }
    if let Some(g) = needs.group {
        let g = i64::from(g);
        match &spec.security_context {
            None => add(
                &mut ops,
                &["spec", "securityContext"],
                json(&PodSecurityContext {
                    supplemental_groups: Some(vec![g]),
                    ..Default::default()
                }),
            ),
            Some(sc) => match &sc.supplemental_groups {
                Some(groups) if groups.contains(&g) => {}
                Some(groups) if !groups.is_empty() => add(
                    &mut ops,
                    &["spec", "securityContext", "supplementalGroups", "-"],
                    Value::from(g),
                ),
                _ => add(
                    &mut ops,
                    &["spec", "securityContext", "supplementalGroups"],
                    Value::from(vec![g]),
                ),
            },
        }
    }
    Ok(Patch(ops))
}

fn port_name(port: u16) -> String {
    format!("mtls-{port}")
}

fn sidecar_container(plan: &Plan<'_>, s: &Settings, needs: &Needs) -> Container {
    let d = &s.sidecar;
    let probe = |path: Option<&str>, period: i32, failures: Option<i32>| {
        let mut command = vec![SIDECAR_BINARY.to_string(), "probe".to_string()];
        if let Some(p) = path {
            command.extend(["--path".to_string(), p.to_string()]);
        }
        Probe {
            exec: Some(ExecAction {
                command: Some(command),
            }),
            period_seconds: Some(period),
            failure_threshold: failures,
            timeout_seconds: Some(3),
            ..Default::default()
        }
    };
    let mut mounts = vec![VolumeMount {
        name: WORKLOAD_API_VOLUME.into(),
        mount_path: WORKLOAD_API_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if needs.run_volume {
        mounts.push(VolumeMount {
            name: RUN_VOLUME.into(),
            mount_path: RUN_DIR.into(),
            ..Default::default()
        });
    }
    let q = |q: &crate::quantity::Quantity| KQuantity(q.to_string());
    let r = &plan.resources;
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some(d.image_pull_policy.clone()),
        restart_policy: Some("Always".into()),
        args: Some(vec!["run".into()]),
        env: Some(vec![EnvVar {
            name: ENV_CONFIG.into(),
            value: Some(plan.rendered.toml.clone()),
            ..Default::default()
        }]),
        ports: (!needs.inbound.is_empty()).then(|| {
            needs
                .inbound
                .iter()
                .map(|p| ContainerPort {
                    name: Some(port_name(*p)),
                    container_port: i32::from(*p),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect()
        }),
        // The app containers start only once the SVID and every required
        // secret are there: /readyz.
        startup_probe: Some(probe(
            None,
            STARTUP_PERIOD_SECONDS,
            Some(STARTUP_FAILURE_THRESHOLD),
        )),
        readiness_probe: Some(probe(None, 10, None)),
        liveness_probe: Some(probe(Some("/healthz"), 20, None)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q(&r.cpu_request)),
                ("memory".to_string(), q(&r.memory_request)),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), q(&r.cpu_limit)),
                ("memory".to_string(), q(&r.memory_limit)),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(d.run_as_user),
            run_as_group: Some(d.run_as_group),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// A typed Kubernetes object as a patch value. Serialising k8s-openapi
/// types (plain structs, string-keyed maps, strings) to a `Value` cannot
/// fail: there are no non-string map keys and no custom errors.
fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
