//! The lab's images (devstack::kube::lab::platform_images) stay in step with
//! what `make deploy` runs: for our images, the final stage of each
//! deploy/docker Dockerfile (USER, ENTRYPOINT, CMD, every COPY destination);
//! for every image, each container of the manifests that uses it: its
//! command and exec probes resolve to a file in the image, and an image run
//! without a command has an entrypoint.

mod common;

use deploy_checks::dockerfile;
use deploy_checks::repo::root;
use devstack::kube::images::{normalize, Image};
use serde_json::Value;

fn images() -> Vec<Image> {
    let tools = devstack::tools::Tools::locate().unwrap_or_else(|e| panic!("{e}"));
    let kube = devstack::kube::KubeTools::locate().unwrap_or_else(|e| panic!("{e}"));
    devstack::kube::lab::platform_images(&tools, &kube.kubectl).unwrap_or_else(|e| panic!("{e:#}"))
}

fn json_words(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|_| panic!("not a JSON array: {args}"))
}

#[test]
fn our_lab_images_match_the_dockerfiles() {
    let all = images();
    for name in ["zt-sidecar", "app-backend", "app-frontend", "zt-bootstrap"] {
        let text = std::fs::read_to_string(root().join(format!("deploy/docker/{name}.Dockerfile")))
            .unwrap();
        let ins = dockerfile::parse(&text);
        let last_from = ins.iter().rposition(|i| i.keyword == "FROM").unwrap();
        let stage = &ins[last_from..];
        let image = all
            .iter()
            .find(|i| i.name() == normalize(&format!("zt-platform/{name}:dev")))
            .unwrap_or_else(|| panic!("no lab image for {name}"));
        let get = |kw: &str| {
            stage
                .iter()
                .rfind(|i| i.keyword == kw)
                .map(|i| i.args.clone())
        };
        assert_eq!(image.config_user(), get("USER").as_deref(), "{name}: USER");
        assert_eq!(
            image.config_entrypoint(),
            json_words(&get("ENTRYPOINT").unwrap()).as_slice(),
            "{name}: ENTRYPOINT"
        );
        let cmd = get("CMD").map(|c| json_words(&c)).unwrap_or_default();
        assert_eq!(image.config_cmd(), cmd.as_slice(), "{name}: CMD");
        for i in stage {
            if let Some((_, _, dest)) = i.copy_parts() {
                assert!(
                    image.has(&dest),
                    "{name}: the Dockerfile copies to {dest}; the lab image has nothing there"
                );
            }
        }
    }
}

/// `true` when `word` names a file of `image` (an absolute path, or a name
/// on the image's PATH).
fn resolves(image: &Image, word: &str) -> bool {
    if word.starts_with('/') {
        return image.has(word);
    }
    let path = image
        .config_env()
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    path.split(':')
        .any(|dir| image.has(&format!("{dir}/{word}")))
}

#[test]
fn every_container_of_the_manifests_can_start_from_its_lab_image() {
    let all = images();
    let settings = common::injector_settings();
    let mut checked = 0;
    for m in common::deployed() {
        let Some(template) = m.pod_template() else {
            continue;
        };
        // As the pods run: with their injected sidecars.
        let template = &common::injected_template(template, &settings);
        for list in ["/spec/initContainers", "/spec/containers"] {
            for c in template
                .pointer(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let image_name = normalize(c["image"].as_str().unwrap());
                let Some(image) = all.iter().find(|i| i.name() == image_name) else {
                    // Only what cannot exist in the lab has no lab image.
                    assert!(
                        image_name.contains("spire-controller-manager")
                            || image_name.contains("spiffe-csi-driver")
                            || image_name.contains("csi-node-driver-registrar"),
                        "{}: no lab image for {image_name}",
                        m.describe()
                    );
                    continue;
                };
                let what = format!("{} container {}", m.describe(), c["name"]);
                match c["command"].as_array() {
                    Some(cmd) => assert!(
                        resolves(image, cmd[0].as_str().unwrap()),
                        "{what}: command {cmd:?} not in {image_name}"
                    ),
                    None => assert!(
                        !image.config_entrypoint().is_empty(),
                        "{what}: {image_name} has no entrypoint"
                    ),
                }
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    if let Some(cmd) = c[probe]["exec"]["command"].as_array() {
                        assert!(
                            resolves(image, cmd[0].as_str().unwrap()),
                            "{what}: {probe} {cmd:?} not in {image_name}"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 9, "only {checked} containers checked");
}
