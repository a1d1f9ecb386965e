//! The core engine end to end through the real binary: the plain HTTP
//! source, the outbox, the CLI (`validate`, `test`), shutdown.

use serde_json::{json, Value};

use crate::support::tripline::{fixture, post, raw_status_line, repo, run_cli, Tripline};

const CONFIG: &str = "
sensors: sensors/
submit: {type: outbox, dir: outbox/}
limits: {maxBodyBytes: 65536}
sources:
  - {type: http, name: events}
";

fn repo_sensor(name: &str) -> String {
    std::fs::read_to_string(repo("sensors").join(name)).unwrap()
}

#[tokio::test]
async fn github_push_to_the_http_source_writes_one_workflow_to_the_outbox() {
    let t = Tripline::start(
        CONFIG,
        &[("on-push.yaml", &repo_sensor("on-push.yaml"))],
        &[],
    )
    .await;
    let body = fixture("github/push.payload.json");
    let headers = [
        ("X-GitHub-Event", "push"),
        ("Content-Type", "application/json"),
    ];

    let (code, reply) = post(&t, "/events/events", &headers, body.clone()).await;
    assert_eq!(code, 200, "{reply}");
    let matched = reply["matched"].as_array().unwrap();
    assert_eq!(matched.len(), 1, "{reply}");
    assert_eq!(matched[0]["sensor"], "on-push");
    assert_eq!(matched[0]["trigger"], "build");
    assert_eq!(matched[0]["status"], "created");
    let name = matched[0]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("ci-build-"), "{name}");
    assert!(reply["event_id"].as_str().unwrap().starts_with("sha256:"));

    let files = t.outbox();
    assert_eq!(files.len(), 1, "{files:?}");
    let (file, wf) = &files[0];
    assert_eq!(file, &format!("default.workflow.{name}.yaml"));
    assert_eq!(wf["kind"], "Workflow");
    assert_eq!(wf["metadata"]["name"], name.as_str());
    assert_eq!(wf["metadata"]["labels"]["tripline.dev/sensor"], "on-push");
    assert_eq!(
        wf["metadata"]["annotations"]["tripline.dev/event-id"],
        reply["event_id"]
    );
    assert_eq!(wf["spec"]["workflowTemplateRef"]["name"], "ci-build");
    let params = &wf["spec"]["arguments"]["parameters"];
    assert_eq!(
        params[0],
        json!({"name": "repo", "value": "Codertocat/Hello-World"})
    );
    assert_eq!(
        params[1],
        json!({"name": "ref", "value": "refs/tags/simple-tag"})
    );
    assert_eq!(
        params[2],
        json!({"name": "revision", "value": "000000000000"})
    );
    assert_eq!(params[3], json!({"name": "pusher", "value": "codertocat"}));

    // The same delivery again: same name, `existing`, still one file.
    let (code, again) = post(&t, "/events/events", &headers, body).await;
    assert_eq!(code, 200);
    assert_eq!(again["matched"][0]["status"], "existing");
    assert_eq!(again["matched"][0]["name"], name.as_str());
    assert_eq!(t.outbox().len(), 1);
}

