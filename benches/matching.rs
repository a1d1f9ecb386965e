//! Match + render cost per event as the number of sensors grows.
//!
//! Sensors are spread over 10 sources; the event comes from one of them and
//! matches exactly one sensor. `match+render` is what the engine does per
//! event before submitting; `other-source` shows that sensors on other
//! sources cost nothing (matching is indexed by source).
//!
//! Allocations per event are counted by a wrapper around the system
//! allocator and printed before the timings (`allocs/event`).
//!
//! `kafka/...`: a Kafka message nothing wants, settled as the consumer
//! thread does (envelope read in part, match, the engine's accounting).
//!
//! Run: `cargo bench --bench matching`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tripline::event::Event;
use tripline::sensor::{load, SensorSet};

#[path = "shared/kafka.rs"]
mod kafka_workload;

const SOURCES: usize = 10;

/// Counts allocations (and reallocations) made through the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per call of `f`, printed as `allocs/event`.
fn allocations(name: &str, mut f: impl FnMut()) {
    const CALLS: u64 = 1000;
    f();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..CALLS {
        f();
    }
    let per = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / CALLS as f64;
    println!("allocs/event {name:<44} {per:>8.1}");
}

fn sensors(n: usize) -> (tempfile::TempDir, SensorSet) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            r#"---
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: s{i}}}
spec:
  dependencies:
    - name: push
      source: src-{src}
      filters:
        all:
          - {{path: headers.X-GitHub-Event, equals: push}}
          - {{path: body.ref, equals: refs/heads/branch-{i}}}
          - {{path: body.repository.full_name, prefix: Codertocat/}}
  triggers:
    - name: build
      workflow: {{workflowTemplateRef: ci}}
      parameters:
        - {{name: revision, value: "{{{{body.after}}}}"}}
        - {{name: repo, value: "{{{{lower body.repository.full_name}}}}"}}
"#,
            src = i % SOURCES
        ));
    }
    let file = dir.path().join("sensors.yaml");
    std::fs::write(&file, text).unwrap();
    let names: tripline::sensor::SourceCatalog = (0..SOURCES)
        .map(|s| format!("src-{s}"))
        .chain(["elsewhere".to_string()])
        .collect();
    let set = load(&[file], &names).unwrap();
    (dir, set)
}

fn event(source: &str) -> Event {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github/push.payload.json"
    ))
    .unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    body["ref"] = "refs/heads/branch-0".into();
    let mut e = Event::new(source, &raw, body);
    e.headers.insert("X-GitHub-Event", "push");
    e
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("per-event");
    for n in [10, 1_000, 10_000] {
        let (_dir, set) = sensors(n);
        let hit = event("src-0");
        assert_eq!(
            set.preview(&hit, Some("default")).len(),
            1,
            "exactly one sensor matches"
        );
        allocations(&format!("per-event/match+render/{n}"), || {
            std::hint::black_box(set.preview(&hit, Some("default")));
        });
        group.bench_with_input(BenchmarkId::new("match+render", n), &n, |b, _| {
            b.iter(|| set.preview(&hit, Some("default")))
        });
        let miss = event("elsewhere");
        group.bench_with_input(BenchmarkId::new("other-source", n), &n, |b, _| {
            b.iter(|| set.match_event(&miss))
        });
    }
    group.finish();

    // A CEL filter: the activation (the event as CEL values) is built once
    // per event; the standard environment once per thread.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cel.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: cel}
spec:
  dependencies:
    - name: push
      source: src-0
      filters: {expr: "body.commits.exists(c, c.modified.exists(f, f.startsWith('models/')))"}
  triggers:
    - {name: t, workflow: {workflowTemplateRef: x}}
"#,
    )
    .unwrap();
    let set = load(&[file], &["src-0"].into_iter().collect()).unwrap();
    let e = event("src-0");
    allocations("cel-filter/match", || {
        std::hint::black_box(set.match_event(&e));
    });
    c.bench_function("cel-filter/match", |b| b.iter(|| set.match_event(&e)));

    // The same filter and parameters as one native sensor above, written as
    // an Argo Events Sensor: the cost of upstream's event shape and rules.
    let file = dir.path().join("pair.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: native}
spec:
  dependencies:
    - name: push
      source: github-example
      filters:
        all:
          - {path: headers.X-GitHub-Event, equals: push}
          - {path: body.ref, equals: refs/heads/branch-0}
          - {path: body.repository.full_name, prefix: Codertocat/}
  triggers:
    - name: build
      workflow: {workflowTemplateRef: ci}
      parameters:
        - {name: revision, value: "{{body.after}}"}
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: argo}
spec:
  dependencies:
    - name: push
      eventSourceName: github
      eventName: example
      filters:
        data:
          - {path: headers.X-Github-Event, type: string, value: ["push"]}
          - {path: body.ref, type: string, value: ["^refs/heads/branch-0$"]}
          - {path: body.repository.full_name, type: string, value: ["^Codertocat/"]}
  triggers:
    - template:
        name: build
        argoWorkflow:
          operation: submit
          source: {resource: {apiVersion: argoproj.io/v1alpha1, kind: Workflow, metadata: {generateName: build-}, spec: {workflowTemplateRef: {name: ci}, arguments: {parameters: [{name: revision}]}}}}
          parameters:
            - {src: {dependencyName: push, dataKey: body.after}, dest: spec.arguments.parameters.0.value}
