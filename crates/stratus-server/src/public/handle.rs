//! One request on the public listener, from host or prefix to the route:
//! the listener's limits, the app, a CORS preflight, the route and its
//! key; then to the function or the service the route leads to.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use stratus_gateway::route::Lookup;
use stratus_manifest::HttpAuth;

use super::cors;
use super::error::GatewayError;
use super::forwarded::REQUEST_ID;
use super::function::{self, Call};
use super::gateway::{Gateway, Routed};
use super::proxy::{self, Forward};
use super::routes::{AppRoutes, TargetKind};

const KEY_HEADER: &str = "x-stratus-key";

/// Answers `request`: every answer carries its request id.
pub(crate) async fn handle(
    gateway: &Gateway,
    request: Request<Body>,
    peer: SocketAddr,
) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = route(gateway, request, peer, &request_id)
        .await
        .unwrap_or_else(|error| error.into_response(&request_id));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Which app a request is for, the path within it and the prefix it was
/// reached under.
struct Located<'a> {
    app: Arc<AppRoutes>,
    name: String,
    path: &'a str,
    prefix: Option<&'a str>,
}

fn locate<'a>(gateway: &Gateway, host: &str, path: &'a str) -> Option<Located<'a>> {
    if let Some(label) = host
        .strip_suffix(gateway.settings.domain.as_str())
        .and_then(|h| h.strip_suffix('.'))
        .filter(|l| !l.contains('.'))
        && let Some(app) = gateway.directory.app(label)
    {
        return Some(Located {
            app,
            name: label.to_owned(),
            path,
            prefix: None,
        });
    }
    let rest = path.strip_prefix('/')?;
    let (name, within) = match rest.find('/') {
        Some(i) => (&rest[..i], &path[i + 1..]),
        None => (rest, "/"),
    };
    let app = gateway.directory.app(name)?;
    Some(Located {
        app,
        name: name.to_owned(),
        path: within,
        prefix: Some(&path[..name.len() + 1]),
    })
}

/// Whether `host` names an app (`APP.DOMAIN`), deployed or not.
fn addresses_app(gateway: &Gateway, host: &str) -> bool {
    host.strip_suffix(gateway.settings.domain.as_str())
        .and_then(|h| h.strip_suffix('.'))
        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
}

/// The app whose git webhook `host` and `path` name: `/APP/_stratus/...`,
/// or `/_stratus/...` on the app's host.
fn webhook_app(gateway: &Gateway, host: &str, path: &str) -> Option<String> {
    let app = if path == crate::webhooks::PATH {
        host.strip_suffix(gateway.settings.domain.as_str())?
            .strip_suffix('.')?
    } else {
        let (app, rest) = path.strip_prefix('/')?.split_once('/')?;
        (rest == &crate::webhooks::PATH[1..]).then_some(app)?
    };
    stratus_manifest::is_valid_name(app).then(|| app.to_owned())
}

fn host_of(request: &Request<Body>) -> String {
    let raw = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    };
    let host = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(host, _)| host)
    };
    host.to_ascii_lowercase()
}

/// The bytes of a request's line and headers, as HTTP/1.1 sends them.
fn head_bytes(request: &Request<Body>) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n ".len();
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum::<usize>()
        + line
        + "\r\n".len()
}

