//! What answers each connection of the admin listener and the platform
//! API. On the platform API, where every instance connects from the
//! host's loopback address, a connection counts against the app its first
//! accepted request acts for, so one app's instances cannot take every
//! connection the listener serves.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use tower_service::Service;

use super::{ApiError, app_scoped};

type Answer = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;
type Handler = Box<dyn Fn(hyper::Request<Incoming>) -> Answer + Send + Sync>;

/// Each admin connection is answered by the router.
pub(crate) fn admin_connections(router: Router) -> impl Fn(SocketAddr) -> Handler {
    move |_peer| {
        let router = router.clone();
        Box::new(move |request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            Box::pin(async move {
                match router.call(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }) as Answer
        })
    }
}

/// Each platform API connection is answered by the router, within its
/// app's share of connections.
pub(crate) fn platform_connections(
    router: Router,
    per_app: usize,
) -> impl Fn(SocketAddr) -> Handler {
    let apps = Apps::new(per_app);
    move |_peer| {
        let router = router.clone();
        let apps = apps.clone();
        let claim: Arc<Mutex<Option<Claim>>> = Arc::default();
        Box::new(move |request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            let apps = apps.clone();
            let claim = claim.clone();
            let app = app_scoped(request.method(), request.uri().path()).map(str::to_owned);
            Box::pin(async move {
                let unclaimed = claim.lock().unwrap_or_else(|p| p.into_inner()).is_none();
                if let (true, Some(app)) = (unclaimed, &app)
                    && apps.full(app)
                {
                    let mut response = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_connections",
                        format!(
                            "app {app}'s instances hold {} platform API connections, the most one app may (--platform-max-connections-per-app); reuse connections",
                            apps.cap
                        ),
                    )
                    .into_response();
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return response;
                }
                let response = match router.call(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                // Only a request the app's credentials were accepted for
                // claims the connection: another app's name costs nothing.
                if let (true, Some(app)) = (unclaimed, app)
                    && response.status() != StatusCode::UNAUTHORIZED
                {
                    let mut held = claim.lock().unwrap_or_else(|p| p.into_inner());
                    if held.is_none() {
                        *held = Some(apps.claim(app));
                    }
                }
                response
            }) as Answer
        })
    }
}

/// Platform API connections per app.
#[derive(Clone)]
struct Apps {
    cap: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One connection counted against its app until the connection ends.
struct Claim {
    apps: Apps,
    app: String,
}

impl Apps {
    fn new(cap: usize) -> Apps {
        Apps {
            cap,
            open: Arc::default(),
        }
    }

    fn full(&self, app: &str) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(app).copied().unwrap_or(0) >= self.cap
    }

    fn claim(&self, app: String) -> Claim {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open.entry(app.clone()).or_default() += 1;
        Claim {
            apps: self.clone(),
            app,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut open = self.apps.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.app) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.app);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_is_full_at_its_cap_until_a_connection_ends() {
        let apps = Apps::new(2);
        let first = apps.claim("a".into());
        let _second = apps.claim("a".into());
        assert!(apps.full("a"));
        assert!(!apps.full("b"));
        drop(first);
        assert!(!apps.full("a"));
    }
}
