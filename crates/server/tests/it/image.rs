//! The container image: built from the repository's `Dockerfile` with podman, on a Debian base
//! made here with debootstrap (no registry is reachable), its filesystem exported and
//! `pincapi serve` run from it under `chroot` as the image's user: `/healthz` answers, an event
//! reaches the sandbox, the store lands on the `/data` volume, `pincapi healthcheck` exits 0.
//! Containers cannot run on these machines (cgroups), which is why the export and chroot.
//! Skipped, saying so, only where podman is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pincapi::sandbox::SandboxOptions;
use serde_json::Value;

use crate::helpers::*;

const BASE_IMAGE: &str = "localhost/pincapi-base:bookworm";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A minimal Debian 12 imported as [`BASE_IMAGE`]; the root filesystem is kept as a tarball
/// under the target directory, so only the first run on a machine pays for debootstrap.
fn base_image() {
    let exists = Command::new("podman")
        .args(["image", "exists", BASE_IMAGE])
        .status()
        .unwrap();
    if exists.success() {
        return;
    }
    let tarball = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm-minbase.tar");
    if !tarball.exists() {
        assert!(
            found("debootstrap"),
            "debootstrap is missing: `apt-get install debootstrap` (./scripts/test does)"
        );
        let root = tempfile::tempdir().unwrap();
        run(Command::new("debootstrap").args([
            "--variant=minbase",
            "bookworm",
            root.path().to_str().unwrap(),
            "http://deb.debian.org/debian",
        ]));
        let partial = tarball.with_extension("partial");
        run(Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .arg("-cf")
            .arg(&partial)
            .arg("."));
        std::fs::rename(&partial, &tarball).unwrap();
    }
    run(Command::new("podman")
        .args(["import"])
        .arg(&tarball)
        .arg(BASE_IMAGE));
}

/// Builds the image from the repository's Dockerfile with the binary under test.
fn build_image(tag: &str) {
    let context = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(repo.join("Dockerfile"), context.path().join("Dockerfile")).unwrap();
    std::fs::create_dir(context.path().join("prebuilt")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_pincapi"),
        context.path().join("prebuilt/pincapi"),
    )
    .unwrap();
    run(Command::new("podman")
        .args(["build", "--isolation=chroot", "--format=docker", "--quiet"])
        .args(["--build-arg", &format!("RUNTIME_BASE={BASE_IMAGE}")])
        .args(["--build-arg", "BINARY=prebuilt"])
        .args(["-t", tag])
        .arg(context.path()));
}

#[tokio::test]
async fn the_image_builds_and_its_exported_filesystem_serves_under_chroot() {
    if !found("podman") {
        eprintln!("SKIPPED: podman is missing (apt-get install podman); the image is not tested");
        return;
    }
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(uid.trim(), "0", "chroot needs root; run the suite as root");
    tokio::task::spawn_blocking(base_image).await.unwrap();
    let tag = format!("localhost/pincapi:test-{:08x}", rand::random::<u32>());
    tokio::task::spawn_blocking({
        let tag = tag.clone();
        move || build_image(&tag)
    })
    .await
    .unwrap();

    // What the image declares.
    let inspect: Value =
        serde_json::from_str(&run(Command::new("podman").args(["image", "inspect", &tag])))
            .unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], "pincapi:pincapi", "{config}");
    assert_eq!(
        inspect[0]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "pincapi", "healthcheck"])
    );
    assert!(config["Volumes"].get("/data").is_some(), "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["pincapi"]));
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    let env: Vec<(String, String)> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        env.iter()
            .any(|(k, v)| k == "PINCAPI_STORE" && v == "sqlite:///data/pincapi.db")
    );

    // Its filesystem, exported.
    let rootfs = tempfile::tempdir().unwrap();
    let name = tag.replace([':', '/'], "-");
    run(Command::new("podman").args(["create", "--name", &name, &tag]));
    let export = rootfs.path().join("image.tar");
    run(Command::new("podman")
        .args(["export", "-o"])
        .arg(&export)
        .arg(&name));
    run(Command::new("podman").args(["rm", &name]));
    run(Command::new("podman").args(["rmi", &tag]));
    let root = rootfs.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-xf")
        .arg(&export));
    std::fs::remove_file(&export).unwrap();
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("pincapi:x:10001:10001:"), "{passwd}");

    // `pincapi serve` from it, as the image would run it: its environment, its user.
    let sandbox = TestSandbox::start(SandboxOptions::default()).await;
    let mut child = Command::new("/usr/sbin/chroot")
        .args(["--userspec=10001:10001"])
        .arg(&root)
        .args(["/usr/local/bin/pincapi", "serve"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PINCAPI_LISTEN", "127.0.0.1:0")
        .env("PINCAPI_API_KEY", API_KEY)
        .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
        .env("PINCAPI_PINTEREST_TOKEN", TOKEN)
        .env(
            "PINCAPI_PINTEREST_API_BASE",
            format!("{}/v5", sandbox.base().trim_end_matches("/v5")),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = announced_address(&mut child);
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let status = http
        .post(format!("{addr}/v1/events"))
        .bearer_auth(API_KEY)
        .json(&checkout("image-1"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    let sb = &sandbox;
    wait_for("the event at Pinterest", || async {
        sb.count_of("image-1") == 1
    })
    .await;
    let hc = Command::new("/usr/sbin/chroot")
        .args(["--userspec=10001:10001"])
        .arg(&root)
        .args(["/usr/local/bin/pincapi", "healthcheck", "--url", &addr])
        .env_clear()
        .status()
        .unwrap();
    assert!(
        hc.success(),
        "pincapi healthcheck exits 0 for a ready gateway"
    );
    let _ = child.kill();
    let _ = child.wait();
    use std::os::unix::fs::MetadataExt;
    let db = std::fs::metadata(root.join("data/pincapi.db")).unwrap();
    assert_eq!(db.uid(), 10001, "the store is the image user's, on /data");
}
