//! The NATS source end to end: a real `nats-server -js`, the real `tripline`
//! binary, and the outbox or the Kubernetes API double as submit target.
//!
//! JetStream: every message makes exactly one object whatever happens in
//! between (tripline killed, nats-server restarted, API unavailable, poison
//! messages, several replicas on one durable consumer); core NATS: queue
//! groups and subject filters.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use serde_json::{json, Value};

use crate::support::brokers::{nats_publish_js, Nats};
use crate::support::kube_api::{Fault, KubeApi};
use crate::support::tripline::{repo, Tripline};

/// How long any eventual condition may take on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

const STREAM: &str = "JOBS";
const DURABLE: &str = "tripline";
const SUBJECT: &str = "jobs.new";

/// One Workflow (from a WorkflowTemplate) per `{"kind":"job","key":…}`
/// message, with the key and the JetStream delivery count as parameters.
const JOB_SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: jobs}
spec:
  dependencies:
    - {name: job, source: queue, filters: {path: body.kind, equals: job}}
  triggers:
    - name: run
      workflow: {workflowTemplateRef: batch-job}
      parameters:
        - {name: key, value: "{{body.key}}"}
        - {name: delivered, value: "{{meta.delivered}}", default: "0"}
      retry: {attempts: 2, backoff: 50ms, maxBackoff: 100ms}
"#;

/// Config with one JetStream source `queue` on stream JOBS (created by
/// tripline if missing): `jetstream:` settings are the defaults below with
/// `overrides` replacing or adding keys; `submit` as given.
fn js_config(url: &str, submit: &str, overrides: &[(&str, &str)]) -> String {
    let mut settings: Vec<(&str, &str)> = vec![
        ("stream", STREAM),
        ("durable", DURABLE),
        ("create", "true"),
        ("ackWait", "2s"),
        ("nakDelay", "200ms"),
        ("maxNakDelay", "1s"),
    ];
    for (k, v) in overrides {
        settings.retain(|(key, _)| key != k);
        settings.push((k, v));
    }
    let jetstream = settings
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "
sensors: sensors/
submit: {submit}
limits: {{shutdownDeadline: 20s}}
sources:
  - type: nats
    name: queue
    urls: [{url}]
    subjects: [jobs.>]
    jetstream: {{{jetstream}}}
"
    )
}

const OUTBOX: &str = "{type: outbox, dir: outbox/}";

fn kube_submit(kubeconfig: &Path) -> String {
    format!(
        "{{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 10s}}",
        kubeconfig.display()
    )
}

fn job(i: usize) -> String {
    json!({"kind": "job", "key": key(i)}).to_string()
}

fn key(i: usize) -> String {
    format!("k-{i:04}")
}

fn keys(n: usize) -> BTreeSet<String> {
    (0..n).map(key).collect()
}

/// Creates stream JOBS capturing `jobs.>` (file storage), as an operator would.
async fn create_stream(url: &str) {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["jobs.>".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
}

async fn publish_jobs(url: &str, range: std::ops::Range<usize>) -> Vec<u64> {
    let payloads: Vec<String> = range.map(job).collect();
    nats_publish_js(url, STREAM, SUBJECT, &payloads).await
}

async fn consumer_info(url: &str) -> consumer::Info {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    js.get_stream(STREAM)
        .await
        .expect("stream")
        .consumer_info(DURABLE)
        .await
        .expect("consumer info")
}

/// Waits until the durable consumer has nothing pending and nothing unacked
/// (every message settled), and returns its info.
async fn wait_all_settled(url: &str, published: u64) -> consumer::Info {
    let url = url.to_string();
    wait_async("every message settled", || {
        let url = url.clone();
        async move {
            let info = consumer_info(&url).await;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= published)
                .then_some(info)
        }
    })
    .await
}

/// Finished outbox files in `dir` (the outbox writes a temp file, then links
/// it under its `.yaml` name).
fn yaml_files(dir: &Path) -> Vec<Value> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
                .map(|e| {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    serde_yaml_ng::from_str(&text).unwrap()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn yaml_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
                .count()
        })
        .unwrap_or(0)
}

fn outbox_count(t: &Tripline) -> usize {
    yaml_count(&t.dir.path().join("outbox"))
}

