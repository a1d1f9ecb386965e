//! Webhook intake end to end: the real binary, real HTTP, signed GitHub /
//! GitLab / generic / CloudEvents deliveries, submitted with the real `kube`
//! client to the Kubernetes API double (which validates Workflows against
//! Argo's JSON schema).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::kube_api::{Fault, KubeApi};
use crate::support::tripline::{fixture, github_signature, raw_status_line, repo, Tripline};

const GH_SECRET: &str = "gh-s3cret";
const SIGNED_SECRET: &str = "generic-s3cret";

fn config(kubeconfig: &std::path::Path) -> String {
    format!(
        "
sensors: sensors/
deadLetter: dead-letter.jsonl
limits: {{maxBodyBytes: 1048576, maxInFlight: 2}}
submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 2s}}
sources:
  - {{type: github, name: github, path: /webhooks/github, secret: {{env: GH_SECRET}}}}
  - {{type: gitlab, name: gitlab, token: {{file: gitlab-token}}}}
  - type: generic
    name: signed
    idHeader: X-Delivery
    hmac: {{header: X-Signature, prefix: 'sha256=', secret: {{env: SIGNED_SECRET}}, timestamp: {{header: X-Timestamp, tolerance: 5m}}}}
  - {{type: generic, name: legacy, hmac: {{header: X-Sig, algorithm: sha512, encoding: base64, secret: {{file: rotated-secrets}}}}}}
  - {{type: generic, name: tokened, bearer: {{env: BEARER_TOKEN}}}}
  - {{type: cloudevents, name: ce}}
",
        kubeconfig.display()
    )
}

/// A Job (not a Workflow: any kind goes through discovery) created in `ns`.
fn namespaced(ns: &str) -> String {
    format!(
        "apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: job-in-{ns}}}
spec:
  dependencies:
    - {{name: ev, source: tokened, filters: {{path: body.target, equals: {ns}}}}}
  triggers:
    - name: job
      namespace: {ns}
      workflow:
        manifest:
          apiVersion: batch/v1
          kind: Job
          spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: c, image: busybox}}]}}}}}}
      parameters:
        - {{name: who, value: '{{{{body.who}}}}', dest: spec.template.spec.containers.0.args.0}}
"
    )
}

/// The example's sensor with a fast retry policy, plus one sensor per other source.
fn sensors() -> Vec<(&'static str, String)> {
    let retrain = std::fs::read_to_string(repo(
        "examples/git-push-retrain/sensors/retrain-on-push.yaml",
    ))
    .unwrap()
    .replace(
        "retry: { attempts: 5, backoff: 1s, maxBackoff: 60s }",
        "retry: { attempts: 5, backoff: 100ms, maxBackoff: 400ms }",
    );
    let any = |name: &str, source: &str, filter: &str| {
        format!(
            "apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: {name}}}
spec:
  dependencies:
    - name: ev
      source: {source}
      filters: {filter}
  triggers:
    - name: {name}
      workflow: {{workflowTemplateRef: generic-job}}
      parameters:
        - {{name: id, value: '{{{{id}}}}'}}
        - {{name: type, value: '{{{{type}}}}'}}
      retry: {{attempts: 2, backoff: 50ms, maxBackoff: 100ms}}
"
        )
    };
    let invalid = "apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: broken}
spec:
  dependencies:
    - {name: ev, source: tokened, filters: {path: body.broken, equals: true}}
  triggers:
    - name: broken
      workflow:
        manifest:
          apiVersion: argoproj.io/v1alpha1
          kind: Workflow
          spec: {entrypoint: main, templates: [{name: main, container: not-an-object}]}
"
    .to_string();
    vec![
        ("retrain.yaml", retrain),
        (
            "gitlab.yaml",
            any(
                "gitlab-push",
                "gitlab",
                "{path: body.object_kind, equals: push}",
            ),
        ),
        (
            "signed.yaml",
            any("signed", "signed", "{path: body.ok, equals: true}"),
        ),
        (
            "legacy.yaml",
            any("legacy", "legacy", "{path: body.ok, equals: true}"),
        ),
        (
            "tokened.yaml",
            any("tokened", "tokened", "{path: body.ok, equals: true}"),
        ),
        (
            "ce.yaml",
            any("ce", "ce", "{path: type, equals: com.example.file.created}"),
        ),
        ("broken.yaml", invalid),
        ("namespaced.yaml", namespaced("ml")),
        ("missing-ns.yaml", namespaced("missing")),
    ]
}

