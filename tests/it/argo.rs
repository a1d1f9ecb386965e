//! Argo Events `Sensor` manifests run unchanged (#12, the part done so far):
//! the upstream examples load next to native sensors, explain and render
//! through `tripline test`, and an upstream GitHub sensor behind a signed
//! github source creates the Workflow upstream would, in the API double.

use serde_json::Value;

use crate::support::kube_api::KubeApi;
use crate::support::tripline::{
    fixture, github_signature, header_args, repo, run_cli, tripline_test, Tripline,
};
use crate::support::wait::until;

/// Sources named `<eventSourceName>-<eventName>` for every upstream example.
const SOURCES: &str = "sources:
  - {type: http, name: webhook-example}
  - {type: http, name: webhook-example-foo}
  - {type: http, name: webhook-example1}
  - {type: http, name: gitlab-group-example}
  - {type: http, name: github-example}
  - {type: http, name: gitlab-example}
  - {type: http, name: nats-example}
  - {type: http, name: kafka-example}
";

fn argo(name: &str) -> std::path::PathBuf {
    repo("tests/fixtures/argo-events/sensors").join(name)
}

#[test]
fn the_upstream_examples_load_or_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tripline.yaml"), SOURCES).unwrap();
    let mut loaded = 0;
    for entry in std::fs::read_dir(repo("tests/fixtures/argo-events/sensors")).unwrap() {
        let path = entry.unwrap().path();
        let (code, out, err) = run_cli(
            &["validate", "--sensors", path.to_str().unwrap()],
            dir.path(),
        );
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("1 sensor(s)"), "{name}: {out}");
        assert!(!err.contains("apiVersion"), "{name}: {err}");
        loaded += 1;
    }
    assert_eq!(loaded, 41);
    // Argo next to native in one directory, and the trap warnings.
    let sensors = dir.path().join("sensors");
    std::fs::create_dir(&sensors).unwrap();
    std::fs::copy(argo("webhook.yaml"), sensors.join("webhook.yaml")).unwrap();
    std::fs::copy(
        argo("special-workflow-trigger.yaml"),
        sensors.join("special.yaml"),
    )
    .unwrap();
    std::fs::write(
        sensors.join("native.yaml"),
        "apiVersion: tripline.dev/v1alpha1\nkind: Sensor\nmetadata: {name: native}\nspec:\n  dependencies: [{name: d, source: webhook-example}]\n  triggers: [{name: t, workflow: {workflowTemplateRef: x}}]\n",
    )
    .unwrap();
    std::fs::write(
        sensors.join("policy.yaml"),
        "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata: {name: policy}\nspec:\n  dependencies: [{name: d, eventSourceName: webhook, eventName: example}]\n  triggers:\n    - template:\n        name: t\n        policy: {k8s: {}}\n        k8s: {operation: create, source: {resource: {apiVersion: v1, kind: ConfigMap, metadata: {generateName: x-}}}}\n---\napiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata: {name: webhook}\nspec: {}\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(&["validate", "--sensors", "sensors"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 sensor(s)"), "{out}");
    assert!(
        err.contains("warning:") && err.contains("template.policy: unknown field, ignored"),
        "{err}"
    );
    assert!(
        err.contains("EventSource ignored here; run 'tripline import'"),
        "{err}"
    );
    assert!(
        err.contains("args[0]: `--node-field-selector` ignored"),
        "{err}"
    );
    // An unbound dependency and an unsupported trigger kind: load errors.
    std::fs::write(
        sensors.join("policy.yaml"),
        "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata: {name: other}\nspec:\n  dependencies: [{name: d, eventSourceName: calendar, eventName: example}]\n  triggers: [{template: {name: t, http: {url: 'http://x'}}}]\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["validate", "--sensors", "sensors"], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("no tripline source for Argo event 'calendar/example': declare a source named 'calendar-example'"), "{err}");
    assert!(
        err.contains("trigger kind 'http' is not supported (supported: k8s, argoWorkflow)"),
        "{err}"
    );
}