"#,
    )
    .unwrap();
    let native = load(
        std::slice::from_ref(&file),
        &["github-example"].into_iter().collect(),
    )
    .unwrap();
    let e = event("github-example");
    let rendered = native.preview(&e, Some("default"));
    assert_eq!(rendered.len(), 2, "both match: {rendered:?}");
    assert!(rendered.iter().all(|r| r.object.is_some()), "{rendered:?}");
    let (native_only, argo_only) = {
        let text = std::fs::read_to_string(&file).unwrap();
        let (n, a) = text.split_once("\n---\n").unwrap();
        let (fn_, fa) = (dir.path().join("n.yaml"), dir.path().join("a.yaml"));
        std::fs::write(&fn_, n).unwrap();
        std::fs::write(&fa, a).unwrap();
        let names: tripline::sensor::SourceCatalog = ["github-example"].into_iter().collect();
        (load(&[fn_], &names).unwrap(), load(&[fa], &names).unwrap())
    };
    allocations("argo-vs-native/native match+render", || {
        std::hint::black_box(native_only.preview(&e, Some("default")));
    });
    allocations("argo-vs-native/argo match+render", || {
        std::hint::black_box(argo_only.preview(&e, Some("default")));
    });
    c.bench_function("argo-vs-native/native match+render", |b| {
        b.iter(|| native_only.preview(&e, Some("default")))
    });
    c.bench_function("argo-vs-native/argo match+render", |b| {
        b.iter(|| argo_only.preview(&e, Some("default")))
    });
    // The same dependency as a Lua script filter: a fresh sandboxed Lua
    // state per evaluation (as upstream), most of the cost.
    let script = dir.path().join("script.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let argo_text = text.split_once("\n---\n").unwrap().1;
    let start = argo_text.find("      filters:").unwrap();
    let end = argo_text.find("  triggers:").unwrap();
    let with_script = format!(
        "{}      filters:\n        script: |\n          return event.headers[\"X-Github-Event\"][1] == \"push\" and event.body.ref == \"refs/heads/branch-0\"\n{}",
        &argo_text[..start],
        &argo_text[end..]
    );
    std::fs::write(&script, with_script).unwrap();
    let names: tripline::sensor::SourceCatalog = ["github-example"].into_iter().collect();
    let script_only = load(&[script], &names).unwrap();
    assert!(
        script_only.preview(&e, Some("default"))[0].object.is_some(),
        "the script filter matches"
    );
    c.bench_function("argo-vs-native/argo lua-script match+render", |b| {
        b.iter(|| script_only.preview(&e, Some("default")))
    });
}

/// A Kafka message nothing wants, as the consumer thread settles it: the
/// envelope built with only what the sensors read, matched, and counted by
/// the engine (`Process::settle_unmatched_built`) — everything the Kafka
/// no-match path does per message but librdkafka's poll. The message and
/// sensor are the Kafka throughput bench's (`shared/kafka.rs`). Without the broker's noise, this
/// is the figure to watch when trimming that path — tripline's part of it:
/// the message is an `OwnedMessage`, so librdkafka's own costs (such as
/// parsing headers out of a `BorrowedMessage` on each `headers()` call) are
/// not in it.
fn kafka_no_match(c: &mut Criterion) {
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;
    use std::sync::Arc;
    use tripline::engine::Engine;
    use tripline::sources::kafka::envelope::to_event;
    use tripline::submit::{dead_letter::DeadLetter, outbox::Outbox};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sensor.yaml");
    std::fs::write(&file, kafka_workload::sensor_matching_nothing()).unwrap();
    let names: tripline::sensor::SourceCatalog = ["queue"].into_iter().collect();
    let set = load(&[file], &names).unwrap();
    let outbox = Outbox::new(&dir.path().join("outbox"), "default").unwrap();
    let engine = Engine::new(
        set,
        Arc::new(outbox),
        DeadLetter::new(&dir.path().join("dead-letter.jsonl")),
    );
    // As `serve` does for broker sources: unmatched events are explained
    // now and then, not each.
    engine.explain_sampled(["queue".to_string()]);
    let m = OwnedMessage::new(
        Some(kafka_workload::message(42).into_bytes()),
        None,
        "jobs".into(),
        Timestamp::CreateTime(1_764_000_000_000),
        1,
        42,
        None,
    );
    // The consumer thread reads the clock once per batch of 64: not here.
    let taken = std::time::Instant::now();
    let settle = || {
        let settled = engine.settle_unmatched_built("queue", taken, &mut |reads| {
            Some(to_event("queue", &m, reads))
        });
        assert!(settled, "nothing matches: settled");
    };
    allocations("kafka/no-match settle (read in part)", settle);
    allocations("kafka/envelope whole", || {
        std::hint::black_box(to_event("queue", &m, None));
    });
    c.bench_function("kafka/no-match settle (read in part)", |b| b.iter(settle));
    c.bench_function("kafka/envelope whole", |b| {
        b.iter(|| to_event("queue", &m, None))
    });
}

criterion_group!(benches, bench, kafka_no_match);
criterion_main!(benches);
