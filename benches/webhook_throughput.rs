//! Signed-webhook throughput of the real binary, against peers measured in
//! the same run: a minimal axum server (this bench itself, started again as
//! a process of its own) that only verifies the GitHub HMAC and answers 200
//! — the floor cost of any receiver that checks signatures —
//! and adnanh/webhook (Debian's `webhook`, installed by
//! `scripts/install-deps.sh`; skipped with a note when absent) with a hook
//! that checks the same signature, event and branch and runs `/bin/true`
//! on a match (it answers before the command ends, and keeps nothing).
//!
//! Three tripline paths: `mismatch` (signed, verified, an `issues` delivery
//! no sensor wants: the sensor reads only the branch, so only that and the
//! subject of the body are built, the rest checked; the why-not in the
//! reply), `mismatch (branch)` (a push to another branch: the same, decided
//! by the body) and `match→outbox` (a Workflow rendered and written to the
//! outbox per request; every request has a new delivery id).
//!
//! `cargo bench --bench webhook_throughput` (run by `cargo test` it does a
//! short smoke run instead); with `TRIPLINE_BENCH_CSV=<dir>` it also sweeps
//! 1–64 connections and writes the figures for `bench/plot.py`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};

#[path = "../tests/it/support/mod.rs"]
mod support;

use support::brokers::free_port;
use support::peer::{wait_up, PeerProcess};
use support::tripline::{bench_log, github_signature, push_to_main, Tripline};

const SECRET: &str = "bench-secret";
const CONCURRENCY: usize = 32;

/// Sends `n` signed requests with `CONCURRENCY` in flight; returns requests/s.
async fn load(url: &str, n: usize, event: &'static str, body: Arc<Vec<u8>>) -> f64 {
    load_with(url, n, event, body, CONCURRENCY, 0).await
}

