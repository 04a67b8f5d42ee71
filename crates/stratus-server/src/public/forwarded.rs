//! The headers a proxy in front of an app adds, written once for
//! functions and services alike.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue};

/// The header that carries the request id to the app and back.
pub(crate) const REQUEST_ID: &str = "x-stratus-request-id";

/// Who reached the gateway, and how.
pub(crate) struct Forwarding<'a> {
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The public listener's port.
    pub port: u16,
    /// The host (and port) the client addressed, as it wrote it.
    pub authority: Option<&'a str>,
    /// The prefix the app was reached under (`/APP`), if any.
    pub prefix: Option<&'a str>,
}

/// Who the request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience<'a> {
    /// A function's event: what an API gateway adds.
    Function,
    /// A web app: what a reverse proxy adds besides, `Forwarded`,
    /// `X-Forwarded-Host` and the request id.
    Service { request_id: &'a str },
}

/// Sets the forwarded headers. `X-Forwarded-For` is appended to the
/// client's own; every other one replaces what the client sent, and the
/// client's `X-Forwarded-Prefix` is dropped: only the gateway says under
/// which prefix a request came. `Host` is the authority the client
/// addressed (HTTP/2 carries it in `:authority`).
pub(crate) fn apply(headers: &mut HeaderMap, f: &Forwarding<'_>, audience: Audience<'_>) {
    let peer = peer_ip(f.peer);
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {peer}"),
        None => peer.clone(),
    };
    headers.remove("x-forwarded-prefix");
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-proto", f.proto);
    set("x-forwarded-port", &f.port.to_string());
    if let Some(prefix) = f.prefix {
        set("x-forwarded-prefix", prefix);
    }
    if let Some(authority) = f.authority {
        set("host", authority);
    }
    if let Audience::Service { request_id } = audience {
        let node = if f.peer.is_ipv6() && f.peer.ip().to_string() == peer {
            format!("\"[{peer}]\"")
        } else {
            peer
        };
        let host = f.authority.unwrap_or_default();
        set(
            "forwarded",
            &format!("for={node};host=\"{host}\";proto={}", f.proto),
        );
        set("x-forwarded-host", host);
        set(REQUEST_ID, request_id);
    }
}

/// The client's address as apps expect it: IPv4 for an IPv4-mapped peer.
pub(crate) fn peer_ip(addr: SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        ip => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding(peer: &str) -> Forwarding<'static> {
        Forwarding {
            peer: peer.parse().unwrap(),
            proto: "https",
            port: 8443,
            authority: Some("app.example.com:8443"),
            prefix: Some("/app"),
        }
    }

    #[test]
    fn functions_and_services_share_the_common_headers() {
        for audience in [Audience::Function, Audience::Service { request_id: "r1" }] {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
            headers.insert("x-forwarded-prefix", HeaderValue::from_static("/evil"));
            apply(&mut headers, &forwarding("192.0.2.7:5000"), audience);
            assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
            assert_eq!(headers["x-forwarded-proto"], "https");
            assert_eq!(headers["x-forwarded-port"], "8443");
            assert_eq!(headers["x-forwarded-prefix"], "/app");
            assert_eq!(headers["host"], "app.example.com:8443");
        }
    }

    #[test]
    fn services_also_get_forwarded_host_and_the_request_id() {
        let mut headers = HeaderMap::new();
        apply(
            &mut headers,
            &forwarding("[::ffff:192.0.2.7]:5000"),
            Audience::Service { request_id: "r1" },
        );
        assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(
            headers["forwarded"],
            "for=192.0.2.7;host=\"app.example.com:8443\";proto=https"
        );
        assert_eq!(headers["x-forwarded-host"], "app.example.com:8443");
        assert_eq!(headers[REQUEST_ID], "r1");

        let mut headers = HeaderMap::new();
        apply(
            &mut headers,
            &forwarding("[2001:db8::1]:5000"),
            Audience::Service { request_id: "r1" },
        );
        assert!(
            headers["forwarded"]
                .to_str()
                .unwrap()
                .starts_with("for=\"[2001:db8::1]\";")
        );

        let mut headers = HeaderMap::new();
        apply(
            &mut headers,
            &forwarding("192.0.2.7:5000"),
            Audience::Function,
        );
        assert!(!headers.contains_key("forwarded"));
        assert!(!headers.contains_key(REQUEST_ID));
    }
}