struct Rig {
    api: KubeApi,
    t: Tripline,
    _kube_dir: TempDir,
}

async fn rig() -> Rig {
    let api = KubeApi::start().await;
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gitlab-token"), "old-token\nnew-token\n").unwrap();
    std::fs::write(
        dir.path().join("rotated-secrets"),
        "legacy-old\nlegacy-new\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    for (n, s) in sensors() {
        std::fs::write(dir.path().join("sensors").join(n), s).unwrap();
    }
    let cfg = dir.path().join("tripline.yaml");
    std::fs::write(&cfg, config(&kubeconfig)).unwrap();
    let t = Tripline::start_with(
        dir,
        cfg,
        &[
            ("GH_SECRET", GH_SECRET),
            ("SIGNED_SECRET", SIGNED_SECRET),
            ("BEARER_TOKEN", "tok-123"),
        ],
        &[],
    )
    .await;
    Rig {
        api,
        t,
        _kube_dir: kube_dir,
    }
}

/// The GitHub push fixture turned into a push to main touching models/.
fn push_to_main() -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture("github/push.payload.json")).unwrap();
    body["ref"] = json!("refs/heads/main");
    body["after"] = json!("6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    body["commits"] = json!([{"id": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "added": [], "removed": [], "modified": ["models/resnet.py"]}]);
    serde_json::to_vec(&body).unwrap()
}

async fn send(
    t: &Tripline,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new().post(t.url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry_after,
    )
}

fn github_headers(
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Delivery", delivery.to_string()),
        ("X-Hub-Signature-256", github_signature(secret, body)),
        ("Content-Type", "application/json".to_string()),
    ]
}

#[tokio::test]
async fn signed_github_push_creates_exactly_one_valid_workflow() {
    let Rig { api, t, .. } = rig().await;
    let body = push_to_main();
    let headers = github_headers("push", "d-1", &body, GH_SECRET);
    let (code, reply, _) = send(&t, "/webhooks/github", &headers, body.clone()).await;
    assert_eq!(code, 200, "{reply}\n{}", t.log());
    assert_eq!(reply["event_id"], "d-1");
    assert_eq!(reply["matched"][0]["status"], "created");
    let name = reply["matched"][0]["name"].as_str().unwrap().to_string();

    let wfs = api.objects("workflows");
    assert_eq!(wfs.len(), 1);
    let wf = &wfs[0];
    assert_eq!(wf["metadata"]["name"], name.as_str());
    assert!(
        wf["metadata"]["uid"].is_string(),
        "created by the API: {wf}"
    );
    assert_eq!(wf["spec"]["workflowTemplateRef"]["name"], "train-model");
    assert_eq!(
        wf["spec"]["arguments"]["parameters"],
        json!([
            {"name": "revision", "value": "6113728f27ae82c7b1a177c8d03f9e96e0adf246"},
            {"name": "repo", "value": "Codertocat/Hello-World"},
            {"name": "pusher", "value": "Codertocat"}
        ])
    );
    assert_eq!(
        wf["metadata"]["annotations"]["tripline.dev/event-id"],
        "d-1"
    );

    // Redelivery of the same delivery id: no second Workflow.
    let (code, again, _) = send(&t, "/webhooks/github", &headers, body).await;
    assert_eq!(code, 200);
    assert_eq!(again["matched"][0]["status"], "existing");
    assert_eq!(again["matched"][0]["name"], name.as_str());
    assert_eq!(api.objects("workflows").len(), 1);
}