/// Sends `n` signed requests (delivery ids from `first_id`) with
/// `connections` in flight; returns requests/s.
async fn load_with(
    url: &str,
    n: usize,
    event: &'static str,
    body: Arc<Vec<u8>>,
    connections: usize,
    first_id: usize,
) -> f64 {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, next, body, url) =
                (client.clone(), next.clone(), body.clone(), url.to_string());
            tokio::spawn(async move {
                let sig = github_signature(SECRET, &body);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = client
                        .post(&url)
                        .header("X-GitHub-Event", event)
                        .header("X-GitHub-Delivery", format!("bench-{}", first_id + i))
                        .header("X-Hub-Signature-256", &sig)
                        .header("Content-Type", "application/json")
                        .body(body.as_ref().clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status().as_u16(),
                        200,
                        "{}",
                        r.text().await.unwrap_or_default()
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn peer(port: u16) {
    let app = axum::Router::new().route(
        "/webhooks/github",
        axum::routing::post(|headers: HeaderMap, body: Bytes| async move {
            let sig = headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let raw = hex::decode(sig.trim_start_matches("sha256=")).unwrap_or_default();
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            m.update(&body);
            match m.verify_slice(&raw) {
                Ok(()) => (StatusCode::OK, "{\"matched\":[]}"),
                Err(_) => (StatusCode::UNAUTHORIZED, "{}"),
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(l, app).await.unwrap();
}

/// adnanh/webhook on `port`, with the hook the bench's requests satisfy
/// (push to main, signed) or not (other events); `None` when not installed.
fn adnanh(port: u16, dir: &std::path::Path) -> Option<PeerProcess> {
    let hooks = dir.join("hooks.json");
    std::fs::write(
        &hooks,
        serde_json::json!([{
            "id": "github",
            "execute-command": "/bin/true",
            "command-working-directory": dir,
            "trigger-rule": {"and": [
                {"match": {"type": "payload-hmac-sha256", "secret": SECRET,
                    "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}},
                {"match": {"type": "value", "value": "push",
                    "parameter": {"source": "header", "name": "X-GitHub-Event"}}},
                {"match": {"type": "value", "value": "refs/heads/main",
                    "parameter": {"source": "payload", "name": "ref"}}},
            ]},
        }])
        .to_string(),
    )
    .unwrap();
    std::process::Command::new("webhook")
        .args(["-hooks", hooks.to_str().unwrap(), "-ip", "127.0.0.1"])
        .args(["-port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
        .map(PeerProcess)
}

/// Waits until adnanh/webhook's `/bin/true` children are gone: it answers
/// before they run, and a backlog of forks would slow what is measured next.
async fn settle(adnanh: Option<&PeerProcess>) {
    let Some(PeerProcess(child)) = adnanh else {
        return;
    };
    for _ in 0..200 {
        let busy = std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| {
                std::fs::read_to_string(t.path().join("children"))
                    .is_ok_and(|c| !c.trim().is_empty())
            });
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_tripline() -> Tripline {
    let sensor = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/git-push-retrain/sensors/retrain-on-push.yaml"
    ))
    .unwrap()
    // Every push to main fires (the bench body touches no models/).
    .replace("          - expr:", "          # - expr:")
    .replace("      rateLimit:", "      # rateLimit:");
    Tripline::start(
        "sensors: sensors/\nsubmit: {type: outbox, dir: outbox/}\nlimits: {maxInFlight: 256}\nsources:\n  - {type: github, name: github, path: /webhooks/github, secret: {env: BENCH_SECRET}}\n",
        &[("retrain.yaml", &sensor)],
        &[("BENCH_SECRET", SECRET), ("TRIPLINE_LOG", bench_log())],
    )
    .await
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 20_000 } else { 200 };
    // TRIPLINE_BENCH_PEER_ONLY=<port>: serve only the axum peer — how this
    // bench starts its peer process, and for an outside load generator
    // (`wrk`, see docs/performance.md).
    if let Some(port) = std::env::var("TRIPLINE_BENCH_PEER_ONLY")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        return peer(port).await;
    }
    let body = Arc::new(serde_json::to_vec(&push_to_main()).unwrap());
    let mut to_dev = push_to_main();
    to_dev["ref"] = "refs/heads/dev".into();
    let to_dev = Arc::new(serde_json::to_vec(&to_dev).unwrap());

    // The peer in a process of its own, as tripline and adnanh are: served
    // from the load generator's own runtime it measured ~76 000 req/s in some
    // runs and ~38 000 in others, depending on where its tasks landed.
    let peer_port = free_port();
    let _peer = PeerProcess::this_bench_with("TRIPLINE_BENCH_PEER_ONLY", &peer_port.to_string());
    let t = start_tripline().await;
    wait_up(&format!("http://127.0.0.1:{peer_port}/")).await;

    let peer_url = format!("http://127.0.0.1:{peer_port}/webhooks/github");
    let url = t.url("/webhooks/github");
    let adnanh_port = free_port();
    let scratch = tempfile::tempdir().unwrap();
    let adnanh = adnanh(adnanh_port, scratch.path());
    let adnanh_url = format!("http://127.0.0.1:{adnanh_port}/hooks/github");
    if adnanh.is_some() {
        wait_up(&format!("http://127.0.0.1:{adnanh_port}/")).await;
    }
    load(&peer_url, n / 10, "push", body.clone()).await; // warm-up
    let peer_before = load(&peer_url, n, "push", body.clone()).await;
    let miss_rps = load(&url, n, "issues", body.clone()).await;
    let branch_rps = load(&url, n, "push", to_dev.clone()).await;
    // The peer again after tripline's mismatch runs, ratios against the
    // mean (as the broker and kube benches measure their peers).
    let peer_after = load(&peer_url, n, "push", body.clone()).await;
    let peer_rps = (peer_before + peer_after) / 2.0;
    let hit_rps = load(&url, n, "push", body.clone()).await;
    let adnanh_rps = match adnanh.is_some() {
        true => {
            let miss = load(&adnanh_url, n, "issues", body.clone()).await;
            let branch = load(&adnanh_url, n, "push", to_dev.clone()).await;
            let hit = load(&adnanh_url, n, "push", body.clone()).await;
            settle(adnanh.as_ref()).await;
            Some((miss, branch, hit))
        }
        false => None,
    };
    // Throughput against the number of connections (for the plot in
    // docs/performance.md): with TRIPLINE_BENCH_CSV=<dir>, full runs only.
    let mut sweep = Vec::new();
    let mut extra = 0;
    if let (true, Ok(dir)) = (full, std::env::var("TRIPLINE_BENCH_CSV")) {
        let per = n / 4;
        for (k, c) in [1, 4, 16, 32, 64].into_iter().enumerate() {
            let first = 1_000_000 * (k + 1);
            let p = load_with(&peer_url, per, "push", body.clone(), c, 0).await;
            let m = load_with(&url, per, "issues", body.clone(), c, first).await;
            let h = load_with(&url, per, "push", body.clone(), c, first).await;
            let a = match adnanh.is_some() {
                true => load_with(&adnanh_url, per, "push", body.clone(), c, 0).await,
                false => 0.0,
            };
            settle(adnanh.as_ref()).await;
            sweep.push(format!("{c},{p:.0},{m:.0},{h:.0},{a:.0}"));
            extra += per;
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            std::path::Path::new(&dir).join("webhook_throughput.csv"),
            format!(
                "connections,peer,mismatch,match_outbox,adnanh_match\n{}\n",
                sweep.join("\n")
            ),
        )
        .unwrap();
    }
    let written = std::fs::read_dir(t.dir.path().join("outbox"))
        .map(|d| d.count())
        .unwrap_or(0);
    drop(t);
    drop(adnanh);
    assert_eq!(written, n + extra, "one Workflow per delivery");

    println!(
        "signed GitHub push ({} bytes), {CONCURRENCY} connections, {n} requests each:",
        body.len()
    );
    println!("  peer (axum + HMAC verify only) {peer_rps:>9.0} req/s  (before {peer_before:.0}, after {peer_after:.0})");
    println!(
        "  tripline mismatch              {miss_rps:>9.0} req/s  ({:.2} of peer)",
        miss_rps / peer_rps
    );
    println!(
        "  tripline mismatch (branch)     {branch_rps:>9.0} req/s  ({:.2} of peer)",
        branch_rps / peer_rps
    );
    println!(
        "  tripline match -> outbox       {hit_rps:>9.0} req/s  ({:.2} of peer)",
        hit_rps / peer_rps
    );
    match adnanh_rps {
        Some((a_miss, a_branch, a_hit)) => {
            println!("  adnanh/webhook mismatch        {a_miss:>9.0} req/s  (tripline mismatch: {:.2}x it)", miss_rps / a_miss);
            println!("  adnanh/webhook mismatch (branch) {a_branch:>7.0} req/s  (tripline: {:.2}x it)", branch_rps / a_branch);
            println!("  adnanh/webhook match (fork)    {a_hit:>9.0} req/s  (tripline match -> outbox: {:.2}x it; goal >= 3x)", hit_rps / a_hit);
        }
        None => println!("  adnanh/webhook: not installed (scripts/install-deps.sh installs Debian's `webhook`): not measured"),
    }
}
