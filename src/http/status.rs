//! The status page on the admin listener: `GET /status` shows each source's
//! health and rate, the last events with their verdict (which triggers
//! fired and the objects they created, or why nothing matched), the latest
//! dead letters and the correlations waiting for partners, with a form to
//! paste an event; `GET /status/explain` shows that event's filter tree and
//! what it would submit (submits nothing). Server-rendered HTML, no script,
//! no external asset: it works offline and in any browser.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::engine::Engine;
use crate::readiness::Readiness;

/// Dead letters shown.
const DEAD_LETTERS: usize = 20;

pub fn routes(engine: Arc<Engine>, readiness: Arc<Readiness>) -> Router {
    let page_engine = engine.clone();
    Router::new()
        .route(
            "/status",
            get(move || async move { Html(page(&page_engine, &readiness)) }),
        )
        .route(
            "/status/explain",
            get(
                move |Query(q): Query<BTreeMap<String, String>>| async move {
                    Html(explain_page(&engine, &q))
                },
            ),
        )
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.ok{color:#17702a}.bad{color:#b3261e}.muted{color:#777}\
code,pre{font-family:ui-monospace,monospace;font-size:12px}pre{background:#f7f7f7;padding:.6em;overflow:auto}\
textarea{width:100%;font-family:ui-monospace,monospace}";

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    )
}

fn page(engine: &Engine, readiness: &Readiness) -> String {
    let mut h = head("tripline status");
    let (ready, detail) = readiness.report();
    let _ = write!(
        h,
        "<h1>tripline <span class={}>{}</span></h1><p class=muted>Refresh to update. <a href=/metrics>/metrics</a> · <a href=/readyz>/readyz</a></p>",
        if ready { "ok" } else { "bad" },
        if ready { "ready" } else { "not ready" }
    );

    // Sources: health and rates.
    let rates = engine.recent.rates();
    h.push_str("<h2>Sources</h2><table id=sources><tr><th>source</th><th>health</th><th>detail</th><th>events/min (5 min)</th></tr>");
    if let Value::Object(map) = &detail {
        for (name, d) in map {
            let ok = d["ready"] == true;
            let rate = rates.get(name).copied().unwrap_or(0.0);
            let _ = write!(
                h,
                "<tr><td>{}</td><td class={}>{}</td><td>{}</td><td>{rate:.1}</td></tr>",
                esc(name),
                if ok { "ok" } else { "bad" },
                if ok { "ready" } else { "NOT READY" },
                esc(d["detail"].as_str().unwrap_or_default()),
            );
        }
    }
    h.push_str("</table>");

    // The last events and their verdicts.
    let events = engine.recent.events();
    let _ = write!(
        h,
        "<h2>Last events</h2><table id=events><tr><th>processed</th><th>source</th><th>type</th><th>event</th><th>verdict</th></tr>"
    );
    if events.is_empty() {
        h.push_str("<tr><td colspan=5 class=muted>none yet</td></tr>");
    }
    for e in &events {
        let mut verdict = String::new();
        for t in &e.outcome.matched {
            let status = serde_json::to_value(t.status).unwrap_or_default();
            let status = status.as_str().unwrap_or_default();
            let good = matches!(status, "created" | "existing" | "waiting" | "logged");
            let _ = write!(
                verdict,
                "<div><b>{}/{}</b> <span class={}>{}</span>",
                esc(&t.sensor),
                esc(&t.trigger),
                if good { "ok" } else { "bad" },
                esc(status)
            );
            if let Some(n) = &t.name {
                let _ = write!(verdict, " <code class=object>{}</code>", esc(n));
            }
            if let Some(m) = &t.message {
                let _ = write!(verdict, " <span class=muted>{}</span>", esc(m));
            }
            verdict.push_str("</div>");
        }
        if e.outcome.matched.is_empty() {
            verdict.push_str("<div class=muted>matched nothing</div>");
            for m in &e.outcome.why_not {
                let _ = write!(
                    verdict,
                    "<div>{}/{}: {}</div>",
                    esc(&m.sensor),
                    esc(&m.dependency),
                    esc(&m.reason)
                );
            }
        }
        let _ =
            write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{verdict}</td></tr>",
            esc(&crate::event::rfc3339_from_unix_millis(e.at_ms)),
            esc(&e.source),
            if e.kind.is_empty() { "–".to_string() } else { esc(&e.kind) },
            esc(&e.outcome.event_id)
        );
    }
    h.push_str("</table>");

    // Dead letters.
    let dead = engine.dead_letters(DEAD_LETTERS);
    let _ = write!(
        h,
        "<h2>Dead letters</h2><table id=dead-letters><tr><th>time</th><th>sensor/trigger or source</th><th>error</th></tr>"
    );
    if dead.is_empty() {
        h.push_str("<tr><td colspan=3 class=muted>none</td></tr>");
    }
    for d in dead.iter().rev() {
        let what = match d["sensor"].as_str() {
            Some(s) if !s.is_empty() => {
                format!("{s}/{}", d["trigger"].as_str().unwrap_or_default())
            }
            _ => d["source"].as_str().unwrap_or_default().to_string(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(d["time"].as_str().unwrap_or_default()),
            esc(&what),
            esc(d["error"].as_str().unwrap_or_default())
        );
    }
    h.push_str("</table>");

    // Correlations waiting.
    let waiting = engine.waiting();
    h.push_str("<h2>Pending correlations</h2><table id=correlations><tr><th>sensor</th><th>trigger</th><th>events waiting for partners</th></tr>");
    if waiting.iter().all(|(_, _, n)| *n == 0) {
        h.push_str("<tr><td colspan=3 class=muted>none</td></tr>");
    }
    for (s, t, n) in waiting.iter().filter(|(_, _, n)| *n > 0) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
            esc(s),
            esc(t)
        );
    }
    h.push_str("</table>");

    // Paste an event.
    h.push_str("<h2>Try an event</h2><form id=explain method=get action=/status/explain><p><label>source <select name=source>");
    for name in engine.source_names() {
        let _ = write!(h, "<option>{}</option>", esc(&name));
    }
    h.push_str("</select></label></p><p><label>headers, one <code>Name: value</code> per line<textarea name=headers rows=3>Content-Type: application/json</textarea></label></p><p><label>body<textarea name=body rows=8>{}</textarea></label></p><p><button type=submit>Explain</button> <span class=muted>matches and renders; submits nothing</span></p></form>");
    h.push_str("</body></html>");
    h
}

fn explain_page(engine: &Engine, q: &BTreeMap<String, String>) -> String {
    let source = q.get("source").map(String::as_str).unwrap_or_default();
    let headers: Vec<(String, String)> = q
        .get("headers")
        .map(String::as_str)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let body = q.get("body").map(String::as_str).unwrap_or_default();
    let event = crate::event::from_sample(source, body.as_bytes(), &headers);
    let (explanation, rendered) = engine.explain(&event);
    let fires = rendered.iter().any(|r| r.fires);
    let mut h = head("tripline: explain an event");
    let _ = write!(
        h,
        "<h1>Event on <code>{}</code>: <span id=verdict class={}>{}</span></h1><p><a href=/status>back to the status page</a></p>",
        esc(source),
        if fires { "ok" } else { "bad" },
        if fires { "fires" } else { "does not fire" }
    );
    let _ = write!(
        h,
        "<pre id=tree>{}</pre>",
        esc(&crate::sensor::report::text(&explanation, &rendered))
    );
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