#[tokio::test]
async fn bad_signatures_are_401_and_submit_nothing() {
    let Rig { api, t, .. } = rig().await;
    let body = push_to_main();

    let wrong = github_headers("push", "d-2", &body, "not-the-secret");
    let (code, reply, _) = send(&t, "/webhooks/github", &wrong, body.clone()).await;
    assert_eq!(code, 401);
    assert_eq!(reply["check"], "X-Hub-Signature-256");
    assert!(reply["error"].as_str().unwrap().contains("does not match"));
    assert!(
        !reply.to_string().contains(GH_SECRET),
        "never echo the secret"
    );

    let mut missing = github_headers("push", "d-3", &body, GH_SECRET);
    missing.retain(|(k, _)| *k != "X-Hub-Signature-256");
    let (code, reply, _) = send(&t, "/webhooks/github", &missing, body.clone()).await;
    assert_eq!(code, 401);
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .contains("missing X-Hub-Signature-256"));

    // Signature of another body (tampering).
    let mut tampered = github_headers("push", "d-4", b"{}", GH_SECRET);
    tampered.retain(|(k, _)| *k != "Content-Length");
    let (code, _, _) = send(&t, "/webhooks/github", &tampered, body.clone()).await;
    assert_eq!(code, 401);

    // GitLab with a wrong token.
    let gl = fixture("gitlab/push.json");
    let (code, reply, _) = send(
        &t,
        "/events/gitlab",
        &[
            ("X-Gitlab-Token", "nope".into()),
            ("X-Gitlab-Event", "Push Hook".into()),
            ("Content-Type", "application/json".into()),
        ],
        gl,
    )
    .await;
    assert_eq!(code, 401);
    assert_eq!(reply["check"], "X-Gitlab-Token");

    // Bearer missing / wrong.
    let (code, _, _) = send(
        &t,
        "/events/tokened",
        &[("Content-Type", "application/json".into())],
        b"{\"ok\":true}".to_vec(),
    )
    .await;
    assert_eq!(code, 401);
    let (code, _, _) = send(
        &t,
        "/events/tokened",
        &[("Authorization", "Bearer nope".into())],
        b"{\"ok\":true}".to_vec(),
    )
    .await;
    assert_eq!(code, 401);

    assert_eq!(api.create_attempts(), 0, "nothing may reach the API");
}

#[tokio::test]
async fn gitlab_generic_and_cloudevents_deliveries() {
    let Rig { api, t, .. } = rig().await;

    // GitLab: either of the rotated tokens works; id from X-Gitlab-Event-UUID.
    for (token, uuid) in [("old-token", "u-1"), ("new-token", "u-2")] {
        let (code, reply, _) = send(
            &t,
            "/events/gitlab",
            &[
                ("X-Gitlab-Token", token.into()),
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Event-UUID", uuid.into()),
                ("Content-Type", "application/json".into()),
            ],
            fixture("gitlab/push.json"),
        )
        .await;
        assert_eq!(code, 200, "{reply}");
        assert_eq!(reply["event_id"], uuid);
        assert_eq!(reply["matched"][0]["status"], "created");
    }

    // Generic HMAC with a timestamp (replay window).
    let body = b"{\"ok\":true}".to_vec();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |ts: u64| {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNED_SECRET.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let signed = |ts: u64, sig: String| {
        vec![
            ("X-Timestamp", ts.to_string()),
            ("X-Signature", sig),
            ("X-Delivery", format!("g-{ts}")),
            ("Content-Type", "application/json".to_string()),
        ]
    };
    let (code, reply, _) = send(&t, "/events/signed", &signed(now, sign(now)), body.clone()).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["event_id"], format!("g-{now}"));
    let old = now - 3600;
    let (code, reply, _) = send(&t, "/events/signed", &signed(old, sign(old)), body.clone()).await;
    assert_eq!(code, 401);
    assert_eq!(reply["check"], "X-Timestamp");
    assert!(reply["error"].as_str().unwrap().contains("replay window"));
    // Signature valid for another timestamp: the timestamp is covered.
    let (code, _, _) = send(
        &t,
        "/events/signed",
        &signed(now + 1, sign(now)),
        body.clone(),
    )
    .await;
    assert_eq!(code, 401);

    // sha512 + base64, with both rotated secrets.
    for secret in ["legacy-old", "legacy-new"] {
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        let b = format!("{{\"ok\":true,\"secret\":\"{secret}\"}}").into_bytes();
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&b);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let (code, reply, _) = send(
            &t,
            "/events/legacy",
            &[("X-Sig", sig), ("Content-Type", "application/json".into())],
            b,
        )
        .await;
        assert_eq!(code, 200, "{secret}: {reply}");
        assert_eq!(reply["matched"][0]["status"], "created");
    }

    // Bearer.
    let (code, reply, _) = send(
        &t,
        "/events/tokened",
        &[
            ("Authorization", "Bearer tok-123".into()),
            ("Content-Type", "application/json".into()),
        ],
        b"{\"ok\":true}".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");

    // CloudEvents, binary mode then structured mode.
    let (code, reply, _) = send(
        &t,
        "/events/ce",
        &[
            ("ce-specversion", "1.0".into()),
            ("ce-id", "ce-1".into()),
            ("ce-source", "/buckets/raw".into()),
            ("ce-type", "com.example.file.created".into()),
            ("Content-Type", "application/json".into()),
        ],
        b"{\"key\":\"a.csv\"}".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["event_id"], "ce-1");
    assert_eq!(reply["matched"][0]["status"], "created");
    let structured = json!({"specversion": "1.0", "id": "ce-2", "source": "/buckets/raw", "type": "com.example.file.created", "data": {"key": "b.csv"}});
    let (code, reply, _) = send(
        &t,
        "/events/ce",
        &[("Content-Type", "application/cloudevents+json".into())],
        serde_json::to_vec(&structured).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["event_id"], "ce-2");
    let (code, reply, _) = send(
        &t,
        "/events/ce",
        &[("Content-Type", "application/cloudevents+json".into())],
        b"{\"specversion\":\"1.0\",\"id\":\"x\"}".to_vec(),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("`source`"),
        "{reply}"
    );

    // 2 gitlab + 1 signed + 2 legacy + 1 bearer + 2 CloudEvents.
    let wfs = api.objects("workflows");
    assert_eq!(wfs.len(), 8, "{wfs:#?}");
    let ce = wfs
        .iter()
        .find(|w| w["metadata"]["annotations"]["tripline.dev/event-id"] == "ce-2")
        .unwrap();
    assert_eq!(
        ce["spec"]["arguments"]["parameters"][1],
        json!({"name": "type", "value": "com.example.file.created"})
    );
}

