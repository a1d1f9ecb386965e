//! The explanation of an event, as text: each sensor's dependencies with
//! their filter trees (✓/✗, what was seen, why not), then what each trigger
//! would submit. `tripline test` prints it; the status page shows it.

use serde_json::Value;

use super::trace::Trace;
use super::{Explanation, Rendered};

/// Human-readable explanation: a tree of filters with ✓/✗, the value seen
/// and the reason, then each rendered object as YAML.
pub fn text(e: &Explanation, rendered: &[Rendered]) -> String {
    let mut s = format!("event {} from source `{}`\n", e.event_id, e.source);
    if let Some(n) = &e.note {
        s.push_str(&format!("  {n}\n"));
    }
    for sensor in &e.sensors {
        s.push_str(&format!("\nsensor {}\n", sensor.sensor));
        for d in &sensor.dependencies {
            let verdict = if d.matched { "MATCHED" } else { "not matched" };
            s.push_str(&format!(
                "  dependency {} (source {}): {verdict}\n",
                d.name, d.source
            ));
            match &d.filters {
                Some(t) => trace_lines(t, 2, &mut s),
                None => s.push_str("    (no filters: every event from the source)\n"),
            }
        }
    }
    for r in rendered {
        s.push_str(&format!("\ntrigger {}/{}", r.sensor, r.trigger));
        if let Some(n) = &r.note {
            s.push_str(&format!(" ({n})"));
        }
        match (&r.object, &r.error) {
            (Some(obj), _) => {
                s.push_str(" would submit:\n---\n");
                s.push_str(&serde_yaml_ng::to_string(obj).unwrap_or_default());
            }
            (None, Some(err)) => s.push_str(&format!(" cannot render: {err}\n")),
            _ => s.push('\n'),
        }
    }
    if rendered.is_empty() {
        s.push_str("\nno trigger fires for this event\n");
    }
    s
}

fn trace_lines(t: &Trace, depth: usize, s: &mut String) {
    let mark = if t.matched { "✓" } else { "✗" };
    let mut line = format!("{}{mark} {}", "  ".repeat(depth), t.filter);
    if let Some(seen) = &t.seen {
        line.push_str(&format!("  (seen: {})", compact(seen)));
    }
    if let Some(r) = &t.reason {
        line.push_str(&format!("  — {r}"));
    }
    s.push_str(&line);
    s.push('\n');
    for c in &t.children {
        trace_lines(c, depth + 1, s);
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
