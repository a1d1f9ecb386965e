//! The container image: `scripts/image.sh` builds it with buildah FROM
//! scratch (no registry needed), and the image runs — as the non-root user
//! 65532, `tripline serve` answering `/healthz` and writing a delivery's
//! Workflow to the outbox on a mounted volume, as uid 65532. The container runs with
//! `buildah run --isolation chroot` (this machine has no cgroup-capable OCI
//! runtime setup; the image itself is a plain OCI image).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::brokers::free_port;
use crate::support::tripline::{fixture, post_json, repo, BIN};

fn buildah(args: &[&str]) -> String {
    let out = Command::new("buildah")
        .args(args)
        .output()
        .expect("buildah (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_image_builds_from_scratch_and_serves_as_a_non_root_user() {
    let tag = format!("localhost/tripline:it-{}", std::process::id());
    let built = Command::new("bash")
        .arg(repo("scripts/image.sh"))
        .args(["--binary", BIN, "--tag", &tag])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_str(&buildah(&["inspect", "--type", "image", &tag])).unwrap();
    let oci = &config["OCIv1"]["config"];
    assert_eq!(oci["User"], "65532:65532");
    assert_eq!(
        oci["Entrypoint"],
        serde_json::json!(["/usr/local/bin/tripline"])
    );
    assert_eq!(oci["Cmd"], serde_json::json!(["serve"]));

    // A volume for /var/lib/tripline, writable by the image's user.
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    std::fs::copy(
        repo("sensors/on-push.yaml"),
        dir.path().join("sensors/on-push.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tripline.yaml"),
        format!("listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:{admin}}}\nsensors: sensors/\nsubmit: {{type: outbox, dir: outbox/}}\nintake: {{journal: journal/}}\ndeadLetter: dead-letter.jsonl\nsources: [{{type: http, name: events}}]\n"),
    )
    .unwrap();
    Command::new("chmod")
        .args(["-R", "777"])
        .arg(dir.path())
        .status()
        .unwrap();
    let ctr = buildah(&["from", &tag]);
    let volume = format!("{}:/var/lib/tripline", dir.path().display());
    let mut child = Command::new("buildah")
        .args([
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--volume",
        ])
        .arg(&volume)
        .args([
            &ctr,
            "--",
            "/usr/local/bin/tripline",
            "serve",
            "--config",
            "/var/lib/tripline/tripline.yaml",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let up = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if up {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the container did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, reply) = post_json(
        &client,
        &format!("http://127.0.0.1:{port}/events/events"),
        &[
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        fixture("github/push.payload.json"),
    )
    .await;
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");
    let name = reply["matched"][0]["name"].as_str().unwrap();
    let file = dir
        .path()
        .join(format!("outbox/default.workflow.{name}.yaml"));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.uid(), 65532, "written by the image's non-root user");

    // Stop it. (`buildah run --isolation chroot` kills the container on
    // SIGTERM rather than forwarding it: tripline's own SIGTERM drain is
    // tested outside the container, in `engine::sigterm_stops_cleanly`.)
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopping = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if stopping.elapsed() > Duration::from_secs(30) {
            Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status()
                .unwrap();
            let _ = child.wait();
            panic!("the container did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    buildah(&["rm", &ctr]);
    buildah(&["rmi", &tag]);
}