#[tokio::test]
async fn api_outages_are_retried_then_reported_as_503_and_nothing_is_lost() {
    let Rig { api, t, .. } = rig().await;

    // 503 three times, then recovery: retried within the request, one Workflow.
    api.fail_next(3, Fault::Status(503));
    let body = push_to_main();
    let (code, reply, _) = send(
        &t,
        "/webhooks/github",
        &github_headers("push", "r-1", &body, GH_SECRET),
        body,
    )
    .await;
    assert_eq!(code, 200, "{reply}\n{}", t.log());
    assert_eq!(reply["matched"][0]["status"], "created");
    assert_eq!(api.objects("workflows").len(), 1);
    assert_eq!(api.create_attempts(), 4);

    // Down past the trigger's retries (5 attempts): queued in the journal,
    // 202 naming the object to come; created once the API is back, without
    // the sender doing anything (GitHub would not).
    api.set_down(true);
    let mut body: Value = serde_json::from_slice(&push_to_main()).unwrap();
    body["after"] = json!("ffffffffffffffffffffffffffffffffffffffff");
    let body = serde_json::to_vec(&body).unwrap();
    let headers = github_headers("push", "r-2", &body, GH_SECRET);
    let (code, reply, _) = send(&t, "/webhooks/github", &headers, body.clone()).await;
    assert_eq!(code, 202, "{reply}");
    assert_eq!(reply["status"], "queued");
    assert_eq!(reply["matched"][0]["status"], "queued");
    let queued_name = reply["matched"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(api.objects("workflows").len(), 1);
    api.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.objects("workflows").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the journal was not drained:\n{}",
            t.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        api.object("default", "workflows", &queued_name).is_some(),
        "the name the 202 gave"
    );
    // A resend by hand finds it done.
    let (code, reply, _) = send(&t, "/webhooks/github", &headers, body).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "existing");
    assert_eq!(api.objects("workflows").len(), 2);

    // 429 with Retry-After: honoured (the retry waits at least that long).
    api.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let started = Instant::now();
    let (code, reply, _) = send(
        &t,
        "/events/tokened",
        &[
            ("Authorization", "Bearer tok-123".into()),
            ("Content-Type", "application/json".into()),
        ],
        b"{\"ok\":true,\"n\":1}".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After ignored: {:?}",
        started.elapsed()
    );

    // Connection dropped mid-request: transient, retried.
    api.fail_next(1, Fault::Drop);
    let (code, reply, _) = send(
        &t,
        "/events/tokened",
        &[
            ("Authorization", "Bearer tok-123".into()),
            ("Content-Type", "application/json".into()),
        ],
        b"{\"ok\":true,\"n\":2}".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "created");
}

