//! Memory of the real binary (ISSUE #14): resident set size read from
//! `/proc/<pid>/status` —
//!
//! * **idle**: one GitHub source, one sensor, ready, no traffic (goal < 30 MB);
//! * **10 000 sensors**: the same with 10 000 sensors loaded (each filters on
//!   its own repository name, so the index files them apart);
//! * **per concurrent 1 MiB event**: `C` signed 1 MiB pushes in flight at once
//!   through the idle instance (they match and write a Workflow each): the
//!   rise of the peak RSS (`VmHWM`) over the idle RSS, divided by `C`.
//!
//! `cargo bench --bench memory` (run by `cargo test` it does a small smoke
//! run: 100 sensors, 2 events).

use std::sync::Arc;
use std::time::Duration;

#[path = "../tests/it/support/mod.rs"]
mod support;

use support::tripline::{bench_log, github_signature, post, post_json, push_to_main, Tripline};

const SECRET: &str = "bench-secret";

const CONFIG: &str = "sensors: sensors/\nsubmit: {type: outbox, dir: outbox/}\nsources:\n  - {type: github, name: github, path: /webhooks/github, secret: {env: BENCH_SECRET}}\n";

/// `(VmRSS, VmHWM)` of `pid`, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Sensor `i`: pushes to main of repository `repo-i` submit a Workflow.
fn sensor(i: usize) -> String {
    format!(
        r#"apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: s{i}}}
spec:
  dependencies:
    - name: push
      source: github
      filters:
        all:
          - {{path: headers.X-GitHub-Event, equals: push}}
          - {{path: body.repository.name, equals: repo-{i}}}
          - {{path: body.ref, equals: refs/heads/main}}
  triggers:
    - name: train
      workflow:
        manifest:
          apiVersion: argoproj.io/v1alpha1
          kind: Workflow
          metadata: {{generateName: train-{i}-}}
          spec:
            entrypoint: main
            arguments: {{parameters: [{{name: revision}}, {{name: repo}}]}}
            templates: [{{name: main, container: {{image: "python:3.12"}}}}]
      parameters:
        - {{name: revision, value: "{{{{body.after}}}}"}}
        - {{name: repo, value: "{{{{body.repository.full_name}}}}"}}
"#
    )
}

/// `count` sensors, 1 000 documents per file.
fn sensor_files(count: usize) -> Vec<(String, String)> {
    (0..count)
        .collect::<Vec<_>>()
        .chunks(1000)
        .enumerate()
        .map(|(f, ids)| {
            let docs: Vec<String> = ids.iter().map(|&i| sensor(i)).collect();
            (format!("sensors-{f}.yaml"), docs.join("---\n"))
        })
        .collect()
}

async fn start(sensors: usize) -> Tripline {
    let files = sensor_files(sensors);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let t = Tripline::start(
        CONFIG,
        &refs,
        &[("BENCH_SECRET", SECRET), ("TRIPLINE_LOG", bench_log())],
    )
    .await;
    // Let start-up allocations settle (the allocator trims, threads park).
    tokio::time::sleep(Duration::from_millis(500)).await;
    t
}

/// A push of repository `repo-0` to main, padded to about 1 MiB (under the
/// default `limits.maxBodyBytes` of 1 MiB).
fn big_push() -> Vec<u8> {
    let mut push = push_to_main();
    push["repository"]["name"] = "repo-0".into();
    let base = serde_json::to_vec(&push).unwrap().len();
    let pad = (1 << 20) - base - 64;
    push["padding"] = "x".repeat(pad).into();
    let body = serde_json::to_vec(&push).unwrap();
    assert!(body.len() <= 1 << 20, "{}", body.len());
    body
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (many, concurrent) = if full { (10_000, 16) } else { (100, 2) };

    let idle = start(1).await;
    let (idle_rss, _) = rss(idle.pid());

    // C concurrent 1 MiB events through the idle instance.
    let body = Arc::new(big_push());
    let sig = github_signature(SECRET, &body);
    let client = reqwest::Client::new();
    let url = idle.url("/webhooks/github");
    let sends: Vec<_> = (0..concurrent)
        .map(|i| {
            let (client, url, body, sig) = (client.clone(), url.clone(), body.clone(), sig.clone());
            tokio::spawn(async move {
                let delivery = format!("big-{i}");
                let headers = [
                    ("X-GitHub-Event", "push"),
                    ("X-GitHub-Delivery", delivery.as_str()),
                    ("X-Hub-Signature-256", sig.as_str()),
                    ("Content-Type", "application/json"),
                ];
                let (status, reply) =
                    post_json(&client, &url, &headers, body.as_ref().clone()).await;
                assert_eq!(status, 200, "{reply}");
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    let (after_rss, peak) = rss(idle.pid());
    assert_eq!(idle.outbox().len(), concurrent, "one Workflow per event");
    drop(idle);

    let started = std::time::Instant::now();
    let loaded = start(many).await;
    let ready_in = started.elapsed() - Duration::from_millis(500);
    let (many_rss, _) = rss(loaded.pid());
    // The sensors really are loaded: the last one fires.
    let mut push: serde_json::Value = serde_json::from_slice(&body).unwrap();
    push["repository"]["name"] = format!("repo-{}", many - 1).into();
    push["padding"] = serde_json::Value::Null;
    let small = serde_json::to_vec(&push).unwrap();
    let sig = github_signature(SECRET, &small);
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "last"),
        ("X-Hub-Signature-256", sig.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _) = post(&loaded, "/webhooks/github", &headers, small).await;
    assert_eq!(status, 200);
    let out = loaded.outbox();
    assert_eq!(out.len(), 1);
    assert!(
        out[0].1["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("train-{}-", many - 1)),
        "{:?}",
        out[0].1["metadata"]
    );
    drop(loaded);

    let per_event = peak.saturating_sub(idle_rss) / concurrent as u64;
    println!(
        "resident memory (VmRSS), {}:",
        if cfg!(debug_assertions) {
            "debug build (smoke run; `cargo bench` measures the release build)"
        } else {
            "release build"
        }
    );
    println!(
        "  idle (1 source, 1 sensor)           {:>7.1} MB   (goal < 30 MB: {})",
        mb(idle_rss),
        if idle_rss < 30 << 20 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  {many} sensors loaded              {:>7.1} MB   ({:.1} KB per sensor over idle; ready {:.1} s after start)",
        mb(many_rss),
        (many_rss.saturating_sub(idle_rss)) as f64 / 1024.0 / many as f64,
        ready_in.as_secs_f64()
    );
    println!(
        "  {concurrent} concurrent 1 MiB events: peak {:>7.1} MB   ({:.1} MB per event over idle; {:.1} MB resident after)",
        mb(peak),
        mb(per_event),
        mb(after_rss)
    );
}