async fn route(
    gateway: &Gateway,
    request: Request<Body>,
    peer: SocketAddr,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let settings = &gateway.settings;
    let url_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if url_len > settings.max_url_bytes {
        return Err(GatewayError::UrlTooLong {
            limit: settings.max_url_bytes,
        });
    }
    if head_bytes(&request) > settings.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            limit: settings.max_header_bytes,
        });
    }
    let host = host_of(&request);
    // The S3 API, at s3.DOMAIN and BUCKET.s3.DOMAIN.
    if let Some(api) = &gateway.objects
        && let Some(bucket) = crate::s3::addressed(&host, &settings.domain)
    {
        return Ok(api.serve(request, bucket).await);
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    // A git host's push: for an app that may not be deployed yet.
    if parts.method == Method::POST
        && let Some(hooks) = &gateway.webhooks
        && let Some(app) = webhook_app(gateway, &host, &path)
    {
        let body = axum::body::to_bytes(body, crate::webhooks::MAX_EVENT_BYTES)
            .await
            .map_err(|_| GatewayError::BodyTooLarge {
                limit: crate::webhooks::MAX_EVENT_BYTES,
            })?;
        let (status, answer) = hooks.git_push(&app, &parts.headers, body).await;
        let mut response = Response::new(Body::from(answer.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    // A load balancer's probe of the node, on no app's host.
    if matches!(parts.method, Method::GET | Method::HEAD)
        && let Some(probes) = &gateway.probes
        && let Some(name) = path.strip_prefix('/')
        && !addresses_app(gateway, &host)
        && let Some((status, answer)) = probes.probe(name, parts.uri.query()).await
    {
        let mut response = Response::new(Body::from(answer.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let located = locate(gateway, &host, &path).ok_or_else(|| GatewayError::NoApp {
        domain: settings.domain.clone(),
    })?;
    // The platform's own paths on the app's host.
    if let Some(clients) = &gateway.clients
        && located.path.starts_with(stratus_manifest::RESERVED_PATH)
    {
        let mut parts = parts;
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{}?{query}", located.path),
            None => located.path.to_owned(),
        };
        if let Ok(uri) = path_and_query.parse() {
            parts.uri = uri;
        }
        let app = located.name.clone();
        return Ok(clients
            .serve(&app, peer, Request::from_parts(parts, body))
            .await);
    }
    let origin = parts.headers.get(header::ORIGIN).cloned();

    if parts.method == Method::OPTIONS
        && let Some(origin) = &origin
        && let Some(requested) = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
        && let Lookup::Found { route, .. } = located.app.table.lookup(&requested, located.path)
        && let Some(cors) = &route.target.cors
    {
        let headers = cors::preflight(
            cors,
            origin,
            &requested,
            parts.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS),
            route.methods.as_deref(),
        )
        .map_err(|refused| GatewayError::CorsRefused { refused, requested })?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.headers_mut() = headers;
        return Ok(response);
    }

    let (target, route_key, params) = match located.app.table.lookup(&parts.method, located.path) {
        Lookup::Found { route, params } => (route.target.clone(), route.key(&parts.method), params),
        Lookup::MethodNotAllowed { allowed } => {
            return Err(GatewayError::MethodNotAllowed {
                method: parts.method.clone(),
                allowed,
            });
        }
        Lookup::NotFound => {
            return Err(GatewayError::NoRoute {
                app: located.name.clone(),
                method: parts.method.clone(),
                path: located.path.to_owned(),
            });
        }
    };

    // A route that strips its literal part: the target sees the rest, and
    // the whole prefix removed in `X-Forwarded-Prefix`.
    let (path, prefix) = match &target.strip {
        Some(literal) => {
            let rest = located
                .path
                .strip_prefix(literal.as_str())
                .unwrap_or(located.path);
            let rest = if rest.is_empty() { "/" } else { rest };
            (
                rest,
                Some(format!("{}{literal}", located.prefix.unwrap_or(""))),
            )
        }
        None => (located.path, located.prefix.map(str::to_owned)),
    };
    let answer = async {
        if target.auth == HttpAuth::Key {
            check_key(gateway, &located.name, &parts.headers)?;
        }
        let to = Routed {
            app: &located.name,
            target: &target.function,
            path,
            prefix: prefix.as_deref(),
            peer,
            request_id,
        };
        match target.kind {
            TargetKind::Service => {
                let host = authority(&parts, &host)?;
                let forward = Forward { to, host: &host };
                proxy::forward(gateway, forward, parts, body).await
            }
            TargetKind::Function => {
                let call = Call {
                    to,
                    route: &target,
                    host: &host,
                    route_key: &route_key,
                    params: &params,
                };
                function::call(gateway, call, parts, body).await
            }
        }
    };
    // The route's CORS headers go on every answer, the gateway's own too.
    let mut response = answer
        .await
        .unwrap_or_else(|error| error.into_response(request_id));
    if let Some(cors) = &target.cors {
        cors::decorate(cors, origin.as_ref(), response.headers_mut());
    }
    Ok(response)
}

/// The host (and port) as the client wrote it. It becomes a service's
/// `Host`, gRPC's `:authority` and part of `Forwarded`: only a
/// well-formed host and port may pass.
fn authority(parts: &axum::http::request::Parts, host: &str) -> Result<String, GatewayError> {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| host.to_owned());
    if authority.parse::<axum::http::uri::Authority>().is_err() || authority.contains(['@', '"']) {
        return Err(GatewayError::BadHost);
    }
    Ok(authority)
}

fn check_key(gateway: &Gateway, app: &str, headers: &HeaderMap) -> Result<(), GatewayError> {
    let given = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim);
    match given {
        None | Some("") => Err(GatewayError::KeyMissing),
        Some(key)
            if gateway
                .directory
                .has_key(app, &stratus_archive::sha256_hex(key.as_bytes())) =>
        {
            Ok(())
        }
        Some(_) => Err(GatewayError::KeyRejected {
            app: app.to_owned(),
        }),
    }
}
