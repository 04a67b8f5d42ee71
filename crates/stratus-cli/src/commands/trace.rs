//! `stratus trace TRACE_OR_REQUEST_ID`: a trace's spans as a waterfall,
//! each under its parent, with its start, its length as a bar and its
//! duration.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;

use serde_json::Value;

use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// A trace id (32 hexadecimal digits, as in traceparent) or the
    /// request id of an invocation in the trace
    pub id: String,
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

/// Columns the bars span.
const WIDTH: usize = 40;

pub async fn run(conn: &Connection, args: TraceArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let trace = client
        .get_json(&format!("/v1/traces/{}", args.id.trim()))
        .await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", waterfall(&trace));
    }
    Ok(ExitCode::SUCCESS)
}

/// The spans in tree order: each after its parent, siblings by start; a
/// span whose parent is not in the trace (a caller outside the platform)
/// at the top.
fn ordered(spans: &[Value]) -> Vec<(usize, &Value)> {
    let ids: HashSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&Value>> = HashMap::new();
    for span in spans {
        let parent = span["parent_id"].as_str().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s["start_ns"].as_i64().unwrap_or(0));
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, &Value)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|s| (0, *s)).collect())
        .unwrap_or_default();
    while let Some((depth, span)) = stack.pop() {
        out.push((depth, span));
        if let Some(below) = children.get(&span["span_id"].as_str()) {
            stack.extend(below.iter().rev().map(|s| (depth + 1, *s)));
        }
    }
    out
}

fn waterfall(trace: &Value) -> String {
    let spans: Vec<Value> = trace["spans"].as_array().cloned().unwrap_or_default();
    let start = spans
        .iter()
        .filter_map(|s| s["start_ns"].as_i64())
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|s| s["end_ns"].as_i64())
        .max()
        .unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let ms = |ns: i64| ns as f64 / 1e6;
    let mut out = format!(
        "trace {}  {} spans  {:.1} ms\n",
        trace["trace_id"].as_str().unwrap_or(""),
        spans.len(),
        ms(end - start)
    );
    let apps: HashSet<&str> = spans.iter().filter_map(|s| s["app"].as_str()).collect();
    for (depth, span) in ordered(&spans) {
        let (s, e) = (
            span["start_ns"].as_i64().unwrap_or(start),
            span["end_ns"].as_i64().unwrap_or(start),
        );
        let from = (((s - start) as f64 / total) * WIDTH as f64).floor() as usize;
        let to = ((((e - start) as f64) / total) * WIDTH as f64).ceil() as usize;
        let from = from.min(WIDTH - 1);
        let to = to.clamp(from + 1, WIDTH);
        let bar = format!(
            "{}{}{}",
            " ".repeat(from),
            "█".repeat(to - from),
            " ".repeat(WIDTH - to)
        );
        let mut name = span["name"].as_str().unwrap_or("").to_owned();
        if apps.len() > 1 {
            name = format!("{}: {name}", span["app"].as_str().unwrap_or(""));
        }
        let mut notes = Vec::new();
        if let Some(kind) = span["kind"].as_str().filter(|k| *k != "internal") {
            notes.push(kind.to_owned());
        }
        if span["attributes"]["faas.coldstart"] == true {
            notes.push("cold".to_owned());
        }
        if let Some(links) = span["links"].as_array().filter(|l| !l.is_empty()) {
            notes.push(format!("{} links", links.len()));
        }
        if let Some(id) = span["request_id"].as_str()
            && span["kind"] != "internal"
        {
            notes.push(id.to_owned());
        }
        if let Some(error) = span["error"].as_str() {
            notes.push(format!("ERROR {error}"));
        }
        out.push_str(&format!(
            "{:>9.1} ms |{bar}| {:>9.1} ms  {}{name}  {}\n",
            ms(s - start),
            ms(e - s),
            "  ".repeat(depth),
            notes.join("  ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn children_follow_their_parent_and_bars_scale_to_the_trace() {
        let trace = json!({
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "spans": [
                {"span_id": "b", "parent_id": "a", "name": "handler", "app": "shop", "kind": "internal",
                 "start_ns": 50_000_000, "end_ns": 100_000_000, "attributes": {}, "links": []},
                {"span_id": "a", "parent_id": "outside", "name": "checkout", "app": "shop", "kind": "server",
                 "start_ns": 0, "end_ns": 100_000_000, "request_id": "r-1",
                 "attributes": {"faas.coldstart": true}, "links": []},
                {"span_id": "c", "parent_id": "b", "name": "queue event for mail", "app": "shop",
                 "kind": "producer", "start_ns": 60_000_000, "end_ns": 61_000_000,
                 "error": null, "attributes": {}, "links": []},
            ]
        });
        let text = waterfall(&trace);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "trace 0af7651916cd43dd8448eb211c80319c  3 spans  100.0 ms"
        );
        assert!(
            lines[1].contains(&format!("|{}|", "█".repeat(WIDTH))),
            "{text}"
        );
        assert!(lines[1].contains("  checkout  server  cold  r-1"), "{text}");
        assert!(lines[2].contains("    handler"), "{text}");
        assert!(
            lines[2].contains(&format!("|{}{}|", " ".repeat(20), "█".repeat(20))),
            "{text}"
        );
        assert!(
            lines[3].contains("      queue event for mail  producer"),
            "{text}"
        );
    }
}