/// Polls `check` every 50 ms until it returns `Some`, for up to [`PATIENCE`].
async fn wait<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(status, body)` of `/readyz`.
async fn readyz(t: &Tripline) -> (u16, Value) {
    let r = reqwest::get(t.url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The value of Argo parameter `name` in a Workflow.
fn param<'a>(wf: &'a Value, name: &str) -> &'a str {
    wf["spec"]["arguments"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["value"].as_str())
        .unwrap_or_else(|| panic!("no parameter {name} in {wf}"))
}

/// Asserts that `objects` are exactly one Workflow per key in `expected`:
/// as many objects as keys, unique names, and every key present.
fn assert_one_per_key<'a>(
    objects: impl IntoIterator<Item = &'a Value>,
    expected: &BTreeSet<String>,
) {
    let objects: Vec<&Value> = objects.into_iter().collect();
    let names: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), objects.len(), "duplicate object names");
    let mut seen = BTreeSet::new();
    for o in &objects {
        let k = param(o, "key").to_string();
        assert!(seen.insert(k.clone()), "two objects for key {k}");
    }
    assert_eq!(objects.len(), expected.len(), "object count");
    assert_eq!(&seen, expected, "keys submitted");
}

async fn api_rig() -> (KubeApi, tempfile::TempDir, std::path::PathBuf) {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    (api, dir, kubeconfig)
}

// ---- JetStream ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_thousand_messages_make_a_thousand_objects() {
    let nats = Nats::start().await;
    let t = Tripline::start(
        &js_config(&nats.url(), OUTBOX, &[]),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    let (code, ready) = readyz(&t).await;
    assert_eq!(code, 200, "{ready}");
    assert!(
        ready["sources"]["queue"]["detail"]
            .as_str()
            .unwrap()
            .contains("consuming stream `JOBS`"),
        "{ready}"
    );

    let seqs = publish_jobs(&nats.url(), 0..1000).await;
    wait("1000 outbox files", || {
        (outbox_count(&t) >= 1000).then_some(())
    })
    .await;
    let info = wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    let files = t.outbox();
    assert_one_per_key(files.iter().map(|(_, wf)| wf), &keys(1000));
    assert_eq!(info.num_redelivered, 0, "nothing needed redelivery");
    assert_eq!(t.metric("tripline_objects_created_total").await, 1000);
    assert_eq!(t.metric("tripline_objects_existing_total").await, 0);

    // The envelope: id <stream>:<seq>, annotation carries it; meta is templated.
    let (_, first) = files
        .iter()
        .find(|(_, wf)| param(wf, "key") == "k-0000")
        .unwrap();
    assert_eq!(
        first["metadata"]["annotations"]["tripline.dev/event-id"],
        format!("{STREAM}:{}", seqs[0])
    );
    assert_eq!(param(first, "delivered"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tripline_killed_mid_stream_resumes_without_duplicates() {
    let nats = Nats::start().await;
    let (api, _kube_dir, kubeconfig) = api_rig().await;
    create_stream(&nats.url()).await;
    let seqs = publish_jobs(&nats.url(), 0..1000).await;
    let mut t = Tripline::start(
        &js_config(
            &nats.url(),
            &kube_submit(&kubeconfig),
            &[("maxInFlight", "16"), ("batch", "16")],
        ),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;

    wait("some objects", || {
        (api.objects("workflows").len() >= 150).then_some(())
    })
    .await;
    // The next creates hang for a second, then succeed even if their client
    // is gone: tripline is killed while waiting for them, so their messages
    // are created but never acked — the case deterministic names are for.
    api.fail_next(8, Fault::Hang(Duration::from_secs(1)));
    let answered_posts = || {
        api.request_log()
            .iter()
            .filter(|(m, _, _)| m == "POST")
            .count()
    };
    wait("hanging creates", || {
        (api.create_attempts() - answered_posts() >= 8).then_some(())
    })
    .await;
    t.kill(); // SIGKILL: the hanging messages and any others in flight stay unacked
    let at_kill = api.objects("workflows").len();
    assert!(at_kill < 1000, "tripline finished before it was killed");
    wait("the hung creates to land", || {
        (api.create_attempts() == answered_posts()).then_some(())
    })
    .await;

    t.restart().await;
    wait("1000 objects", || {
        (api.objects("workflows").len() >= 1000).then_some(())
    })
    .await;
    wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    let objects = api.objects("workflows");
    assert_one_per_key(&objects, &keys(1000));
    // The redelivered messages whose objects landed after the kill were
    // answered 409 (already there) and acked as `existing`; every attempt
    // beyond one per message was such a 409.
    let conflicts = api
        .request_log()
        .iter()
        .filter(|(m, _, s)| m == "POST" && *s == 409)
        .count();
    assert!(
        conflicts >= 8,
        "only {conflicts} redeliveries found their object"
    );
    assert_eq!(api.create_attempts(), 1000 + conflicts);
    assert_eq!(
        t.metric("tripline_objects_existing_total").await,
        conflicts as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_stream_loses_and_duplicates_nothing() {
    let mut nats = Nats::start().await;
    create_stream(&nats.url()).await;
    let seqs = publish_jobs(&nats.url(), 0..1000).await;
    let t = Tripline::start(
        &js_config(
            &nats.url(),
            OUTBOX,
            &[("maxInFlight", "16"), ("batch", "16")],
        ),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    wait("some objects", || (outbox_count(&t) >= 150).then_some(())).await;

    nats.stop().await;
    let (code, ready) = wait_async("readiness to drop", || async {
        let (code, body) = readyz(&t).await;
        (code == 503).then_some((code, body))
    })
    .await;
    assert_eq!(code, 503);
    assert!(
        ready["sources"]["queue"]["detail"]
            .as_str()
            .unwrap()
            .contains("not connected"),
        "{ready}"
    );
    assert!(outbox_count(&t) < 1000, "finished before the restart");

    nats.restart().await;
    wait_async("readiness to come back", || async {
        (readyz(&t).await.0 == 200).then_some(())
    })
    .await;
    wait("1000 outbox files", || {
        (outbox_count(&t) >= 1000).then_some(())
    })
    .await;
    wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    let files = t.outbox();
    assert_one_per_key(files.iter().map(|(_, wf)| wf), &keys(1000));
    let created = t.metric("tripline_objects_created_total").await;
    assert_eq!(created, 1000, "each object created once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_unavailable_naks_and_redelivers_then_submits_once() {
    let nats = Nats::start().await;
    let (api, _kube_dir, kubeconfig) = api_rig().await;
    api.set_down(true);
    let t = Tripline::start(
        &js_config(&nats.url(), &kube_submit(&kubeconfig), &[]),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    let seqs = publish_jobs(&nats.url(), 0..20).await;

    // Each message: 2 attempts per delivery; wait for at least 3 deliveries each.
    wait("redeliveries", || {
        (api.create_attempts() >= 20 * 2 * 3).then_some(())
    })
    .await;
    assert!(api.objects("workflows").is_empty());
    let info = consumer_info(&nats.url()).await;
    assert!(info.num_redelivered > 0, "{info:?}");
    assert!(t.metric("tripline_submit_unavailable_total").await >= 40);

    api.set_down(false);
    wait("20 objects", || {
        (api.objects("workflows").len() >= 20).then_some(())
    })
    .await;
    wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    let objects = api.objects("workflows");
    assert_one_per_key(&objects, &keys(20));
    for o in &objects {
        let delivered: u64 = param(o, "delivered").parse().unwrap();
        assert!(delivered >= 3, "submitted on a redelivery: {o}");
    }
    // Once created, nothing more comes: no further deliveries.
    let attempts = api.create_attempts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(api.create_attempts(), attempts);
    assert_eq!(api.objects("workflows").len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_terminated_and_the_stream_flows_on() {
    let nats = Nats::start().await;
    let (api, _kube_dir, kubeconfig) = api_rig().await;
    // The key becomes a label value: the API double rejects an invalid one (422).
    let sensor = JOB_SENSOR.replace(
        r#"- {name: key, value: "{{body.key}}"}"#,
        r#"- {name: key, value: "{{body.key}}"}
        - {name: label, value: "{{body.key}}", dest: metadata.labels.key}"#,
    );
    let t = Tripline::start(
        &js_config(&nats.url(), &kube_submit(&kubeconfig), &[("ackWait", "1s")]),
        &[("jobs.yaml", &sensor)],
        &[],
    )
    .await;
    let mut payloads: Vec<String> = (0..30).map(job).collect();
    payloads[10] = json!({"kind": "job", "key": "not a valid label!"}).to_string();
    let seqs = nats_publish_js(&nats.url(), STREAM, SUBJECT, &payloads).await;

    wait("29 objects", || {
        (api.objects("workflows").len() >= 29).then_some(())
    })
    .await;
    let dl = wait("a dead letter", || {
        let dl = t.dead_letters();
        (!dl.is_empty()).then_some(dl)
    })
    .await;
    let info = wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["status"]["code"], 422, "{}", dl[0]);
    assert_eq!(dl[0]["eventIds"], json!([format!("{STREAM}:{}", seqs[10])]));
    assert_eq!(dl[0]["events"]["job"]["body"]["key"], "not a valid label!");

    // Terminated, not redelivered: after several ack waits, still one
    // attempt per message and one dead letter.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.create_attempts(), 30, "the poison message came back");
    assert_eq!(t.dead_letters().len(), 1);
    assert_eq!(consumer_info(&nats.url()).await.num_redelivered, 0);
    assert_eq!(info.num_ack_pending, 0);
    let mut expected = keys(30);
    expected.remove(&key(10));
    assert_one_per_key(&api.objects("workflows"), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_submissions_send_progress_and_are_not_redelivered() {
    let nats = Nats::start().await;
    let (api, _kube_dir, kubeconfig) = api_rig().await;
    let t = Tripline::start(
        &js_config(&nats.url(), &kube_submit(&kubeconfig), &[("ackWait", "1s")]),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    // Each create takes 4 s: four times the ack wait.
    api.fail_next(3, Fault::Hang(Duration::from_secs(4)));
    let seqs = publish_jobs(&nats.url(), 0..3).await;
    wait("3 objects", || {
        (api.objects("workflows").len() >= 3).then_some(())
    })
    .await;
    let info = wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    assert_eq!(info.num_redelivered, 0, "progress acks kept them");
    assert_eq!(api.create_attempts(), 3);
    assert_eq!(t.metric("tripline_objects_existing_total").await, 0);
    assert!(t.log().contains("progress ack"), "{}", t.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_in_flight_fetched_and_unsettled() {
    let nats = Nats::start().await;
    let (api, _kube_dir, kubeconfig) = api_rig().await;
    // Pull requests overlap (batch 64), but with maxInFlight 3 no more than
    // three messages are delivered and unsettled while submissions hang.
    let t = Tripline::start(
        &js_config(
            &nats.url(),
            &kube_submit(&kubeconfig),
            &[("maxInFlight", "3"), ("ackWait", "5s")],
        ),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    api.fail_next(6, Fault::Hang(Duration::from_millis(1500)));
    let seqs = publish_jobs(&nats.url(), 0..12).await;
    wait("3 submissions in flight", || {
        (api.create_attempts() >= 3).then_some(())
    })
    .await;
    for _ in 0..5 {
        let info = consumer_info(&nats.url()).await;
        assert_eq!(info.num_ack_pending, 3, "{info:?}");
        assert_eq!(api.create_attempts(), 3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait("12 objects", || {
        (api.objects("workflows").len() >= 12).then_some(())
    })
    .await;
    let info = wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_one_per_key(&api.objects("workflows"), &keys(12));
    assert_eq!(t.metric("tripline_objects_created_total").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_messages_and_acks_them() {
    let nats = Nats::start().await;
    let (api, _kube_dir, kubeconfig) = api_rig().await;
    let mut t = Tripline::start(
        &js_config(&nats.url(), &kube_submit(&kubeconfig), &[]),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    api.fail_next(5, Fault::Hang(Duration::from_secs(2)));
    let seqs = publish_jobs(&nats.url(), 0..5).await;
    wait("5 submissions in flight", || {
        (api.create_attempts() >= 5).then_some(())
    })
    .await;
    assert!(api.objects("workflows").len() < 5, "already finished");

    assert_eq!(t.terminate(), Some(0), "{}", t.log());
    assert_eq!(api.objects("workflows").len(), 5, "in-flight work finished");
    // Acked before exit: nothing pending or waiting for the ack wait.
    let info = consumer_info(&nats.url()).await;
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, *seqs.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_durable_consumer_split_the_work() {
    let nats = Nats::start().await;
    create_stream(&nats.url()).await;
    let shared = tempfile::tempdir().unwrap();
    let submit = format!("{{type: outbox, dir: {}}}", shared.path().display());
    let config = js_config(
        &nats.url(),
        &submit,
        &[("batch", "8"), ("maxInFlight", "8")],
    );
    let a = Tripline::start(&config, &[("jobs.yaml", JOB_SENSOR)], &[]).await;
    let b = Tripline::start(&config, &[("jobs.yaml", JOB_SENSOR)], &[]).await;

    let seqs = publish_jobs(&nats.url(), 0..400).await;
    let outbox = || yaml_count(shared.path());
    wait("400 outbox files", || (outbox() >= 400).then_some(())).await;
    wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;

    let files = yaml_files(shared.path());
    assert_one_per_key(&files, &keys(400));
    let (ca, cb) = (
        a.metric("tripline_objects_created_total").await,
        b.metric("tripline_objects_created_total").await,
    );
    assert!(ca > 0 && cb > 0, "work not split: {ca} / {cb}");
    assert_eq!(ca + cb, 400, "a message was processed twice");
    let events = a.metric("tripline_events_total").await + b.metric("tripline_events_total").await;
    assert_eq!(events, 400, "a message was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_consumer_must_exist_and_readiness_says_why() {
    let nats = Nats::start().await;
    // create: false and no stream yet: running, not ready, and saying why.
    let config = js_config(&nats.url(), OUTBOX, &[("create", "false")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sensors")).unwrap();
    std::fs::write(dir.path().join("sensors/jobs.yaml"), JOB_SENSOR).unwrap();
    std::fs::write(dir.path().join("tripline.yaml"), &config).unwrap();
    let port = crate::support::brokers::free_port();
    let mut child = std::process::Command::new(crate::support::tripline::BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("tripline.yaml"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let body: Value = wait_async("a readiness report", || {
        let url = url.clone();
        async move {
            let r = reqwest::get(&url).await.ok()?;
            let code = r.status().as_u16();
            let body: Value = r.json().await.ok()?;
            let detail = body["sources"]["queue"]["detail"].as_str()?.to_string();
            (code == 503 && detail.contains("stream `JOBS`")).then_some(body)
        }
    })
    .await;
    assert_eq!(body["sources"]["queue"]["ready"], false, "{body}");

    // The stream and consumer appear (created by an operator): it binds and gets ready.
    create_stream(&nats.url()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.get_stream(STREAM)
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some(DURABLE.into()),
            ack_wait: Duration::from_secs(2),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_async("ready", || {
        let url = url.clone();
        async move { (reqwest::get(&url).await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    let seqs = publish_jobs(&nats.url(), 0..5).await;
    wait_all_settled(&nats.url(), *seqs.last().unwrap()).await;
    assert_eq!(yaml_count(&dir.path().join("outbox")), 5);
    let _ = child.kill();
    let _ = child.wait();
}

// ---- core NATS ---------------------------------------------------------------

fn core_config(url: &str, subjects: &str, submit: &str, extra: &str) -> String {
    format!(
        "
sensors: sensors/
submit: {submit}
sources:
  - {{type: nats, name: queue, urls: [{url}], subjects: {subjects}{extra}}}
"
    )
}

async fn core_publish(url: &str, subject: &str, payloads: &[String]) {
    let client = async_nats::connect(url).await.expect("connect");
    for p in payloads {
        client
            .publish(subject.to_string(), p.clone().into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_subjects_and_filters_decide_what_is_submitted() {
    let nats = Nats::start().await;
    let sensor = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: files}
spec:
  dependencies:
    - {name: file, source: queue, filters: {path: body.bucket, equals: raw}}
  triggers:
    - name: process
      workflow: {workflowTemplateRef: process-file}
      parameters:
        - {name: key, value: "{{body.key}}"}
        - {name: subject, value: "{{subject}}"}
"#;
    let t = Tripline::start(
        &core_config(&nats.url(), "[files.>]", OUTBOX, ""),
        &[("files.yaml", sensor)],
        &[],
    )
    .await;
    let msg = |bucket: &str, k: &str| json!({"bucket": bucket, "key": k}).to_string();
    core_publish(
        &nats.url(),
        "files.new",
        &[
            msg("raw", "a.csv"),
            msg("archive", "b.csv"),
            msg("raw", "c.csv"),
        ],
    )
    .await;
    core_publish(&nats.url(), "files.eu.new", &[msg("archive", "d.csv")]).await;
    // Not subscribed: never seen.
    core_publish(&nats.url(), "other.new", &[msg("raw", "e.csv")]).await;

    // A request gets the outcome as its reply.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let reply = client
        .request("files.eu.new", msg("raw", "f.csv").into())
        .await
        .expect("request answered");
    let outcome: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(outcome["matched"][0]["status"], "created", "{outcome}");

    wait_async("5 events", || async {
        (t.metric("tripline_events_total").await >= 5).then_some(())
    })
    .await;
    wait("3 outbox files", || (outbox_count(&t) >= 3).then_some(())).await;
    let files = t.outbox();
    let got: BTreeSet<(&str, &str)> = files
        .iter()
        .map(|(_, wf)| (param(wf, "key"), param(wf, "subject")))
        .collect();
    assert_eq!(
        got,
        [
            ("a.csv", "files.new"),
            ("c.csv", "files.new"),
            ("f.csv", "files.eu.new")
        ]
        .into()
    );
    assert_eq!(t.metric("tripline_events_unmatched_total").await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        t.metric("tripline_events_total").await,
        5,
        "other.new was delivered"
    );
    assert_eq!(t.outbox().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_queue_group_splits_the_work_between_processes() {
    let nats = Nats::start().await;
    let shared = tempfile::tempdir().unwrap();
    let submit = format!("{{type: outbox, dir: {}}}", shared.path().display());
    let config = core_config(&nats.url(), "[jobs.>]", &submit, ", queueGroup: workers");
    let a = Tripline::start(&config, &[("jobs.yaml", JOB_SENSOR)], &[]).await;
    let b = Tripline::start(&config, &[("jobs.yaml", JOB_SENSOR)], &[]).await;

    let payloads: Vec<String> = (0..200).map(job).collect();
    core_publish(&nats.url(), SUBJECT, &payloads).await;
    let outbox = || yaml_count(shared.path());
    wait("200 outbox files", || (outbox() >= 200).then_some(())).await;

    let files = yaml_files(shared.path());
    assert_one_per_key(&files, &keys(200));
    let (ea, eb) = (
        a.metric("tripline_events_total").await,
        b.metric("tripline_events_total").await,
    );
    assert!(ea > 0 && eb > 0, "work not split: {ea} / {eb}");
    assert_eq!(ea + eb, 200, "a message went to both");
}

// ---- the shipped example -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_data_arrival_nats_starts_a_workflow_per_new_csv() {
    let nats = Nats::start().await;
    let example = repo("examples/data-arrival-nats");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sensors")).unwrap();
    std::fs::copy(
        example.join("tripline.yaml"),
        dir.path().join("tripline.yaml"),
    )
    .unwrap();
    std::fs::copy(
        example.join("sensors/data-arrival.yaml"),
        dir.path().join("sensors/data-arrival.yaml"),
    )
    .unwrap();
    let config = dir.path().join("tripline.yaml");
    // The example takes the server from $NATS_URL.
    let t = Tripline::start_with(dir, config, &[("NATS_URL", &nats.url())], &[]).await;

    let note = |bucket: &str, key: &str, size: u64| {
        json!({"bucket": bucket, "key": key, "size": size}).to_string()
    };
    nats_publish_js(
        &nats.url(),
        "STORAGE",
        "storage.objects.created.raw",
        &[
            note("raw", "2026/11/24/sales.csv", 1_048_576),
            note("raw", "2026/11/24/empty.csv", 0),
            note("raw", "2026/11/24/photo.jpg", 2048),
        ],
    )
    .await;
    nats_publish_js(
        &nats.url(),
        "STORAGE",
        "storage.objects.created.landing",
        &[note("landing", "eu/orders.csv", 10)],
    )
    .await;
    wait_async("4 events", || async {
        (t.metric("tripline_events_total").await >= 4).then_some(())
    })
    .await;
    wait("2 workflows", || (outbox_count(&t) >= 2).then_some(())).await;
    let files = t.outbox();
    assert_eq!(files.len(), 2, "{files:?}");
    let keys: BTreeSet<&str> = files.iter().map(|(_, wf)| param(wf, "key")).collect();
    assert_eq!(keys, ["2026/11/24/sales.csv", "eu/orders.csv"].into());
    let (file, wf) = &files[0];
    assert!(file.starts_with("data.workflow.process-file-"), "{file}");
    assert_eq!(wf["metadata"]["namespace"], "data");
    let container = &wf["spec"]["templates"][0]["container"];
    assert_eq!(
        container["env"][2],
        json!({"name": "SIZE", "value": "{{inputs.parameters.size}}"})
    );
    assert!(
        !container["args"][0].as_str().unwrap().contains("{{"),
        "{container}"
    );
}

// ---- authentication and TLS --------------------------------------------------

/// `tripline serve` started without waiting for `/readyz` (for a source that
/// must stay not ready); killed by PID on drop. Logs to `<dir>/tripline.log`.
struct Unready {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl Unready {
    fn start(config: &str, sensors: &[(&str, &str)], env: &[(&str, &str)]) -> Unready {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sensors")).unwrap();
        for (name, text) in sensors {
            std::fs::write(dir.path().join("sensors").join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("tripline.yaml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("tripline.log")).unwrap();
        let port = crate::support::brokers::free_port();
        let child = std::process::Command::new(crate::support::tripline::BIN)
            .args(["serve", "--config"])
            .arg(dir.path().join("tripline.yaml"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .envs(env.iter().copied())
            .env("TRIPLINE_LOG", "info,tripline=debug")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Unready { dir, port, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tripline.log")).unwrap_or_default()
    }
}

impl Drop for Unready {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/readyz` of tripline on `port` answers 503 with a detail for
/// source `queue` containing `needle`; returns that detail.
async fn wait_not_ready(t: &Unready, needle: &str) -> String {
    let url = t.url("/readyz");
    let needle = needle.to_string();
    wait_async(&format!("/readyz 503 saying `{needle}`"), || {
        let (url, needle) = (url.clone(), needle.clone());
        async move {
            let r = reqwest::get(&url).await.ok()?;
            let code = r.status().as_u16();
            let body: Value = r.json().await.ok()?;
            assert_eq!(body["sources"]["queue"]["ready"], code == 200, "{body}");
            let detail = body["sources"]["queue"]["detail"].as_str()?.to_string();
            (code == 503 && detail.contains(&needle)).then_some(detail)
        }
    })
    .await
}

