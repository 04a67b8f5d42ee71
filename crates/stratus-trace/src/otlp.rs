//! Spans as an OTLP `ExportTraceServiceRequest`, protobuf-encoded, for
//! `POST /v1/traces` of any OpenTelemetry collector (OTLP over HTTP).
//!
//! The messages are few and fixed, so they are written by hand, field by
//! field, from `opentelemetry/proto/trace/v1/trace.proto`; one resource per
//! app, whose `service.name` is the app.

use crate::{Kind, Span, Value};

/// The request body for `spans`.
pub fn encode(spans: &[Span], node: &str) -> Vec<u8> {
    let mut apps: Vec<&str> = spans.iter().map(|s| s.app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let mut request = Vec::new();
    for app in apps {
        let mut resource_spans = Vec::new();
        // Resource (1): its attributes (1).
        let mut resource = Vec::new();
        key_value(
            &mut resource,
            1,
            "service.name",
            &Value::Str(app.to_owned()),
        );
        key_value(
            &mut resource,
            1,
            "service.namespace",
            &Value::Str("stratus".into()),
        );
        key_value(&mut resource, 1, "host.name", &Value::Str(node.to_owned()));
        message(&mut resource_spans, 1, &resource);
        // ScopeSpans (2): the scope (1), the spans (2).
        let mut scope_spans = Vec::new();
        let mut scope = Vec::new();
        string(&mut scope, 1, "stratus");
        string(&mut scope, 2, env!("CARGO_PKG_VERSION"));
        message(&mut scope_spans, 1, &scope);
        for span in spans.iter().filter(|s| s.app == app) {
            message(&mut scope_spans, 2, &encode_span(span));
        }
        message(&mut resource_spans, 2, &scope_spans);
        message(&mut request, 1, &resource_spans);
    }
    request
}

fn encode_span(span: &Span) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    bytes(&mut out, 1, &span.context.trace_id.0);
    bytes(&mut out, 2, &span.context.span_id.0);
    if let Some(parent) = &span.parent {
        bytes(&mut out, 4, &parent.0);
    }
    string(&mut out, 5, &span.name);
    let kind = match span.kind {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    };
    varint_field(&mut out, 6, kind);
    fixed64(&mut out, 7, span.start_ns);
    fixed64(&mut out, 8, span.end_ns.max(span.start_ns));
    for (key, value) in &span.attributes {
        key_value(&mut out, 9, key, value);
    }
    if let Some(request_id) = &span.request_id {
        key_value(
            &mut out,
            9,
            "faas.invocation_id",
            &Value::Str(request_id.clone()),
        );
    }
    for link in &span.links {
        let mut encoded = Vec::new();
        bytes(&mut encoded, 1, &link.trace_id.0);
        bytes(&mut encoded, 2, &link.span_id.0);
        message(&mut out, 13, &encoded);
    }
    // Status (15): message (2), code (3): OK 1, ERROR 2.
    let mut status = Vec::new();
    match &span.error {
        Some(error) => {
            string(&mut status, 2, error);
            varint_field(&mut status, 3, 2);
        }
        None => varint_field(&mut status, 3, 1),
    }
    message(&mut out, 15, &status);
    out
}

fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let mut any = Vec::new();
    match value {
        Value::Str(text) => string(&mut any, 1, text),
        Value::Bool(flag) => varint_field(&mut any, 2, *flag as u64),
        Value::Int(number) => varint_field(&mut any, 3, *number as u64),
    }
    let mut pair = Vec::new();
    string(&mut pair, 1, key);
    message(&mut pair, 2, &any);
    message(out, field, &pair);
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, 0);
    varint(out, value);
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&value.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    tag(out, field, 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

fn message(out: &mut Vec<u8>, field: u32, encoded: &[u8]) {
    bytes(out, field, encoded);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;

    #[test]
    fn varints_are_little_endian_groups_of_seven() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        varint(&mut out, (-1i64) as u64);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn a_span_is_framed_in_its_resource_and_scope() {
        let context =
            Context::from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .unwrap();
        let span = Span::new(context, None, "shop/checkout", Kind::Server, "shop", 1, 2);
        let body = encode(&[span], "node-1");
        // ExportTraceServiceRequest.resource_spans (1, length-delimited).
        assert_eq!(body[0], 0x0a);
        // The ids appear verbatim, as bytes fields 1 and 2 of the span.
        let trace = [&[0x0a, 16][..], &context.trace_id.0[..]].concat();
        assert!(body.windows(trace.len()).any(|w| w == trace));
        let span_id = [&[0x12, 8][..], &context.span_id.0[..]].concat();
        assert!(body.windows(span_id.len()).any(|w| w == span_id));
        assert!(body.windows(13).any(|w| w == b"shop/checkout"));
    }
}