#[test]
fn tripline_test_renders_an_argo_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let event = repo("tests/fixtures/github/push.payload.json");
    let run = tripline_test(
        &argo("webhook.yaml"),
        &event,
        &["-H", "Content-Type=application/json"],
        dir.path(),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    let wf = &run.json["rendered"][0]["object"];
    assert_eq!(wf["kind"], "Workflow");
    assert_eq!(
        wf["metadata"]["labels"]["events.argoproj.io/sensor"],
        "webhook"
    );
    assert_eq!(
        wf["metadata"]["labels"]["events.argoproj.io/trigger"],
        "webhook-workflow-trigger"
    );
    // `dataKey: body` puts the whole body, as JSON text, into the argument.
    let message = wf["spec"]["arguments"]["parameters"][0]["value"]
        .as_str()
        .unwrap();
    let body: Value = serde_json::from_str(message).unwrap();
    assert_eq!(body["ref"], "refs/tags/simple-tag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_github_sensor_behind_a_signed_source_creates_its_workflow() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let config = format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}
sources:
  - {{type: github, name: github-example, path: /push, secret: {{env: GH_SECRET}}}}
",
        kubeconfig.display()
    );
    let sensor = std::fs::read_to_string(argo("github.yaml")).unwrap();
    let t = Tripline::start(
        &config,
        &[("github.yaml", &sensor)],
        &[("GH_SECRET", "s3cret")],
    )
    .await;
    let body = fixture("github/pull_request.opened.payload.json");
    let send = |event: &'static str, delivery: &'static str| {
        let (url, body) = (t.url("/push"), body.clone());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("X-GitHub-Event", event)
                .header("X-GitHub-Delivery", delivery)
                .header("X-Hub-Signature-256", github_signature("s3cret", &body))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // A push delivery does not pass the sensor's `headers.X-Github-Event`
    // filter; the reply says why.
    let (code, reply) = send("push", "d-0").await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"], serde_json::json!([]), "{reply}");
    assert!(
        reply["why_not"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("X-Github-Event"),
        "{reply}"
    );

    let (code, reply) = send("pull_request", "d-1").await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");
    until("the Workflow", || {
        (!api.objects("workflows").is_empty()).then_some(())
    })
    .await;
    let wf = &api.objects("workflows")[0];
    // What upstream submits: the name from `append` on an absent
    // metadata.name (the example's comment promising github-… is wrong).
    assert_eq!(wf["metadata"]["name"], "2-ec26c3e");
    let params = &wf["spec"]["arguments"]["parameters"];
    assert_eq!(
        params[0]["value"],
        "Update the README with new information."
    );
    assert_eq!(params[1]["value"], "2");
    assert_eq!(params[2]["value"], "ec26c3e");
    assert_eq!(
        wf["metadata"]["labels"]["events.argoproj.io/sensor"],
        "github"
    );
    // A redelivery (or a second firing) finds the fixed name: existing.
    let (_, reply) = send("pull_request", "d-2").await;
    assert_eq!(reply["matched"][0]["status"], "existing", "{reply}");
    assert_eq!(api.objects("workflows").len(), 1);
}

/// The upstream Kafka and NATS sensors on the real brokers: the Kafka one
/// puts the message body into the Workflow (base64: `jsonBody: false`), the
/// NATS one — bound by the source's `argo:` alias, not its name — the whole
/// Argo event (context and base64 data, with the source's metadata).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_kafka_and_nats_sensors_on_the_real_brokers() {
    use crate::support::brokers::{kafka_produce, Kafka, Nats};
    let kafka = Kafka::start(&[("topic-2", 1)]).await;
    let nats = Nats::start().await;
    let config = format!(
        "sensors: sensors/
limits: {{shutdownDeadline: 10s}}
sources:
  - type: kafka
    name: kafka-example
    brokers: {}
    topics: [topic-2]
    groupId: argo
    commitInterval: 200ms
    properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 1000}}
    argo: {{jsonBody: false}}
  - type: nats
    name: uploads
    urls: [{}]
    subjects: [foo]
    argo: {{eventSourceName: nats, eventName: example, metadata: {{team: ml}}}}
",
        kafka.bootstrap(),
        nats.url()
    );
    let read = |name: &str| std::fs::read_to_string(argo(name)).unwrap();
    let t = Tripline::start(
        &config,
        &[
            ("kafka.yaml", &read("kafka.yaml")),
            ("nats.yaml", &read("nats.yaml")),
        ],
        &[],
    )
    .await;
    kafka_produce(
        &kafka.bootstrap(),
        "topic-2",
        &[(None::<&str>, r#"{"job":"thumbnails","n":7}"#)],
    )
    .await;
    let client = nats.client().await;
    client
        .publish("foo", r#"{"file":"a.csv"}"#.into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    until("two Workflows", || (t.outbox().len() >= 2).then_some(())).await;
    let objects: Vec<Value> = t.outbox().into_iter().map(|(_, o)| o).collect();
    let by_sensor = |s: &str| {
        objects
            .iter()
            .find(|o| o["metadata"]["labels"]["events.argoproj.io/sensor"] == s)
            .unwrap_or_else(|| panic!("no object of sensor {s}: {objects:#?}"))
    };
    // `argo: {jsonBody: false}`: the body is the payload's base64, as
    // upstream's default.
    use base64::Engine as _;
    let message = by_sensor("kafka")["spec"]["arguments"]["parameters"][0]["value"]
        .as_str()
        .unwrap();
    let message = base64::engine::general_purpose::STANDARD
        .decode(message)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {message}"));
    assert_eq!(
        serde_json::from_slice::<Value>(&message).unwrap()["job"],
        "thumbnails"
    );
    let whole = by_sensor("nats")["spec"]["arguments"]["parameters"][0]["value"]
        .as_str()
        .unwrap();
    let whole: Value = serde_json::from_str(whole).unwrap();
    assert_eq!(whole["context"]["source"], "nats");
    assert_eq!(whole["context"]["subject"], "example");
    assert_eq!(whole["context"]["type"], "nats");
    let data = base64::engine::general_purpose::STANDARD
        .decode(whole["data"].as_str().unwrap())
        .unwrap();
    let data: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(data["subject"], "foo");
    assert_eq!(data["body"]["file"], "a.csv");
    // Bound through the source's `argo:` alias, its metadata in the data.
    assert_eq!(data["metadata"]["team"], "ml");
}

/// A log trigger next to a Workflow trigger, a `conditionsReset` schedule,
/// and an `inline` trigger source, through `tripline test`.
#[test]
fn log_triggers_resets_and_inline_sources() {
    let dir = tempfile::tempdir().unwrap();
    let sensor = dir.path().join("emoji.yaml");
    std::fs::write(
        &sensor,
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: gitlab-emoji}
spec:
  dependencies:
    - {name: emoji, eventSourceName: gitlab, eventName: group-example}
  triggers:
    - template:
        name: log-it
        log: {intervalSeconds: 10}
    - template:
        name: workflow
        conditionsReset: [{byTime: {cron: "59 23 * * *", timezone: America/Los_Angeles}}]
        argoWorkflow:
          operation: submit
          source:
            inline: |
              apiVersion: argoproj.io/v1alpha1
              kind: Workflow
              metadata: {generateName: emoji-}
              spec: {entrypoint: main, arguments: {parameters: [{name: title}]}, templates: [{name: main, container: {image: busybox}}]}
          parameters:
            - src: {dependencyName: emoji, dataKey: body.object_attributes.title}
              dest: spec.arguments.parameters.0.value
"#,
    )
    .unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"object_kind":"emoji","object_attributes":{"title":"Fix the build"}}"#,
    )
    .unwrap();
    let emoji = [
        "-H",
        "X-Gitlab-Event=Emoji Hook",
        "-H",
        "Content-Type=application/json",
    ];
    let run = tripline_test(&sensor, &event, &emoji, dir.path());
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    let v = run.json;
    let by = |name: &str| {
        v["rendered"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["trigger"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("log-it")["fires"], true);
    assert!(by("log-it").get("object").is_none());
    let wf = &by("workflow")["object"];
    assert_eq!(
        wf["spec"]["arguments"]["parameters"][0]["value"],
        "Fix the build"
    );
    assert_eq!(
        wf["metadata"]["labels"]["events.argoproj.io/trigger"],
        "workflow"
    );
    // Without the title, the Workflow trigger cannot render: exit 2.
    std::fs::write(&event, r#"{"object_kind":"emoji"}"#).unwrap();
    let run = tripline_test(&sensor, &event, &emoji, dir.path());
    assert_eq!(run.code, 2, "{}", run.out);
}

/// `tripline import`: every upstream example converts, the native result
/// validates, and it renders exactly what the Argo sensor renders for the
/// same event; EventSources become sources that validate.
#[test]
fn import_converts_and_behaves_identically() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tripline.yaml"), SOURCES).unwrap();
    let sensors = repo("tests/fixtures/argo-events/sensors");
    for entry in std::fs::read_dir(&sensors).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (code, out, err) = run_cli(&["import", path.to_str().unwrap()], dir.path());
        assert_eq!(code, 0, "{name}: {err}");
        let native = dir.path().join(format!("native-{name}"));
        std::fs::write(&native, &out).unwrap();
        let (code, _, err) = run_cli(
            &["validate", "--sensors", native.to_str().unwrap()],
            dir.path(),
        );
        assert_eq!(
            code, 0,
            "{name}: the import does not validate: {err}\n{out}"
        );
    }
    // Same event, same verdict and object: every Argo example and its
    // import, over real GitHub/GitLab payloads and the oracle payloads of
    // upstream's filter examples, at a fixed time.
    let oracle = dir.path().join("oracle.json");
    std::fs::write(
        &oracle,
        r#"{"a": "b", "c": 10, "d": {"e": false}, "message": "hello", "name": "John Doe", "value": 51, "namespace": "argo", "image": "x:1"}"#,
    )
    .unwrap();
    let events: Vec<(std::path::PathBuf, Vec<&str>)> = vec![
        (
            repo("tests/fixtures/github/push.payload.json"),
            vec!["Content-Type=application/json"],
        ),
        (
            repo("tests/fixtures/github/pull_request.opened.payload.json"),
            vec![
                "Content-Type=application/json",
                "X-GitHub-Event=pull_request",
                "X-GitHub-Delivery=d-1",
            ],
        ),
        (
            repo("tests/fixtures/gitlab/push.json"),
            vec!["Content-Type=application/json", "X-Gitlab-Event=Push Hook"],
        ),
        (oracle.clone(), vec!["Content-Type=application/json"]),
    ];
    let mut names: Vec<String> = std::fs::read_dir(&sensors)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let mut compared = 0;
    let mut time_verdicts = Vec::new();
    // Time-filter examples also at times inside their windows (and out).
    let times = |name: &str| -> Vec<&str> {
        if name.contains("time") {
            vec![
                "2026-11-30T10:00:00Z",
                "2026-11-30T03:00:00Z",
                "2026-11-30T08:30:00Z",
                "2026-11-30T15:00:00Z",
                "2026-11-30T22:30:00Z",
                "2026-11-30T23:59:00Z",
            ]
        } else {
            vec!["2026-11-30T10:00:00Z"]
        }
    };
    for (name, (event, headers), time) in names.iter().flat_map(|n| {
        events
            .iter()
            .flat_map(move |e| times(n).into_iter().map(move |t| (n.as_str(), e, t)))
    }) {
        let render = |sensor: &std::path::Path| {
            let mut args = header_args(headers);
            args.extend(["--time", time]);
            let run = tripline_test(sensor, event, &args, dir.path());
            assert!(!run.json.is_null(), "{name}: {}\n{}", run.out, run.err);
            (run.code, run.json["rendered"].clone())
        };
        let (code_argo, argo_rendered) = render(&argo(name));
        let (code_native, native_rendered) = render(&dir.path().join(format!("native-{name}")));
        assert_eq!(code_argo, code_native, "{name}");
        let strip = |r: &Value| -> Vec<(Value, Value, Value)> {
            r.as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["fires"].clone(),
                        t["object"].clone(),
                        t["error"].is_null().into(),
                    )
                })
                .collect()
        };
        assert_eq!(
            strip(&argo_rendered),
            strip(&native_rendered),
            "{name} on {} at {time}: {argo_rendered:#}\n{native_rendered:#}",
            event.display()
        );
        compared += 1;
        if name.contains("time") {
            time_verdicts.extend(strip(&argo_rendered).into_iter().map(|(fires, _, _)| fires));
        }
    }
    assert_eq!(compared, 41 * 4 + 3 * 4 * 5);
    // The times chosen put events both inside and outside the windows.
    assert!(
        time_verdicts.contains(&Value::Bool(true)),
        "{time_verdicts:?}"
    );
    assert!(
        time_verdicts.contains(&Value::Bool(false)),
        "{time_verdicts:?}"
    );
    // EventSources → sources that validate.
    // All of them in one import: their paths do not clash.
    let sources = repo("tests/fixtures/argo-events/event-sources");
    let mut files: Vec<String> = std::fs::read_dir(&sources)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    let mut args = vec!["import"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run_cli(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    let mut all = String::from("sources:\n");
    for doc in out.split("---\n").filter(|d| !d.trim().is_empty()) {
        let v: Value = serde_yaml_ng::from_str(doc).unwrap();
        for s in v["sources"].as_array().unwrap() {
            all.push_str(&format!("  - {}\n", serde_json::to_string(s).unwrap()));
        }
    }
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    let all = all.replace(
        "/etc/tripline/secrets/",
        &format!("{}/secrets/", dir.path().display()),
    );
    for (name, key) in [("github-access", "secret"), ("gitlab-secret", "token")] {
        std::fs::create_dir_all(dir.path().join("secrets").join(name)).unwrap();
        std::fs::write(dir.path().join("secrets").join(name).join(key), "s").unwrap();
    }
    let config = dir.path().join("imported.yaml");
    std::fs::write(&config, &all).unwrap();
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let out = std::process::Command::new(crate::support::tripline::BIN)
        .args([
            "validate",
            "--config",
            config.to_str().unwrap(),
            "--sensors",
            "empty",
        ])
        .env("GITHUB_EXAMPLE_WEBHOOK_SECRET", "s")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{all}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tripline test --config` shapes the event like its source (a Kafka
/// message here), and `--time` sets the time time filters see.
#[test]
fn test_shapes_events_like_their_source_and_takes_a_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tripline.yaml"),
        "sources: [{type: kafka, name: kafka-example, brokers: k:9092, topics: [jobs], groupId: g}]\n",
    )
    .unwrap();
    let sensor = dir.path().join("s.yaml");
    std::fs::write(
        &sensor,
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: nightly}
spec:
  dependencies:
    - name: job
      eventSourceName: kafka
      eventName: example
      filters:
        data: [{path: topic, type: string, value: ["^jobs$"]}]
        time: {start: "22:00:00", stop: "06:00:00"}
  triggers:
    - template:
        name: run
        k8s:
          operation: create
          source: {resource: {apiVersion: v1, kind: ConfigMap, metadata: {generateName: run-}}}
          parameters:
            - {src: {dependencyName: job, dataKey: body.n}, dest: data.n}
"#,
    )
    .unwrap();
    let event = dir.path().join("e.json");
    std::fs::write(&event, r#"{"n": 7}"#).unwrap();
    let test = |time: &str| tripline_test(&sensor, &event, &["--time", time], dir.path());
    let run = test("2026-11-30T23:30:00Z");
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    assert_eq!(run.json["rendered"][0]["object"]["data"]["n"], "7");
    let run = test("2026-11-30T12:00:00Z");
    assert_eq!(run.code, 1, "outside the time window: {}", run.out);
    assert!(run.out.contains("outside the time window"), "{}", run.out);
}

/// A source's `argo:` block, through `tripline test` with `./tripline.yaml`:
/// the dependency binds to the source its alias names (not `<E>-<N>`), the
/// data carries the block's metadata, and `jsonBody: false` makes the body
/// base64. Without the alias the dependency would be unbound.
#[test]
fn a_source_argo_block_binds_and_shapes_argo_events() {
    let dir = tempfile::tempdir().unwrap();
    let sensor = dir.path().join("s.yaml");
    std::fs::write(
        &sensor,
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: raw}
spec:
  dependencies:
    - name: job
      eventSourceName: kafka
      eventName: example
      filters:
        data: [{path: metadata.team, type: string, value: [ml]}]
  triggers:
    - template:
        name: run
        k8s:
          operation: create
          source: {resource: {apiVersion: v1, kind: ConfigMap, metadata: {generateName: run-}}}
          parameters:
            - {src: {dependencyName: job, dataKey: body}, dest: data.body}
"#,
    )
    .unwrap();
    let event = dir.path().join("e.json");
    std::fs::write(&event, "not json").unwrap();
    let config = |argo: &str| {
        std::fs::write(
            dir.path().join("tripline.yaml"),
            format!("sources: [{{type: kafka, name: jobs, brokers: k:9092, topics: [jobs], groupId: g{argo}}}]\n"),
        )
        .unwrap();
        let run = tripline_test(&sensor, &event, &[], dir.path());
        (run.code, run.out, run.err)
    };
    let (code, out, err) = config(
        ", argo: {eventSourceName: kafka, eventName: example, jsonBody: false, metadata: {team: ml}}",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("no source"), "bound by alias: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rendered"][0]["object"]["data"]["body"], "bm90IGpzb24=");
    // `tripline import` reads ./tripline.yaml the same way: the native
    // dependency names the aliased source.
    let (code, imported, err) = run_cli(&["import", sensor.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(imported.contains("source: jobs"), "{imported}");
    assert!(!imported.contains("no source"), "{imported}");
    // Default `jsonBody: true`: a payload that is not JSON does not satisfy
    // the dependency (Argo drops it at the EventSource); the metadata
    // filter fails too without the block.
    let (code, out, err) = config(", argo: {eventSourceName: kafka, eventName: example}");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("not JSON"), "{out}");
    // No alias: the dependency is taken as an http source `kafka-example`.
    let (_, _, err) = config("");
    assert!(err.contains("no source `kafka-example` declared"), "{err}");
    // A half alias is a config error naming the field.
    let (code, _, err) = config(", argo: {eventName: example}");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sources[0].argo"), "{err}");
}

/// Template-level parameters (upstream's `complete-trigger-parameterization`
/// shape): `dest: name` renames the trigger as objects see it (the
/// `events.argoproj.io/trigger` label), `dest: k8s.source.resource.X` sets
/// `X` before the resource-level parameters run (which win on the same
/// path); a dest tripline cannot honour is a load error naming it.
#[test]
fn template_level_parameters_land_on_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let sensor = dir.path().join("s.yaml");
    let write = |extra: &str| {
        std::fs::write(
            &sensor,
            format!(
                r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {{name: complete}}
spec:
  dependencies:
    - {{name: test-dep, eventSourceName: webhook, eventName: example}}
  triggers:
    - template:
        name: THIS_WILL_BE_REPLACED_BY_NAME_FROM_EVENT
        k8s:
          operation: create
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {{generateName: run-}}
              data: {{image: placeholder, bucket: placeholder}}
          parameters:
            - {{src: {{dependencyName: test-dep, dataKey: body.image}}, dest: data.image}}
      parameters:
        - {{src: {{dependencyName: test-dep, dataKey: body.name}}, dest: name}}
        - {{src: {{dependencyName: test-dep, dataKey: body.bucket}}, dest: k8s.source.resource.data.bucket}}
        - {{src: {{dependencyName: test-dep, value: overridden}}, dest: k8s.source.resource.data.image}}
        - {{src: {{dependencyName: test-dep, dataKey: body.port}}, dest: k8s.source.resource.data.bucket, operation: append}}
{extra}"#
            ),
        )
        .unwrap()
    };
    write("");
    let event = dir.path().join("e.json");
    std::fs::write(
        &event,
        r#"{"name": "retrain", "bucket": "data", "port": ":9000", "image": "trainer:2"}"#,
    )
    .unwrap();
    let json_body = ["-H", "Content-Type=application/json"];
    let run = tripline_test(&sensor, &event, &json_body, dir.path());
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    let obj = &run.json["rendered"][0]["object"];
    assert_eq!(
        obj["metadata"]["labels"]["events.argoproj.io/trigger"], "retrain",
        "{obj}"
    );
    assert_eq!(obj["data"]["bucket"], "data:9000", "{obj}");
    // The resource-level parameter runs last and wins.
    assert_eq!(obj["data"]["image"], "trainer:2", "{obj}");
    // Its import renders the same object.
    let (code, imported, err) = run_cli(&["import", sensor.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    let native = dir.path().join("native.yaml");
    std::fs::write(&native, &imported).unwrap();
    let run = tripline_test(&native, &event, &json_body, dir.path());
    assert_eq!(run.code, 0, "{imported}\n{}\n{}", run.out, run.err);
    let native_obj = &run.json["rendered"][0]["object"];
    assert_eq!(native_obj["data"], obj["data"], "{imported}");
    assert_eq!(
        native_obj["metadata"]["labels"]["events.argoproj.io/trigger"], "retrain",
        "{imported}"
    );

    write("        - {src: {dependencyName: test-dep, value: x}, dest: k8s.operation}\n");
    let run = tripline_test(&sensor, &event, &json_body, dir.path());
    let (code, err) = (run.code, run.err);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("spec.triggers[0].parameters[4].dest: `k8s.operation`: template-level parameters may set `name` or `k8s.source.resource.…`"),
        "{err}"
    );
}

/// Trigger sources read when the trigger fires: `submit-from` a CronWorkflow
/// (its `spec.workflowSpec` submitted, as `argo submit --from`), a
/// `configmap` key, and a `file` that did not exist at load — all through
/// the real kube client against the API double; `tripline import` keeps
/// them as `workflow: {argo: …}` and its sensor creates the same objects.
/// With the outbox as the target the cluster-read triggers are
/// dead-lettered, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_sources_are_read_when_the_trigger_fires() {
    let dir = tempfile::tempdir().unwrap();
    let wf_spec = serde_json::json!({
        "entrypoint": "main",
        "templates": [{"name": "main", "container": {"image": "alpine:3.20"}}]
    });
    let seeded = || async {
        let api = KubeApi::start().await;
        api.put(
            "cronworkflows",
            serde_json::json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow",
                "metadata": {"name": "nightly", "namespace": "default"},
                "spec": {"schedule": "0 1 * * *", "workflowSpec": wf_spec}}),
        );
        let from_cm = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: from-cm-}\nspec:\n  entrypoint: main\n  templates: [{name: main, container: {image: 'alpine:3.20'}}]\n";
        api.put(
            "configmaps",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "workflows", "namespace": "default"},
                "data": {"wf.yaml": from_cm}}),
        );
        api
    };
    let later = dir.path().join("later.yaml");
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {{name: fetching}}
spec:
  dependencies: [{{name: d, eventSourceName: webhook, eventName: example}}]
  triggers:
    - template:
        name: cron
        argoWorkflow:
          operation: submit-from
          source: {{resource: {{apiVersion: argoproj.io/v1alpha1, kind: CronWorkflow, metadata: {{name: nightly}}}}}}
    - template:
        name: cm
        argoWorkflow:
          operation: submit
          source: {{configmap: {{name: workflows, key: wf.yaml}}}}
          parameters:
            - {{src: {{dependencyName: d, dataKey: body.image}}, dest: spec.templates.0.container.image}}
    - template:
        name: file
        k8s:
          operation: create
          source: {{file: {{path: {}}}}}
"#,
        later.display()
    );
    let config = |submit: &str| {
        format!("sensors: sensors/\ndeadLetter: dead-letter.jsonl\n{submit}\nsources: [{{type: http, name: webhook-example, path: /example}}]\n")
    };
    let kube = |api: &KubeApi| {
        let kubeconfig = api.write_kubeconfig(dir.path());
        config(&format!(
            "submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}",
            kubeconfig.display()
        ))
    };
    let post = |url: String| async move {
        reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .body(r#"{"image": "trainer:2"}"#)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let api = seeded().await;
    let t = Tripline::start(&kube(&api), &[("fetching.yaml", &sensor)], &[]).await;
    std::fs::write(
        &later,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: late-}\ndata: {k: v}\n",
    )
    .unwrap();
    let reply = post(t.url("/example")).await;
    let statuses: Vec<&Value> = reply["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["status"])
        .collect();
    assert_eq!(statuses, ["created", "created", "created"], "{reply}");
    drop(t);
    let created = |api: &KubeApi, t: &str| {
        api.objects("workflows")
            .into_iter()
            .chain(api.objects("configmaps"))
            .find(|w| w["metadata"]["labels"]["events.argoproj.io/trigger"] == t)
            .unwrap_or_else(|| panic!("no object of trigger {t}"))
    };
    let cron = created(&api, "cron");
    assert_eq!(
        cron["metadata"]["labels"]["workflows.argoproj.io/cron-workflow"],
        "nightly"
    );
    assert_eq!(cron["spec"], wf_spec);
    assert!(cron["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("nightly-"));
    let cm = created(&api, "cm");
    assert_eq!(
        cm["spec"]["templates"][0]["container"]["image"],
        "trainer:2"
    );
    assert_eq!(created(&api, "file")["data"]["k"], "v");

    // Its import: the same objects, by name and content.
    let argo_file = dir.path().join("argo.yaml");
    std::fs::write(&argo_file, &sensor).unwrap();
    let (code, imported, err) = run_cli(&["import", argo_file.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(imported.contains("argo:"), "{imported}");
    let api2 = seeded().await;
    let t = Tripline::start(&kube(&api2), &[("imported.yaml", &imported)], &[]).await;
    let reply = post(t.url("/example")).await;
    assert_eq!(reply["matched"].as_array().unwrap().len(), 3, "{reply}");
    drop(t);
    for trigger in ["cron", "cm", "file"] {
        let (a, b) = (created(&api, trigger), created(&api2, trigger));
        assert_eq!(a["metadata"]["name"], b["metadata"]["name"], "{imported}");
        assert_eq!(a["spec"], b["spec"], "{imported}");
        assert_eq!(a["data"], b["data"], "{imported}");
    }

    // The outbox has no cluster to read: dead letters that say so; the
    // file trigger still works.
    let t = Tripline::start(&config(""), &[("fetching.yaml", &sensor)], &[]).await;
    let reply = post(t.url("/example")).await;
    let by = |name: &str| {
        reply["matched"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["trigger"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by("file")["status"], "created", "{reply}");
    assert_eq!(by("cron")["status"], "invalid", "{reply}");
    assert!(
        by("cm")["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap v1 `workflows` is read from a cluster"),
        "{reply}"
    );
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 2, "{dl:#?}");
}

/// `tripline import` writes native filters where they are exact (anchored
/// regexes and safe numeric comparisons on nested body keys, paths no Argo
/// data has; beside a filterless `argo:` binding when a parameter reads the
/// dependency), keeps `argo:` filters elsewhere (upstream's
/// `filter-with-data-simple-1`: an unanchored regex on a top-level body key),
/// and the native import fires and renders exactly as the Argo sensor does.
#[test]
fn import_writes_native_filters_where_exact() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tripline.yaml"), SOURCES).unwrap();
    let trigger = r#"
  triggers:
    - template:
        name: t
        k8s:
          operation: create
          source:
            resource: {apiVersion: v1, kind: ConfigMap, metadata: {generateName: x-}}
"#;
    let sensors = [
        (
            "anchored.yaml",
            r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: anchored}
spec:
  dependencies:
    - name: pr
      eventSourceName: webhook
      eventName: example
      filters:
        data:
          - {path: body.pull_request.base.ref, type: string, value: ["^(main|master)$"]}
          - {path: body.pull_request.number, type: number, comparator: ">=", value: ["2"]}
"#,
        ),
        (
            "bucket.yaml",
            r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: bucket}
spec:
  dependencies:
    - name: b
      eventSourceName: webhook
      eventName: example
      filters:
        data:
          - {path: bucket, type: string, value: [argo-workflow-input]}
"#,
        ),
        (
            "read.yaml",
            r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: read}
spec:
  dependencies:
    - name: pr
      eventSourceName: webhook
      eventName: example
      filters:
        data:
          - {path: body.pull_request.base.ref, type: string, value: ["^(main|master)$"]}
"#,
        ),
    ];
    // A parameter reads the dependency (the Argo way): the binding stays.
    let reading = format!(
        "{trigger}          parameters:\n            - {{src: {{dependencyName: pr, dataKey: body.pull_request.number}}, dest: data.number}}\n"
    );
    let mut files = Vec::new();
    for (name, body) in sensors {
        let argo_file = dir.path().join(name);
        let trigger = if name == "read.yaml" {
            &reading
        } else {
            trigger
        };
        std::fs::write(&argo_file, format!("{body}{trigger}")).unwrap();
        let (code, out, err) = run_cli(&["import", argo_file.to_str().unwrap()], dir.path());
        assert_eq!(code, 0, "{name}: {err}");
        let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
        let dep = &doc["spec"]["dependencies"][0];
        if name == "read.yaml" {
            assert_eq!(
                dep["argo"],
                serde_json::json!({"eventSourceName": "webhook", "eventName": "example"}),
                "{out}"
            );
        } else {
            assert!(dep.get("argo").is_none(), "{name}: {out}");
        }
        let native_file = dir.path().join(format!("native-{name}"));
        std::fs::write(&native_file, &out).unwrap();
        files.push((argo_file, native_file, dep["filters"].clone(), err));
    }
    assert_eq!(
        files[0].2,
        serde_json::json!({"all": [
            {"path": "body.pull_request.base.ref", "matches": "^(main|master)$"},
            {"path": "body.pull_request.number", "gte": 2.0},
        ]})
    );
    assert_eq!(files[1].2, serde_json::json!({"any": []}));
    assert_eq!(
        files[2].2,
        serde_json::json!({"path": "body.pull_request.base.ref", "matches": "^(main|master)$"})
    );
    assert!(
        files[1].3.contains("`bucket` is in no Argo event's data"),
        "{}",
        files[1].3
    );
    // Upstream's simple-1 keeps its Argo filters.
    let (code, out, err) = run_cli(
        &[
            "import",
            argo("filter-with-data-simple-1.yaml").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
    assert!(doc["spec"]["dependencies"][0]["argo"]["filters"].is_object());
    // Same verdicts and objects as the Argo sensor.
    let events: Vec<(std::path::PathBuf, Vec<&str>)> = vec![
        (
            repo("tests/fixtures/github/push.payload.json"),
            vec!["Content-Type=application/json", "X-GitHub-Event=push"],
        ),
        (
            repo("tests/fixtures/github/pull_request.opened.payload.json"),
            vec![
                "Content-Type=application/json",
                "X-GitHub-Event=pull_request",
            ],
        ),
        (
            repo("tests/fixtures/gitlab/push.json"),
            vec!["Content-Type=application/json", "X-Gitlab-Event=Push Hook"],
        ),
    ];
    let mut fired = 0;
    for (argo_file, native_file, _, _) in &files {
        for (event, headers) in &events {
            let render = |sensor: &std::path::Path| {
                let run = tripline_test(sensor, event, &header_args(headers), dir.path());
                assert!(
                    !run.json.is_null(),
                    "{}: {}\n{}",
                    sensor.display(),
                    run.out,
                    run.err
                );
                let r = &run.json["rendered"][0];
                (run.code, r["fires"].clone(), r["object"].clone())
            };
            let argo_said = render(argo_file);
            assert_eq!(
                argo_said,
                render(native_file),
                "{} on {}",
                argo_file.display(),
                event.display()
            );
            fired += usize::from(argo_said.1 == true);
        }
    }
    // The pull request (JSON) passes the anchored filters; nothing else does.
    assert_eq!(fired, 2);
}

/// A `url` trigger source is fetched when the trigger fires (upstream's
/// `url-sensor`): a 200 is the resource, parameters apply to it; any other
/// status is a dead letter naming the URL and the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_trigger_sources_are_fetched_when_the_trigger_fires() {
    use axum::routing::get;
    let wf = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: from-url-}\nspec:\n  entrypoint: main\n  arguments: {parameters: [{name: message}]}\n  templates: [{name: main, container: {image: 'alpine:3.20'}}]\n";
    let app = axum::Router::new().route("/wf.yaml", get(move || async move { wf }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sensor = |path: &str| {
        format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {{name: from-url}}
spec:
  dependencies: [{{name: d, eventSourceName: webhook, eventName: example}}]
  triggers:
    - template:
        name: fetched
        argoWorkflow:
          operation: submit
          source: {{url: {{path: "http://{addr}{path}", verifycert: false}}}}
          parameters:
            - {{src: {{dependencyName: d, dataKey: body.message}}, dest: spec.arguments.parameters.0.value}}
"#
        )
    };
    let config = "sensors: sensors/\ndeadLetter: dead-letter.jsonl\nsources: [{type: http, name: webhook-example, path: /example}]\n";
    let post = |url: String| async move {
        reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .body(r#"{"message": "hello"}"#)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let t = Tripline::start(config, &[("s.yaml", &sensor("/wf.yaml"))], &[]).await;
    let reply = post(t.url("/example")).await;
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");
    let (_, wf) = t.outbox().remove(0);
    assert_eq!(wf["spec"]["arguments"]["parameters"][0]["value"], "hello");
    assert_eq!(
        wf["metadata"]["labels"]["events.argoproj.io/trigger"],
        "fetched"
    );
    assert!(wf["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("from-url-"));
    drop(t);

    let t = Tripline::start(config, &[("s.yaml", &sensor("/missing.yaml"))], &[]).await;
    let reply = post(t.url("/example")).await;
    assert_eq!(reply["matched"][0]["status"], "invalid", "{reply}");
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 1, "{dl:#?}");
    let error = dl[0]["error"].as_str().unwrap();
    assert!(
        error.contains("/missing.yaml") && error.contains("404"),
        "{error}"
    );
}

/// `url` over HTTPS from a server whose certificate no public CA signed
/// (`openssl s_server -WWW`): with `verifyCert: false` the resource is
/// fetched and submitted; with verification (the default) the TLS
/// handshake fails, nothing is created, and the delivery is retried, not
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_sources_over_https_verify_the_certificate_unless_told_not_to() {
    let certs = tempfile::tempdir().unwrap();
    crate::nats::make_certs(certs.path());
    std::fs::write(
        certs.path().join("wf.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: tls-}\ndata: {from: https}\n",
    )
    .unwrap();
    let port = crate::support::brokers::free_port();
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-WWW",
            "-cert",
            "server.pem",
            "-key",
            "server.key",
            "-accept",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(certs.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sensor = |verify: &str| {
        format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {{name: tls}}
spec:
  dependencies: [{{name: d, eventSourceName: webhook, eventName: example}}]
  triggers:
    - template:
        name: fetched
        k8s:
          operation: create
          source: {{url: {{path: "https://127.0.0.1:{port}/wf.yaml"{verify}}}}}
"#
        )
    };
    let config = "sensors: sensors/\ndeadLetter: dead-letter.jsonl\nintake: {replyDeadline: 3s}\nsources: [{type: http, name: webhook-example, path: /example}]\n";
    let post = |url: String| async move {
        let r = reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .body(r#"{"message": "hello"}"#)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };

    let t = Tripline::start(config, &[("s.yaml", &sensor(", verifyCert: false"))], &[]).await;
    let (code, reply) = post(t.url("/example")).await;
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains("\"created\""), "{reply}");
    let (_, cm) = t.outbox().remove(0);
    assert_eq!(cm["data"]["from"], "https");
    drop(t);

    let t = Tripline::start(config, &[("s.yaml", &sensor(""))], &[]).await;
    let (code, reply) = post(t.url("/example")).await;
    assert_ne!(
        code, 200,
        "an unverifiable certificate must not pass: {reply}"
    );
    assert!(t.outbox().is_empty());
    assert!(t.dead_letters().is_empty(), "retried, not dead-lettered");
    let log = t.log();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    drop(t);
    let _ = server.kill();
    let _ = server.wait();
}
