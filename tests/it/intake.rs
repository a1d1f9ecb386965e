//! Webhook intake that never loses a delivery (#10): abusive clients cannot
//! lock signed deliveries out, the admin endpoints stay off the public port,
//! and a delivery whose outcome is not final in time (the API down, tripline
//! killed or stopped meanwhile) is queued durably and created exactly once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::kube_api::{Fault, KubeApi};
use crate::support::tripline::{fixture, github_signature, Tripline};
use crate::support::wait::{until, until_async};

const SECRET: &str = "intake-secret";

const SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: pushes}
spec:
  dependencies:
    - name: push
      source: github
      filters: {path: headers.X-GitHub-Event, equals: push}
  triggers:
    - name: build
      workflow: {workflowTemplateRef: ci}
      parameters:
        - {name: sha, value: "{{body.after}}"}
      retry: {attempts: 2, backoff: 50ms, maxBackoff: 100ms}
"#;

fn push(n: usize) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture("github/push.payload.json")).unwrap();
    body["after"] = json!(format!("{n:040x}"));
    serde_json::to_vec(&body).unwrap()
}

async fn send_push(client: &reqwest::Client, t: &Tripline, n: usize) -> (u16, Value, Duration) {
    let body = push(n);
    let started = Instant::now();
    let r = client
        .post(t.url("/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", format!("delivery-{n}"))
        .header("X-Hub-Signature-256", github_signature(SECRET, &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let reply = r.json().await.unwrap_or(Value::Null);
    (code, reply, started.elapsed())
}

fn config(extra_limits: &str, submit: &str) -> String {
    format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
submit: {submit}
limits: {{shutdownDeadline: 10s{extra_limits}}}
sources:
  - {{type: github, name: github, path: /webhooks/github, secret: {{env: GH_SECRET}}}}
"
    )
}

/// Reads a raw HTTP status line (or the empty string if the server closed).
fn status_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_cannot_lock_out_signed_deliveries() {
    let t = Tripline::start(
        &config(
            ", bodyReadTimeout: 1s, headerReadTimeout: 2s",
            "{type: outbox, dir: outbox/}",
        ),
        &[("pushes.yaml", SENSOR)],
        &[("GH_SECRET", SECRET)],
    )
    .await;
    let addr = format!("127.0.0.1:{}", t.port);
    // 70 idle sockets, and 70 that sent a well-formed (wrong) signature and
    // then stall in the body.
    let idle: Vec<TcpStream> = (0..70)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let sig = format!("sha256={}", "ab".repeat(32));
    let mut stalled: Vec<TcpStream> = (0..70)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {sig}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"a\":"
            )
            .unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::new();
    let (code, reply, took) = send_push(&client, &t, 1).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "created");
    assert!(
        took < Duration::from_secs(1),
        "a signed push waited {took:?}"
    );
    // The stalled bodies end in 408 at their deadline.
    let started = Instant::now();
    let line = status_line(&mut stalled[0]);
    assert!(line.starts_with("HTTP/1.1 408"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A 20 KiB header: 431.
    let mut s = TcpStream::connect(&addr).unwrap();
    let big = "x".repeat(20 << 10);
    // One write of the whole request: `write!` wrote it in three, and on a
    // loaded machine the server could answer and close after the second,
    // failing the third with a reset (CI saw it once).
    let request = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n"
    );
    let _ = s.write_all(request.as_bytes());
    let line = status_line(&mut s);
    assert!(line.starts_with("HTTP/1.1 431"), "{line}");
    // A missing signature costs nothing: 401 before any body is read.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Length: 1000000\r\n\r\n").unwrap();
    let line = status_line(&mut s);
    assert!(line.starts_with("HTTP/1.1 401"), "{line}");
    drop(idle);
    // Every refusal is counted by source and code.
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for code in ["401", "408"] {
        let line =
            format!("tripline_webhook_rejections_total{{source=\"github\",code=\"{code}\"}}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_are_not_on_the_public_port() {
    let t = Tripline::start(
        &config("", "{type: outbox, dir: outbox/}"),
        &[("pushes.yaml", SENSOR)],
        &[("GH_SECRET", SECRET)],
    )
    .await;
    let client = reqwest::Client::new();
    for path in ["/metrics", "/readyz"] {
        let public = client.get(t.public_url(path)).send().await.unwrap();
        assert_eq!(public.status().as_u16(), 404, "{path} on the public port");
        let admin = client.get(t.url(path)).send().await.unwrap();
        assert!(admin.status().is_success(), "{path} on the admin port");
    }
    let public = client
        .post(t.public_url("/explain/github"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);
    let health = client.get(t.public_url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status().as_u16(),
        200,
        "probes still work on the public port"
    );
}

/// A delivery nothing wants is answered at once, with why not, even while
/// every processing permit is held by a submission hanging on a slow API:
/// it takes no permit and is not queued (a push at that moment is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_nothing_wants_is_answered_at_once_while_every_permit_is_taken() {
    let api = KubeApi::start().await;
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path());
    let submit = format!(
        "{{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 10s}}",
        kubeconfig.display()
    );
    let t = Tripline::start(
        &config(", maxInFlight: 2", &submit),
        &[("pushes.yaml", SENSOR)],
        &[("GH_SECRET", SECRET)],
    )
    .await;
    // The two pushes below hold both permits with creates that hang; the
    // third hang is for the push queued later, so that the journal worker
    // (which needs no permit) cannot finish it before the journal is read.
    api.fail_next(3, Fault::Hang(Duration::from_secs(3)));
    let client = reqwest::Client::new();
    let hanging: Vec<_> = (0..2)
        .map(|n| {
            let (client, t_url) = (client.clone(), t.url("/webhooks/github"));
            tokio::spawn(async move {
                let body = push(n);
                client
                    .post(t_url)
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", format!("delivery-{n}"))
                    .header("X-Hub-Signature-256", github_signature(SECRET, &body))
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    until("both permits held by hanging creates", || {
        (api.create_attempts() == 2).then_some(())
    })
    .await;

    let body = fixture("github/release.published.payload.json");
    let started = Instant::now();
    let r = client
        .post(t.url("/webhooks/github"))
        .header("X-GitHub-Event", "release")
        .header("X-GitHub-Delivery", "delivery-release")
        .header("X-Hub-Signature-256", github_signature(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    let (code, took) = (r.status().as_u16(), started.elapsed());
    let reply: Value = r.json().await.unwrap();
    assert_eq!(code, 200, "{reply}");
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
    assert_eq!(reply["event_id"], "delivery-release");
    assert_eq!(reply["matched"], json!([]));
    let why = reply["why_not"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("headers.X-GitHub-Event") && why.contains(r#"seen "release""#),
        "{reply}"
    );
    // The permits really were taken: a push now is queued.
    let (code, reply, _) = send_push(&client, &t, 2).await;
    assert_eq!(
        (code, reply["status"].as_str()),
        (202, Some("queued")),
        "{reply}"
    );
    assert_eq!(
        t.metric("tripline_journal_entries").await,
        1,
        "only the push"
    );

    for h in hanging {
        let code = h.await.unwrap();
        assert!(code == 200 || code == 202, "{code}");
    }
    until("all 3 pushes created", || {
        (api.objects("workflows").len() == 3).then_some(())
    })
    .await;
}

/// The API double down while 300 signed pushes arrive at ~20/s, tripline
/// SIGKILLed and later SIGTERMed with deliveries queued: every reply is 2xx
/// within 6 s, and once the API is back exactly 300 objects exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_while_300_pushes_arrive_and_tripline_is_killed_loses_nothing() {
    let api = KubeApi::start().await;
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path());
    let submit = format!(
        "{{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}",
        kubeconfig.display()
    );
    let mut t = Tripline::start(
        &config("", &submit),
        &[("pushes.yaml", SENSOR)],
        &[("GH_SECRET", SECRET)],
    )
    .await;
    api.set_down(true);
    let client = reqwest::Client::new();
    let mut replies = Vec::new();
    // The port stays the same across restarts.
    let url = t.url("/webhooks/github");
    let send_batch = |range: std::ops::Range<usize>| {
        let tasks: Vec<_> = range
            .map(|n| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50 * (n as u64 % 100))).await;
                    let body = push(n);
                    let started = Instant::now();
                    let r = client
                        .post(url)
                        .header("X-GitHub-Event", "push")
                        .header("X-GitHub-Delivery", format!("delivery-{n}"))
                        .header("X-Hub-Signature-256", github_signature(SECRET, &body))
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    (r.status().as_u16(), started.elapsed())
                })
            })
            .collect();
        tasks
    };
    for task in send_batch(0..100) {
        replies.push(task.await.unwrap());
    }
    // Killed with 100 deliveries queued, none created.
    assert_eq!(api.objects("workflows").len(), 0);
    t.kill();
    t.restart().await;
    for task in send_batch(100..200) {
        replies.push(task.await.unwrap());
    }
    // Stopped cleanly, with the API still down.
    assert_eq!(t.terminate(), Some(0), "{}", t.log());
    t.restart().await;
    for task in send_batch(200..300) {
        replies.push(task.await.unwrap());
    }
    let slowest = replies.iter().map(|(_, d)| *d).max().unwrap();
    assert!(replies.iter().all(|(c, _)| *c == 202), "{replies:?}");
    assert!(
        slowest < Duration::from_secs(6),
        "slowest reply {slowest:?}"
    );
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tripline_journal_entries 300"),
        "{metrics}"
    );

    api.set_down(false);
    until("300 objects", || {
        (api.objects("workflows").len() >= 300).then_some(())
    })
    .await;
    until_async("the journal drained", || async {
        let m = reqwest::get(t.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("tripline_journal_entries 0").then_some(())
    })
    .await;
    let objects = api.objects("workflows");
    let shas: std::collections::BTreeSet<String> = objects
        .iter()
        .map(|w| {
            w["spec"]["arguments"]["parameters"][0]["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(objects.len(), 300, "no duplicates");
    assert_eq!(shas.len(), 300, "every delivery");
    assert!(t.dead_letters().is_empty());
}

/// The journal on JetStream: deliveries queued by one replica, which is then
/// killed for good, are created by the other — exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_journal_is_drained_by_whichever_replica_is_left() {
    let nats = crate::support::brokers::Nats::start().await;
    let api = KubeApi::start().await;
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path());
    let config = format!(
        "sensors: sensors/
submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}
intake: {{journal: {{nats: {{urls: [{}], stream: INTAKE}}}}, replyDeadline: 2s}}
limits: {{shutdownDeadline: 10s}}
sources:
  - {{type: github, name: github, path: /webhooks/github, secret: {{env: GH_SECRET}}}}
",
        kubeconfig.display(),
        nats.url()
    );
    let mut a = Tripline::start(
        &config,
        &[("pushes.yaml", SENSOR)],
        &[("GH_SECRET", SECRET)],
    )
    .await;
    let b = Tripline::start(
        &config,
        &[("pushes.yaml", SENSOR)],
        &[("GH_SECRET", SECRET)],
    )
    .await;
    api.set_down(true);
    let client = reqwest::Client::new();
    for n in 0..50 {
        let (code, reply, _) = send_push(&client, &a, n).await;
        assert_eq!(code, 202, "{reply}");
    }
    a.kill();
    api.set_down(false);
    until("50 objects", || {
        (api.objects("workflows").len() >= 50).then_some(())
    })
    .await;
    until_async("the journal drained", || async {
        let m = reqwest::get(b.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("tripline_journal_entries 0").then_some(())
    })
    .await;
    let objects = api.objects("workflows");
    assert_eq!(objects.len(), 50, "exactly once");
    let readyz: Value = reqwest::get(b.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        readyz["sources"]["journal"]["detail"]
            .as_str()
            .unwrap()
            .contains("JetStream stream `INTAKE`"),
        "{readyz}"
    );
}
