//! Serving HTTP connections with the limits every listener of the server
//! has, whoever may connect to it: a cap on connections (more wait in the
//! kernel's backlog), a cap per client address (beyond it a connection is
//! closed at once), a deadline for the first request (a connection that
//! sends nothing, only the HTTP/2 preface, or opens no stream is closed
//! after `--header-timeout`), an idle timeout once no request is in
//! flight, and HTTP/2 keep-alive pings that find dead peers.
//!
//! The public listener, the admin listener and the platform API all serve
//! through [`serve`]; what differs is the handler and the limits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// How long a connection asked to close (idle, or the server stopping)
/// may take to finish what it has in flight before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const H2_PING: Duration = Duration::from_secs(20);

/// One listener's limits.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Connections from one client address at once (0: no cap); more are
    /// closed as they are accepted.
    pub per_address: usize,
    /// How long a connection may take to send its first request's headers
    /// (and to finish the TLS handshake).
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// Whether requests whose line and headers are over
    /// `max_header_bytes` (up to [`HEAD_SLACK`] times it) reach the
    /// handler, to be answered as it answers errors; past that, or without
    /// it, the HTTP library answers a bare 431.
    pub head_slack: bool,
}

/// How many times `max_header_bytes` a handler that checks the size
/// itself gets to see.
const HEAD_SLACK: usize = 4;

/// Serves `listener` until `stop` resolves, then lets requests in flight
/// finish. `handler` makes, for each accepted connection, what answers its
/// requests; it is dropped when the connection ends.
pub(crate) async fn serve<M, S, F>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl Future<Output = ()>,
    handler: M,
) where
    M: Fn(SocketAddr) -> S,
    S: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let head_bytes = if limits.head_slack {
        limits.max_header_bytes.saturating_mul(HEAD_SLACK)
    } else {
        limits.max_header_bytes
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(head_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING))
        .keep_alive_timeout(H2_PING)
        .max_header_list_size(u32::try_from(head_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let addresses = Addresses::new(limits.per_address);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(%err, listener = name, "cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(address) = addresses.claim(peer.ip()) else {
            tracing::debug!(%peer, listener = name, "too many connections from one address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = handler(peer);
        let builder = builder.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let _held = (permit, address);
            match tls {
                None => connection(stream, &builder, service, &limits, stopped).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            connection(stream, &builder, service, &limits, stopped).await
                        }
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a permit until it ends.
    let _ = permits.acquire_many(max as u32).await;
}

/// Serves one connection until it ends, it idles past its limits, or the
/// server stops.
async fn connection<I, S, F>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    limits: &Limits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let guard = activity.begin();
            let response = service(request);
            async move {
                let response = response.await;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _guard: guard,
                    })
                }))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idle = activity.idle(limits.header_timeout, limits.idle_timeout);
    tokio::pin!(idle);
    let mut deadline = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%err, "connection ended with an error");
                }
                return;
            }
            () = &mut idle, if deadline.is_none() => {
                connection.as_mut().graceful_shutdown();
                deadline = Some(Instant::now() + CLOSE_GRACE);
            }
            _ = stopped.wait_for(|stop| *stop), if deadline.is_none() => {
                connection.as_mut().graceful_shutdown();
                deadline = Some(Instant::now() + CLOSE_GRACE);
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => return,
        }
    }
}

/// Connections per client address.
#[derive(Clone)]
struct Addresses {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its address until dropped.
struct AddressClaim {
    addresses: Addresses,
    ip: IpAddr,
}

impl Addresses {
    fn new(cap: usize) -> Addresses {
        Addresses {
            cap,
            open: Arc::default(),
        }
    }

    fn claim(&self, ip: IpAddr) -> Option<Option<AddressClaim>> {
        if self.cap == 0 {
            return Some(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Some(AddressClaim {
            addresses: self.clone(),
            ip,
        }))
    }
}

impl Drop for AddressClaim {
    fn drop(&mut self) {
        let mut open = self
            .addresses
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection is doing: requests in flight (until their response
/// bodies end), and since when nothing.
#[derive(Default)]
struct Activity {
    state: Mutex<ActivityState>,
    changed: tokio::sync::Notify,
}

struct ActivityState {
    in_flight: usize,
    served: bool,
    since: Instant,
}

impl Default for ActivityState {
    fn default() -> ActivityState {
        ActivityState {
            in_flight: 0,
            served: false,
            since: Instant::now(),
        }
    }
}

/// A request in flight, until dropped with its response body.
struct InFlight(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight += 1;
        state.served = true;
        drop(state);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Resolves once nothing has been in flight for `first` (before the
    /// first request) or `idle` (after it).
    async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let deadline = {
                let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                (state.in_flight == 0)
                    .then(|| state.since + if state.served { idle } else { first })
            };
            match deadline {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return,
                    () = self.changed.notified() => {}
                },
                None => self.changed.notified().await,
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight -= 1;
        state.since = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until it ends.
struct Tracked {
    body: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_idles_only_with_nothing_in_flight() {
        let activity = Arc::new(Activity::default());
        let first = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let started = Instant::now();
        activity.idle(first, idle).await;
        assert_eq!(started.elapsed(), first, "no request at all");

        let activity = Arc::new(Activity::default());
        let request = activity.begin();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle(first, idle).await }
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!waiting.is_finished(), "a request is in flight");
        let ended = Instant::now();
        drop(request);
        waiting.await.unwrap();
        assert_eq!(ended.elapsed(), idle);
    }

    #[test]
    fn addresses_are_capped_each_and_released() {
        let addresses = Addresses::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = addresses.claim(a).unwrap();
        let _second = addresses.claim(a).unwrap();
        assert!(addresses.claim(a).is_none());
        assert!(addresses.claim(b).is_some());
        drop(first);
        assert!(addresses.claim(a).is_some());
        assert!(Addresses::new(0).claim(a).unwrap().is_none(), "no cap");
    }
}