/// How many lines of the nats-server log contain `needle`.
fn server_log_count(nats: &Nats, needle: &str) -> usize {
    std::fs::read_to_string(nats.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Lines of the nats-server log that report a client refused for its credentials.
fn auth_errors(nats: &Nats) -> usize {
    server_log_count(nats, "authentication error")
}

/// Core NATS config with `auth` (YAML flow-map entries) added to the source.
fn core_auth_config(url: &str, auth: &str) -> String {
    core_config(url, "[jobs.>]", OUTBOX, &format!(", {auth}"))
}

/// Publishes jobs `range` on core NATS with `client` (authenticated as the
/// server requires) and waits for one outbox file per key.
async fn publish_and_expect_objects(
    client: &async_nats::Client,
    t: &Tripline,
    range: std::ops::Range<usize>,
) {
    for i in range.clone() {
        client
            .publish(SUBJECT.to_string(), job(i).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let n = range.len();
    wait(&format!("{n} outbox files"), || {
        (outbox_count(t) >= n).then_some(())
    })
    .await;
    let files = t.outbox();
    let expected: BTreeSet<String> = range.map(key).collect();
    assert_one_per_key(files.iter().map(|(_, wf)| wf), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_from_env_connects_and_submits() {
    let nats = Nats::start_with(&["--auth", "s3cret-t0ken"]).await;
    // Without credentials the server refuses a client: the token matters.
    assert!(async_nats::connect(nats.url()).await.is_err());
    let t = Tripline::start(
        &core_auth_config(&nats.url(), "token: {env: NATS_TOKEN}"),
        &[("jobs.yaml", JOB_SENSOR)],
        &[("NATS_TOKEN", "s3cret-t0ken")],
    )
    .await;
    let (code, ready) = readyz(&t).await;
    assert_eq!(code, 200, "{ready}");
    publish_and_expect_objects(&nats.client().await, &t, 0..20).await;
    assert_eq!(t.metric("tripline_events_total").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_not_ready_and_submits_nothing() {
    let nats = Nats::start_with(&["--auth", "s3cret-t0ken"]).await;
    // Work is waiting in a stream, for durable `tripline` (which tripline
    // would create on its first connection).
    let js = jetstream::new(nats.client().await);
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["jobs.>".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..5 {
        js.publish(SUBJECT, job(i).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let config = js_config(&nats.url(), OUTBOX, &[]).replace(
        "    subjects: [jobs.>]\n",
        "    subjects: [jobs.>]\n    token: {env: NATS_TOKEN}\n",
    );
    assert!(config.contains("token: {env: NATS_TOKEN}"), "{config}");
    let errors_before = auth_errors(&nats);
    let t = Unready::start(
        &config,
        &[("jobs.yaml", JOB_SENSOR)],
        &[("NATS_TOKEN", "wrong-token")],
    );

    let detail = wait_not_ready(&t, "not connected").await;
    assert!(detail.contains(&nats.url()), "{detail}");
    // The server refused it several times (it keeps retrying), and it stays
    // not ready throughout.
    wait("three refused connections", || {
        (auth_errors(&nats) >= errors_before + 3).then_some(())
    })
    .await;
    // ... and /readyz says why, not only that.
    let detail = wait_not_ready(&t, "not connected").await;
    assert!(detail.to_lowercase().contains("authorization"), "{detail}");

    // Nothing was consumed or submitted.
    assert_eq!(yaml_count(&t.dir.path().join("outbox")), 0, "{}", t.log());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    assert!(
        stream.consumer_info(DURABLE).await.is_err(),
        "tripline created its consumer with a wrong token"
    );
    assert_eq!(stream.info().await.unwrap().state.messages, 5);
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("tripline_events_total ")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    assert_eq!(events, 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_file_connects_and_submits() {
    let nats = Nats::start_with(&["--user", "tripline", "--pass", "p4ss-w0rd"]).await;
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("nats-password");
    // A trailing newline, as `echo` or a mounted Secret leaves it.
    std::fs::write(&password, "p4ss-w0rd\n").unwrap();
    let t = Tripline::start(
        &core_auth_config(
            &nats.url(),
            &format!("user: tripline, password: {{file: {}}}", password.display()),
        ),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    publish_and_expect_objects(&nats.client().await, &t, 0..20).await;
    assert_eq!(t.metric("tripline_events_total").await, 20);
}

/// Runs `openssl` with `args` (split at whitespace) in `dir`; panics with
/// its stderr if it fails.
pub(crate) fn openssl(dir: &Path, args: &str) {
    let out = std::process::Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("run openssl (is the openssl CLI installed?)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA (`ca.pem`) and a server certificate for 127.0.0.1
/// signed by it (`server.pem`, `server.key`), made in `dir`.
pub(crate) fn make_certs(dir: &Path) {
    openssl(
        dir,
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=tripline-test-ca \
         -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE \
         -addext keyUsage=critical,keyCertSign,cRLSign",
    );
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr",
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.pem",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_connects_and_submits() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let nats = Nats::start_with(&[
        "--tls",
        "--tlscert",
        &file("server.pem"),
        "--tlskey",
        &file("server.key"),
        // Lets the test's own client trust the server (no client certificates asked).
        "--tlscacert",
        &file("ca.pem"),
    ])
    .await;
    let tls_url = format!("tls://127.0.0.1:{}", nats.port);

    // Without the CA the server's certificate is not trusted: not ready.
    let untrusting = Unready::start(
        &core_config(&tls_url, "[jobs.>]", OUTBOX, ""),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    );
    wait_not_ready(&untrusting, "not connected").await;
    // ... because it rejected the server's certificate.
    wait("a failed TLS handshake in the server log", || {
        (server_log_count(&nats, "TLS handshake error") >= 1).then_some(())
    })
    .await;

    let t = Tripline::start(
        &core_config(
            &tls_url,
            "[jobs.>]",
            OUTBOX,
            &format!(", tls: {{caFile: {}}}", file("ca.pem")),
        ),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    publish_and_expect_objects(&nats.client().await, &t, 0..20).await;
    assert_eq!(t.metric("tripline_events_total").await, 20);

    // nats:// with requireTls: TLS as well.
    let t2 = Tripline::start(
        &core_config(
            &nats.url(),
            "[jobs.>]",
            OUTBOX,
            &format!(", tls: {{caFile: {}, requireTls: true}}", file("ca.pem")),
        ),
        &[("jobs.yaml", JOB_SENSOR)],
        &[],
    )
    .await;
    publish_and_expect_objects(&nats.client().await, &t2, 100..110).await;

    // The one without the CA never got anything.
    wait_not_ready(&untrusting, "not connected").await;
    assert_eq!(
        yaml_count(&untrusting.dir.path().join("outbox")),
        0,
        "{}",
        untrusting.log()
    );
}