#[tokio::test]
async fn replies_for_no_match_bad_bodies_and_unknown_routes() {
    let t = Tripline::start(
        CONFIG,
        &[("on-push.yaml", &repo_sensor("on-push.yaml"))],
        &[],
    )
    .await;
    let json_ct = [("Content-Type", "application/json")];

    // Matches nothing: 200 with an empty list, nothing written.
    let (code, reply) = post(
        &t,
        "/events/events",
        &[("X-GitHub-Event", "issues"), json_ct[0]],
        fixture("github/push.payload.json"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"], json!([]));
    // ... and says why, so a sender's delivery log shows it.
    assert_eq!(
        reply["why_not"],
        json!([{"sensor": "on-push", "dependency": "push",
                "reason": "headers.X-GitHub-Event equals \"push\" (seen \"issues\"): value does not satisfy the operator"}])
    );

    // Malformed JSON: 400 naming line and column.
    let (code, reply) = post(
        &t,
        "/events/events",
        &json_ct,
        b"{\"a\": 1,\n \"b\": }".to_vec(),
    )
    .await;
    assert_eq!(code, 400);
    let err = reply["error"].as_str().unwrap();
    assert!(err.contains("line 2") && err.contains("column"), "{err}");

    // Over the limit: 413, for a declared length and for a chunked body.
    let (code, reply) = post(&t, "/events/events", &json_ct, vec![b' '; 65537]).await;
    assert_eq!(code, 413, "{reply}");
    // Chunked (no Content-Length): refused once the limit is crossed, before the end.
    let head = "POST /events/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunks = (0..25).map(|_| [b"2000\r\n".as_slice(), &[b' '; 0x2000], b"\r\n"].concat());
    let status = raw_status_line(t.port, head, chunks.chain([b"0\r\n\r\n".to_vec()]));
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // Unsupported content type.
    let (code, _) = post(
        &t,
        "/events/events",
        &[("Content-Type", "application/xml")],
        b"<a/>".to_vec(),
    )
    .await;
    assert_eq!(code, 415);

    // Text bodies are accepted as strings.
    let (code, reply) = post(
        &t,
        "/events/events",
        &[("Content-Type", "text/plain")],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");

    // Unknown source: 404; wrong method: 405.
    let (code, reply) = post(&t, "/events/nope", &json_ct, b"{}".to_vec()).await;
    assert_eq!(code, 404);
    assert!(reply["error"].as_str().unwrap().contains("/events/nope"));
    let r = reqwest::get(t.url("/events/events")).await.unwrap();
    assert_eq!(r.status().as_u16(), 405);

    assert!(t.outbox().is_empty(), "nothing may be submitted");
    let r = reqwest::get(t.url("/healthz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(t.metric("tripline_events_unmatched_total").await, 2);
}

#[tokio::test]
async fn explain_endpoint_tells_why_and_submits_nothing() {
    let t = Tripline::start(
        CONFIG,
        &[("retrain.yaml", &repo_sensor("retrain-on-push.yaml"))],
        &[],
    )
    .await;
    let (code, reply) = post(
        &t,
        "/explain/events",
        &[
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        fixture("github/push.payload.json"),
    )
    .await;
    assert_eq!(code, 200);
    let dep = &reply["explanation"]["sensors"][0]["dependencies"][0];
    assert_eq!(dep["matched"], false);
    let ref_filter = &dep["filters"]["children"][1];
    assert_eq!(ref_filter["filter"], "body.ref equals \"refs/heads/main\"");
    assert_eq!(ref_filter["seen"], "refs/tags/simple-tag");
    assert_eq!(ref_filter["matched"], false);
    assert_eq!(reply["rendered"], json!([]));
    assert!(t.outbox().is_empty());
}

#[tokio::test]
async fn argo_placeholders_survive_and_event_data_cannot_inject_structure() {
    let t = Tripline::start(
        CONFIG,
        &[("data.yaml", &repo_sensor("data-arrival.yaml"))],
        &[],
    )
    .await;
    let evil = "x\"}\n  injected: true\nspec: {templates: []}\n#.csv";
    let body = serde_json::to_vec(&json!({"bucket": "raw", "key": evil, "size": 10})).unwrap();
    let (code, reply) = post(
        &t,
        "/events/events",
        &[("Content-Type", "application/json")],
        body,
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    let files = t.outbox();
    assert_eq!(files.len(), 1);
    let wf = &files[0].1;
    // Argo's own placeholders stay as written (in env, never in the code).
    let container = &wf["spec"]["templates"][0]["container"];
    assert_eq!(
        container["env"][1],
        json!({"name": "KEY", "value": "{{inputs.parameters.key}}"})
    );
    assert!(
        !container["args"][0].as_str().unwrap().contains("{{"),
        "{container}"
    );
    let params = wf["spec"]["arguments"]["parameters"].as_array().unwrap();
    assert_eq!(params.len(), 2);
    assert_eq!(params[1], json!({"name": "key", "value": evil}));
    assert!(wf.get("injected").is_none() && wf["spec"].get("injected").is_none());
    assert_eq!(wf["spec"]["templates"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn render_failures_are_dead_lettered_and_answered_200_invalid() {
    let sensor =
        repo_sensor("on-push.yaml").replace("{{lower body.pusher.name}}", "{{body.no_such_field}}");
    let t = Tripline::start(CONFIG, &[("s.yaml", &sensor)], &[]).await;
    let (code, reply) = post(
        &t,
        "/events/events",
        &[
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        fixture("github/push.payload.json"),
    )
    .await;
    assert_eq!(code, 200, "a final rejection: {reply}");
    assert_eq!(reply["matched"][0]["status"], "invalid");
    let msg = reply["matched"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("pusher") && msg.contains("body.no_such_field"),
        "{msg}"
    );
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["sensor"], "on-push");
    assert!(t.outbox().is_empty());
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let mut t = Tripline::start(
        CONFIG,
        &[("on-push.yaml", &repo_sensor("on-push.yaml"))],
        &[],
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(t.terminate(), Some(0), "{}", t.log());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(t.log().contains("shutdown requested"));
}

#[test]
fn validate_names_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    std::fs::write(dir.path().join("tripline.yaml"), CONFIG).unwrap();
    let good = repo_sensor("on-push.yaml");
    let bad = good
        .replace("name: on-push", "name: second")
        .replace("source: events", "source: github");
    std::fs::write(
        dir.path().join("sensors/a.yaml"),
        format!("{good}\n---\n{bad}"),
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["validate"], dir.path());
    assert_ne!(code, 0);
    assert!(
        stderr.contains("a.yaml: document 2: spec.dependencies[0].source: unknown source `github`"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("sensors/a.yaml"), &good).unwrap();
    let (code, stdout, stderr) = run_cli(&["validate"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 sensor(s)"), "{stdout}");

    std::fs::write(
        dir.path().join("tripline.yaml"),
        "sources: [{type: http, name: events, secret: x}]",
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["validate"], dir.path());
    assert_ne!(code, 0);
    assert!(
        stderr.contains("sources[0]") && stderr.contains("unknown field `secret`"),
        "{stderr}"
    );
}

#[test]
fn test_command_explains_and_renders() {
    let sensor = repo("sensors/retrain-on-push.yaml");
    let push = repo("tests/fixtures/github/push.payload.json");
    let (code, stdout, _) = run_cli(
        &[
            "test",
            sensor.to_str().unwrap(),
            "--event",
            push.to_str().unwrap(),
            "--header",
            "X-GitHub-Event=push",
        ],
        &repo(""),
    );
    assert_eq!(code, 1, "no trigger fires: exit 1");
    assert!(
        stdout.contains("✓ headers.X-GitHub-Event equals \"push\"  (seen: \"push\")"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ body.ref equals \"refs/heads/main\"  (seen: \"refs/tags/simple-tag\")"),
        "{stdout}"
    );
    assert!(stdout.contains("no trigger fires"), "{stdout}");

    // A push to main touching models/: fires, and the manifest is printed.
    let dir = tempfile::tempdir().unwrap();
    let mut body: Value = serde_json::from_slice(&fixture("github/push.payload.json")).unwrap();
    body["ref"] = json!("refs/heads/main");
    body["after"] = json!("abc123");
    body["commits"] =
        json!([{"id": "abc123", "added": [], "modified": ["models/net.py"], "removed": []}]);
    let ev = dir.path().join("ev.json");
    std::fs::write(&ev, serde_json::to_vec(&body).unwrap()).unwrap();
    let (code, stdout, _) = run_cli(
        &[
            "test",
            sensor.to_str().unwrap(),
            "--event",
            ev.to_str().unwrap(),
            "-H",
            "X-GitHub-Event=push",
            "--output",
            "json",
        ],
        &repo(""),
    );
    assert_eq!(code, 0, "{stdout}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        out["explanation"]["sensors"][0]["dependencies"][0]["matched"],
        true
    );
    let obj = &out["rendered"][0]["object"];
    assert_eq!(obj["spec"]["workflowTemplateRef"]["name"], "train-model");
    assert_eq!(
        obj["spec"]["arguments"]["parameters"][0],
        json!({"name": "revision", "value": "abc123"})
    );
}

/// The push fixture posted as a GitHub `issues` event.
async fn post_issues(t: &Tripline) -> (u16, Value) {
    post(
        t,
        "/events/events",
        &[
            ("X-GitHub-Event", "issues"),
            ("Content-Type", "application/json"),
        ],
        fixture("github/push.payload.json"),
    )
    .await
}

#[tokio::test]
async fn sighup_reloads_sensors_and_refuses_a_broken_set() {
    // Only SIGHUP here: the file watch has its own test.
    let t = Tripline::start(
        &format!("{CONFIG}watchSensors: 0s\n"),
        &[("on-push.yaml", &repo_sensor("on-push.yaml"))],
        &[],
    )
    .await;
    let issues = || post_issues(&t);
    let (_, reply) = issues().await;
    assert_eq!(
        reply["matched"],
        json!([]),
        "push-only sensor ignores `issues`"
    );

    let hup = |t: &Tripline| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &t.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let wait_metric = |name: &'static str, want: u64| {
        let t = &t;
        async move {
            for _ in 0..200 {
                if t.metric(name).await == want {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("{name} never reached {want}");
        }
    };

    // Widen the sensor to `issues` events and reload.
    let sensors = t.dir.path().join("sensors/on-push.yaml");
    let widened = repo_sensor("on-push.yaml").replace("equals: push }", "in: [push, issues] }");
    std::fs::write(&sensors, &widened).unwrap();
    hup(&t);
    wait_metric("tripline_sensor_reloads_total", 1).await;
    let (code, reply) = issues().await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");

    // A broken file is refused whole; the running sensors stay.
    std::fs::write(
        &sensors,
        widened.replace("source: events", "source: nowhere"),
    )
    .unwrap();
    hup(&t);
    wait_metric("tripline_sensor_reload_failures_total", 1).await;
    assert!(t.log().contains("unknown source `nowhere`"), "{}", t.log());
    let (_, reply) = issues().await;
    assert_eq!(
        reply["matched"][0]["status"], "existing",
        "still the widened sensor: {reply}"
    );
}

/// An edit, and a ConfigMap volume's symlink swap, reload the sensors with
/// no signal; a broken edit is refused and the running set stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_sensor_files_reload_without_a_signal_configmap_swaps_included() {
    let t = Tripline::start(&format!("{CONFIG}watchSensors: 200ms\n"), &[], &[]).await;
    // A ConfigMap volume: sensors/on-push.yaml -> ..data/on-push.yaml,
    // ..data -> ..v1 (kubelet swaps ..data atomically on an update).
    let dir = t.dir.path().join("sensors");
    let (v1, v2) = (dir.join("..v1"), dir.join("..v2"));
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("on-push.yaml"), repo_sensor("on-push.yaml")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/on-push.yaml", dir.join("on-push.yaml")).unwrap();

    let issues = || post_issues(&t);
    let reloads = |n: u64| {
        let t = &t;
        async move {
            for _ in 0..100 {
                if t.metric("tripline_sensor_reloads_total").await == n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("sensor reloads never reached {n}");
        }
    };
    // The new file is picked up.
    reloads(1).await;
    let (_, reply) = issues().await;
    assert_eq!(reply["matched"], json!([]), "push-only: {reply}");

    // The update: a new version directory, then ..data swapped by rename.
    std::fs::create_dir(&v2).unwrap();
    let widened = repo_sensor("on-push.yaml").replace("equals: push }", "in: [push, issues] }");
    std::fs::write(v2.join("on-push.yaml"), &widened).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    reloads(2).await;
    let (code, reply) = issues().await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");

    // A broken edit is refused; the widened sensor keeps answering.
    std::fs::write(
        v2.join("on-push.yaml"),
        widened.replace("source: events", "source: nowhere"),
    )
    .unwrap();
    for _ in 0..100 {
        if t.metric("tripline_sensor_reload_failures_total").await >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(t.metric("tripline_sensor_reload_failures_total").await >= 1);
    let (_, reply) = issues().await;
    assert_eq!(reply["matched"][0]["status"], "existing", "{reply}");
}

/// `/metrics` after one matching and one non-matching delivery: counters
/// per source, both latency histograms, the in-flight gauge back at 0 and
/// the process's own metrics, as OpenMetrics text.
#[tokio::test]
async fn metrics_count_per_source_time_events_and_submits_and_show_the_process() {
    let t = Tripline::start(
        CONFIG,
        &[("on-push.yaml", &repo_sensor("on-push.yaml"))],
        &[],
    )
    .await;
    let body = fixture("github/push.payload.json");
    let push = [
        ("X-GitHub-Event", "push"),
        ("Content-Type", "application/json"),
    ];
    let (code, _) = post(&t, "/events/events", &push, body.clone()).await;
    assert_eq!(code, 200);
    let (code, _) = post(
        &t,
        "/events/events",
        &[("Content-Type", "application/json")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(code, 200);
    let response = reqwest::get(t.url("/metrics")).await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    let sample = |line: &str| {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    };
    sample(r#"tripline_events_total{source="events"} 2"#);
    sample(r#"tripline_events_matched_total{source="events"} 1"#);
    sample(r#"tripline_events_unmatched_total{source="events"} 1"#);
    sample(r#"tripline_event_duration_seconds_count{source="events"} 2"#);
    sample(r#"tripline_submit_duration_seconds_count{result="created"} 1"#);
    sample("tripline_events_in_flight 0");
    sample(
        r#"tripline_trigger_outcomes_total{sensor="on-push",trigger="build",status="created"} 1"#,
    );
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

/// A changed `tripline.yaml` that checks out starts a new generation on the
/// same sockets: a source added by the edit answers, the old ones keep
/// answering, and no request is refused while the generations switch; a
/// broken edit is refused whole and the running config stays. Both
/// outcomes are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_reloads_on_the_same_sockets_and_a_broken_one_is_refused() {
    let config = "sensors: sensors/\nsubmit: {type: outbox, dir: outbox/}\nwatchSensors: 200ms\nsources:\n  - {type: http, name: events}\n";
    let t = Tripline::start(
        config,
        &[("on-push.yaml", &repo_sensor("on-push.yaml"))],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let status = |path: &'static str| {
        let (client, url) = (client.clone(), t.url(path));
        async move {
            client
                .post(url)
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(status("/hooks/more").await.unwrap(), 404);

    // Requests all along the switch, each on a new connection (as webhook
    // senders send them): none may be refused. (A client reusing a
    // keep-alive connection can see it closed as the old generation stops,
    // the race of any graceful HTTP/1.1 restart.)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let hammer = {
        let (client, url, stop) = (fresh, t.url("/events/events"), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.post(&url).body("{}").send().await {
                    // 202: taken into the intake journal while the old
                    // generation drains, processed by the next one.
                    Ok(r) if r.status() == 200 || r.status() == 202 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    std::fs::write(
        t.config_path(),
        format!("{config}  - {{type: http, name: more, path: /hooks/more}}\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    while status("/hooks/more").await.ok() != Some(200) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the new source never answered:\n{}",
            t.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = hammer.await.unwrap();
    assert!(ok > 10, "{ok}");
    assert!(failed.is_empty(), "refused during the reload: {failed:?}");
    assert_eq!(t.metric("tripline_config_reloads_total").await, 1);

    // A broken edit: refused, counted, the running config (with `more`) stays.
    std::fs::write(t.config_path(), format!("{config}bogus: 1\n")).unwrap();
    let started = std::time::Instant::now();
    while t.try_metric("tripline_config_reload_failures_total").await != Some(1) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{}",
            t.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status("/hooks/more").await.unwrap(), 200);
    assert!(t.log().contains("config reload refused"), "{}", t.log());
}
