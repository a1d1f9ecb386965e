//! The status page on the admin listener, driven in a real headless
//! Chromium (Debian's `chromium`, installed by `scripts/install-deps.sh`):
//! after a matching and a non-matching delivery the page shows both events,
//! the verdict, the created object's name and why the other matched
//! nothing; the paste-an-event form explains an event without submitting it.

use std::path::Path;
use std::process::Command;

use crate::support::tripline::{fixture, post, repo, Tripline};

const CONFIG: &str = "
sensors: sensors/
submit: {type: outbox, dir: outbox/}
sources:
  - {type: http, name: events}
";

/// Chromium headless on `url`: `--dump-dom` (the DOM after the page
/// loaded) or a PNG at `screenshot`.
fn chromium(url: &str, profile: &Path, screenshot: Option<&Path>) -> String {
    let bin = ["chromium", "/usr/bin/chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "Chromium is not installed: run scripts/install-deps.sh (Debian package `chromium`)",
        );
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(p) => {
            cmd.arg("--window-size=1280,1100")
                .arg(format!("--screenshot={}", p.display()));
        }
        None => {
            cmd.arg("--dump-dom");
        }
    }
    let out = cmd.arg(url).output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_events_verdicts_and_objects_in_a_real_browser() {
    let sensor = std::fs::read_to_string(repo("sensors/on-push.yaml")).unwrap();
    let t = Tripline::start(CONFIG, &[("on-push.yaml", &sensor)], &[]).await;
    let push_headers = [
        ("X-GitHub-Event", "push"),
        ("Content-Type", "application/json"),
    ];
    let (_, push) = post(
        &t,
        "/events/events",
        &push_headers,
        fixture("github/push.payload.json"),
    )
    .await;
    let object = push["matched"][0]["name"].as_str().unwrap().to_string();
    let issues_headers = [
        ("X-GitHub-Event", "issues"),
        ("Content-Type", "application/json"),
    ];
    let (_, miss) = post(
        &t,
        "/events/events",
        &issues_headers,
        br#"{"action": "opened"}"#.to_vec(),
    )
    .await;
    assert!(miss["matched"].as_array().unwrap().is_empty(), "{miss}");

    let profile = tempfile::tempdir().unwrap();
    let url = t.url("/status");
    let dom = tokio::task::spawn_blocking({
        let (url, p) = (url.clone(), profile.path().to_path_buf());
        move || chromium(&url, &p, None)
    })
    .await
    .unwrap();
    // Both events, newest first, with their verdicts.
    let events = &dom[dom.find("id=\"events\"").expect("events table")..];
    let (push_id, miss_id) = (
        push["event_id"].as_str().unwrap(),
        miss["event_id"].as_str().unwrap(),
    );
    let (at_push, at_miss) = (
        events.find(push_id).expect("the push is listed"),
        events.find(miss_id).expect("the miss is listed"),
    );
    assert!(at_miss < at_push, "newest first");
    assert!(events.contains("on-push/build"), "{events}");
    assert!(events.contains("created"), "{events}");
    assert!(events.contains(&object), "the object name: {events}");
    assert!(events.contains("matched nothing"), "{events}");
    assert!(
        events.contains("on-push/push"),
        "why not, per dependency: {events}"
    );
    assert!(dom.contains("id=\"sources\""), "{dom}");
    assert!(dom.contains("<td>events</td>"), "the source row: {dom}");

    // The form explains a pasted event and submits nothing.
    let before = t.outbox().len();
    let explain = format!(
        "{}?source=events&headers=X-GitHub-Event%3A%20push%0AContent-Type%3A%20application%2Fjson&body={}",
        t.url("/status/explain"),
        url_encode(&String::from_utf8(fixture("github/push.payload.json")).unwrap())
    );
    let tree = tokio::task::spawn_blocking({
        let p = profile.path().to_path_buf();
        move || chromium(&explain, &p, None)
    })
    .await
    .unwrap();
    assert!(tree.contains("id=\"verdict\""), "{tree}");
    assert!(tree.contains(">fires<"), "{tree}");
    assert!(tree.contains("✓"), "the filter tree: {tree}");
    assert!(tree.contains("would submit"), "{tree}");
    assert_eq!(t.outbox().len(), before, "explaining submits nothing");

    // A screenshot, as kept in docs/status.png.
    let png = profile.path().join("status.png");
    tokio::task::spawn_blocking({
        let (p, png) = (profile.path().to_path_buf(), png.clone());
        move || chromium(&url, &p, Some(&png))
    })
    .await
    .unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{}",
        bytes.len()
    );
    if let Ok(dest) = std::env::var("TRIPLINE_STATUS_SCREENSHOT") {
        std::fs::copy(&png, dest).unwrap();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
