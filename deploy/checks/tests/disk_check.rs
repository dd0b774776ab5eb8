//! scripts/disk-check.sh, which `make build` and `make test` run first: a
//! build that cannot fit stops at once with the figures, never half-way in a
//! linker, and the check itself writes nothing.

use std::path::Path;
use std::process::Command;

use deploy_checks::repo::root;

fn check(dir: &Path, need_mb: &str) -> (i32, String) {
    let out = Command::new("bash")
        .arg(root().join("scripts/disk-check.sh"))
        .arg(dir)
        .env("ZT_DISK_NEED_MB", need_mb)
        .output()
        .expect("run bash");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_build_that_cannot_fit_is_refused_with_the_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("not-built-yet/target");
    // 900 TiB: more than any disk these machines have.
    let (code, err) = check(&target, "943718400");
    assert_eq!(code, 1, "stderr:\n{err}");
    assert!(err.contains("MiB free on "), "says what is free: {err}");
    assert!(
        err.contains("943718400 MiB free"),
        "says what is needed: {err}"
    );
    assert!(err.contains("ZT_DISK_NEED_MB"), "names the override: {err}");
    assert!(!target.exists(), "the check must not create the target dir");
}

#[test]
fn an_empty_need_means_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = check(&tmp.path().join("target"), "");
    // The default (3 GiB) fits on every machine that can build this at all;
    // if it does not here, the message must still be the figures one.
    assert!(code == 0 || err.contains("(default 3072)"), "{code}: {err}");
}

#[test]
fn a_build_that_fits_passes_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = check(&tmp.path().join("target"), "1");
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn what_the_target_dir_already_holds_counts_towards_the_need() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).unwrap();
    // 256 MiB already built (written, not sparse: du counts blocks).
    std::fs::write(target.join("artifact"), vec![7u8; 256 << 20]).unwrap();
    let free_mb = free_mib(tmp.path());
    // A need 128 MiB beyond what is free fits because 256 MiB of it is built;
    // a need 384 MiB beyond does not. The margins absorb other processes
    // writing or deleting meanwhile.
    let fits = (free_mb + 128).to_string();
    let (code, err) = check(&target, &fits);
    assert_eq!(code, 0, "need {fits} MiB with 256 MiB built: {err}");
    let too_much = (free_mb + 384).to_string();
    let (code, err) = check(&target, &too_much);
    assert_eq!(code, 1, "need {too_much} MiB with 256 MiB built: {err}");
}

#[test]
fn a_malformed_need_is_a_usage_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["3G", "-5", "1e9", "1234567890", "12;rm -rf /"] {
        let (code, err) = check(tmp.path(), bad);
        assert_eq!(code, 2, "ZT_DISK_NEED_MB={bad:?}: {err}");
        assert!(
            err.contains("ZT_DISK_NEED_MB must be a whole number of MiB"),
            "ZT_DISK_NEED_MB={bad:?}: {err}"
        );
    }
}

fn free_mib(dir: &Path) -> u64 {
    let out = Command::new("df").arg("-Pk").arg(dir).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let kb: u64 = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024
}
