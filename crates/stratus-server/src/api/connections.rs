//! What answers each connection of the admin listener and the platform
//! API. On the platform API, where every instance connects from the
//! host's loopback address, a connection counts against the app its first
//! accepted request acts for, and against the instance whose token it
//! carries, so that neither one app's instances nor one instance can take
//! every connection the listener serves.

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

/// How many platform API connections one app's instances, and one
/// instance, may hold at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionCaps {
    pub per_app: usize,
    pub per_instance: usize,
}

/// Each platform API connection is answered by the router, within its
/// app's and its instance's shares of connections.
pub(crate) fn platform_connections(
    router: Router,
    caps: ConnectionCaps,
) -> impl Fn(SocketAddr) -> Handler {
    let held = Held::new(caps);
    move |_peer| {
        let router = router.clone();
        let held = held.clone();
        let claim: Arc<Mutex<Option<Claim>>> = Arc::default();
        Box::new(move |request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            let held = held.clone();
            let claim = claim.clone();
            let holder = app_scoped(request.method(), request.uri().path()).map(|app| Holder {
                app: app.to_owned(),
                instance: request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .and_then(super::tokens::named_instance)
                    .map(str::to_owned),
            });
            Box::pin(async move {
                let unclaimed = claim.lock().unwrap_or_else(|p| p.into_inner()).is_none();
                if let (true, Some(holder)) = (unclaimed, &holder)
                    && let Some(full) = held.full(holder)
                {
                    let mut response =
                        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", full)
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
                // claims the connection: another app's name, or another
                // instance's, costs nothing.
                if let (true, Some(holder)) = (unclaimed, holder)
                    && response.status() != StatusCode::UNAUTHORIZED
                {
                    let mut slot = claim.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some(held.claim(holder));
                    }
                }
                response
            }) as Answer
        })
    }
}

/// Who a connection counts against: an app, and the instance whose token
/// it uses (none for an app's key).
#[derive(Debug, Clone)]
struct Holder {
    app: String,
    instance: Option<String>,
}

/// Platform API connections held, per app and per instance.
#[derive(Clone)]
struct Held {
    caps: ConnectionCaps,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    apps: HashMap<String, usize>,
    instances: HashMap<(String, String), usize>,
}

/// One connection counted against its holder until the connection ends.
struct Claim {
    held: Held,
    holder: Holder,
}

impl Held {
    fn new(caps: ConnectionCaps) -> Held {
        Held {
            caps,
            open: Arc::default(),
        }
    }

    /// Why `holder` may not hold one more connection, if it may not.
    fn full(&self, holder: &Holder) -> Option<String> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let app = &holder.app;
        if let Some(instance) = &holder.instance
            && open
                .instances
                .get(&(app.clone(), instance.clone()))
                .copied()
                .unwrap_or(0)
                >= self.caps.per_instance
        {
            return Some(format!(
                "instance {instance} of app {app} holds {} platform API connections, the most one instance may (--platform-max-connections-per-instance); reuse connections",
                self.caps.per_instance
            ));
        }
        (open.apps.get(app).copied().unwrap_or(0) >= self.caps.per_app).then(|| {
            format!(
                "app {app}'s instances hold {} platform API connections, the most one app may (--platform-max-connections-per-app); reuse connections",
                self.caps.per_app
            )
        })
    }

    fn claim(&self, holder: Holder) -> Claim {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open.apps.entry(holder.app.clone()).or_default() += 1;
        if let Some(instance) = &holder.instance {
            *open
                .instances
                .entry((holder.app.clone(), instance.clone()))
                .or_default() += 1;
        }
        Claim {
            held: self.clone(),
            holder,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut open = self.held.open.lock().unwrap_or_else(|p| p.into_inner());
        let Holder { app, instance } = &self.holder;
        release(&mut open.apps, app);
        if let Some(instance) = instance {
            release(&mut open.instances, &(app.clone(), instance.clone()));
        }
    }
}

/// One connection fewer for `key`, forgotten at none.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(app: &str, instance: Option<&str>) -> Holder {
        Holder {
            app: app.to_owned(),
            instance: instance.map(str::to_owned),
        }
    }

    #[test]
    fn an_instance_and_an_app_are_full_at_their_caps_until_a_connection_ends() {
        let held = Held::new(ConnectionCaps {
            per_app: 3,
            per_instance: 2,
        });
        let (a1, a2, key) = (
            holder("a", Some("i1")),
            holder("a", Some("i2")),
            holder("a", None),
        );
        let first = held.claim(a1.clone());
        let _second = held.claim(a1.clone());
        let full = held.full(&a1).expect("the instance is at its cap");
        assert!(full.contains("instance i1"), "{full}");
        // Another instance of the app, and the app's keys, are not.
        assert!(held.full(&a2).is_none());
        assert!(held.full(&key).is_none());
        let _third = held.claim(a2.clone());
        // Now the app is, for all of them.
        let full = held.full(&a2).expect("the app is at its cap");
        assert!(full.contains("app a's"), "{full}");
        assert!(held.full(&key).is_some());
        assert!(held.full(&holder("b", Some("i3"))).is_none());
        drop(first);
        assert!(held.full(&a1).is_none());
        assert!(held.full(&key).is_none());
    }
}