#[tokio::test]
async fn invalid_objects_get_200_invalid_and_a_dead_letter_and_the_next_event_flows() {
    let Rig { api, t, .. } = rig().await;
    let auth = || {
        vec![
            ("Authorization", "Bearer tok-123".to_string()),
            ("Content-Type", "application/json".to_string()),
        ]
    };
    let (code, reply, _) = send(
        &t,
        "/events/tokened",
        &auth(),
        b"{\"broken\":true}".to_vec(),
    )
    .await;
    assert_eq!(
        code, 200,
        "final, so no error a sender would count: {reply}"
    );
    assert_eq!(reply["matched"][0]["status"], "invalid");
    let msg = reply["matched"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("422") && msg.contains("container"),
        "the API's message: {msg}"
    );
    assert_eq!(api.create_attempts(), 1, "a 422 is not retried");
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["sensor"], "broken");
    assert_eq!(dl[0]["status"]["reason"], "Invalid");
    assert_eq!(dl[0]["object"]["kind"], "Workflow");

    let (code, reply, _) = send(&t, "/events/tokened", &auth(), b"{\"ok\":true}".to_vec()).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(api.objects("workflows").len(), 1);
}

#[tokio::test]
async fn oversized_malformed_ping_and_overload() {
    let Rig { api, t, .. } = rig().await;

    // (A well-formed signature header: without one the answer is 401 before
    // the body is even looked at.)
    // 100 MB declared: 413 at once, before any of it is read.
    let status = raw_status_line(t.port, "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256=abababababababababababababababababababababababababababababababab\r\nContent-Length: 104857600\r\n\r\n", []);
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // 10 MB sent in full by a naive client: it reads the 413 (the rest of the
    // body is read and discarded first), not a broken pipe.
    let chunk = vec![b'x'; 1 << 20];
    let status = raw_status_line(
        t.port,
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256=abababababababababababababababababababababababababababababababab\r\nContent-Length: 10485760\r\n\r\n",
        std::iter::repeat_n(chunk, 10),
    );
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // Malformed JSON (correctly signed): 400 with the position.
    let bad = b"{\"ref\": \"refs/heads/main\",\n \"after\": }".to_vec();
    let (code, reply, _) = send(
        &t,
        "/webhooks/github",
        &github_headers("push", "m-1", &bad, GH_SECRET),
        bad.clone(),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("line 2 column"),
        "{reply}"
    );
    // The same as an event type no sensor wants, which is decided from the
    // headers without building the body: the body is still checked.
    let (code, reply, _) = send(
        &t,
        "/webhooks/github",
        &github_headers("issues", "m-2", &bad, GH_SECRET),
        bad,
    )
    .await;
    assert_eq!(code, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("line 2 column"),
        "{reply}"
    );
    let body = br#"{"action": "opened", "issue": {"number": 1}}"#.to_vec();
    let (code, reply, _) = send(
        &t,
        "/webhooks/github",
        &github_headers("issues", "m-3", &body, GH_SECRET),
        body,
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["event_id"], "m-3");
    assert_eq!(reply["matched"], json!([]));
    let why = reply["why_not"][0]["reason"].as_str().unwrap();
    assert!(why.contains(r#"(seen "issues")"#), "{reply}");

    // Form-encoded GitHub delivery (payload=...) is accepted.
    let payload = push_to_main();
    let form = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(&payload).collect::<String>()
    )
    .into_bytes();
    let mut h = github_headers("push", "f-1", &form, GH_SECRET);
    h.retain(|(k, _)| *k != "Content-Type");
    h.push(("Content-Type", "application/x-www-form-urlencoded".into()));
    let (code, reply, _) = send(&t, "/webhooks/github", &h, form).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "created");

    // Ping: 200, nothing submitted.
    let before = api.create_attempts();
    let ping = fixture("github/ping.payload.json");
    let (code, reply, _) = send(
        &t,
        "/webhooks/github",
        &github_headers("ping", "p-1", &ping, GH_SECRET),
        ping,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(reply["ping"], true);
    assert_eq!(api.create_attempts(), before);

    // Overload: maxInFlight is 2; with the API hanging, a third request is
    // queued in the journal (202), not refused.
    let before = api.objects("workflows").len();
    api.fail_all(Fault::Hang(Duration::from_secs(3)));
    let auth = |n: u32| {
        let t = &t;
        async move {
            send(
                t,
                "/events/tokened",
                &[
                    ("Authorization", "Bearer tok-123".into()),
                    ("Content-Type", "application/json".into()),
                ],
                format!("{{\"ok\":true,\"n\":{n}}}").into_bytes(),
            )
            .await
        }
    };
    let slow = tokio::join!(auth(10), auth(11), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        auth(12).await
    });
    api.recover();
    let (code, reply, _) = slow.2;
    assert_eq!(code, 202, "{reply}");
    assert_eq!(reply["status"], "queued");
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.objects("workflows").len() < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the queued delivery never landed:\n{}",
            t.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_git_push_retrain_example_runs() {
    // The example as shipped (outbox), with the secret from the environment,
    // run from a copy so the test never writes into the repository.
    let dir = tempfile::tempdir().unwrap();
    let example = repo("examples/git-push-retrain");
    copy_dir(&example, dir.path());
    let outbox = dir.path().join("outbox");
    let config = dir.path().join("tripline.yaml");
    let t = Tripline::start_with(dir, config, &[("GITHUB_WEBHOOK_SECRET", GH_SECRET)], &[]).await;
    let body = push_to_main();
    let (code, reply, _) = send(
        &t,
        "/webhooks/github",
        &github_headers("push", "ex-1", &body, GH_SECRET),
        body,
    )
    .await;
    assert_eq!(code, 200, "{reply}\n{}", t.log());
    let name = reply["matched"][0]["name"].as_str().unwrap().to_string();
    let file = outbox.join(format!("ml.workflow.{name}.yaml"));
    let wf: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(wf["spec"]["workflowTemplateRef"]["name"], "train-model");

    // The rendered Workflow and the example's WorkflowTemplate are accepted by
    // the API double's Argo schema validation.
    let api = KubeApi::start().await;
    api.add_namespace("ml");
    let client = reqwest::Client::new();
    let wt: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(example.join("workflowtemplate.yaml")).unwrap(),
    )
    .unwrap();
    for (plural, obj) in [("workflowtemplates", &wt), ("workflows", &wf)] {
        let r = client
            .post(format!(
                "{}/apis/argoproj.io/v1alpha1/namespaces/ml/{plural}",
                api.url()
            ))
            .json(obj)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            201,
            "{plural}: {}",
            r.text().await.unwrap()
        );
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_submissions_before_exiting() {
    let Rig { api, mut t, .. } = rig().await;
    api.fail_next(1, Fault::Hang(Duration::from_millis(1500)));
    let url = t.url("/events/tokened");
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("Authorization", "Bearer tok-123")
            .header("Content-Type", "application/json")
            .body("{\"ok\":true}")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let code = tokio::task::spawn_blocking(move || {
        let code = t.terminate();
        (code, t)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.log());
    // The request in flight when SIGTERM arrived was answered, not cut off.
    // (The API double created the object after its hang; our 2s client
    // timeout outlasted it.)
    assert_eq!(request.await.unwrap().unwrap(), 200);
    assert_eq!(api.objects("workflows").len(), 1);
    // New connections are refused once it stopped.
    assert!(reqwest::get(code.1.url("/healthz")).await.is_err());
}

#[tokio::test]
async fn triggers_choose_their_namespace_and_a_missing_one_is_a_rejection() {
    let Rig { api, t, .. } = rig().await;
    api.add_namespace("ml");
    let auth = || {
        vec![
            ("Authorization", "Bearer tok-123".to_string()),
            ("Content-Type", "application/json".to_string()),
        ]
    };

    let (code, reply, _) = send(
        &t,
        "/events/tokened",
        &auth(),
        b"{\"target\":\"ml\",\"who\":\"ana\"}".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    let name = reply["matched"][0]["name"].as_str().unwrap();
    let job = api
        .object("ml", "jobs", name)
        .expect("the Job is in namespace ml");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"][0],
        "ana"
    );

    // The API answers 404 for a namespace that does not exist: permanent, not retried.
    let before = api.create_attempts();
    let (code, reply, _) = send(
        &t,
        "/events/tokened",
        &auth(),
        b"{\"target\":\"missing\",\"who\":\"bo\"}".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "invalid");
    assert!(
        reply["matched"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{reply}"
    );
    assert_eq!(api.create_attempts(), before + 1, "a 404 is not retried");
    assert_eq!(t.dead_letters().len(), 1);
    assert_eq!(t.dead_letters()[0]["status"]["code"], 404);
}
