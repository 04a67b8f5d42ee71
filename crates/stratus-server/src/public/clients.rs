//! The HTTP clients that reach service instances, and the request body
//! that is cut off when the client stalls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, header};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Below the keep-alive of common app servers (Node's is 5 s), so the
/// pool seldom picks a connection the app is closing.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// The HTTP clients that reach instances.
pub(crate) struct Clients {
    http1: Client<HttpConnector, IdleBody>,
    /// One multiplexed HTTP/2 connection per instance, made on first use.
    /// (hyper's pooled client would take the `:authority` from the
    /// instance's address; the app must see the client's.)
    h2c: std::sync::Mutex<HashMap<SocketAddr, http2::SendRequest<IdleBody>>>,
}

/// Why an instance gave no answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The client's request body stopped arriving.
    Stalled,
    /// The connection to the instance failed; the error and its causes.
    Failed(String),
}

impl Clients {
    pub fn new() -> Clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Clients {
            http1,
            h2c: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn forget_h2c(&self, addr: SocketAddr) {
        self.h2c
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
    }

    /// A sender on the HTTP/2 connection to `addr`, connecting when there
    /// is none or it closed.
    async fn h2c(&self, addr: SocketAddr) -> Result<http2::SendRequest<IdleBody>, SendError> {
        let cached = self
            .h2c
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .filter(|s| !s.is_closed())
            .cloned();
        if let Some(sender) = cached {
            return Ok(sender);
        }
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| SendError::Failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| SendError::from_error(&e))?;
        tokio::spawn(connection);
        let mut map = self.h2c.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| !s.is_closed());
        map.insert(addr, sender.clone());
        Ok(sender)
    }

    /// Sends `request` to the instance at `addr`: over HTTP/2 (prior
    /// knowledge) with `h2` (gRPC, and services that speak h2c), over
    /// pooled HTTP/1.1 otherwise.
    pub async fn send(
        &self,
        h2: bool,
        addr: SocketAddr,
        mut request: Request<IdleBody>,
    ) -> Result<Response<Incoming>, SendError> {
        if h2 {
            *request.version_mut() = hyper::Version::HTTP_2;
            // `:authority` carries the host.
            request.headers_mut().remove(header::HOST);
            let mut sender = self.h2c(addr).await?;
            let answer = sender.send_request(request).await;
            if answer.is_err() {
                // A connection the app closed (GOAWAY) is not used again.
                self.forget_h2c(addr);
            }
            answer.map_err(|e| SendError::from_error(&e))
        } else {
            self.http1
                .request(request)
                .await
                .map_err(|e| SendError::from_error(&e))
        }
    }
}

impl SendError {
    /// `Stalled` when the client's body stalled anywhere in `err`'s
    /// causes; otherwise the whole chain as one message.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> SendError {
        let mut cause = Some(err);
        while let Some(err) = cause {
            if err.downcast_ref::<BodyStalled>().is_some() {
                return SendError::Stalled;
            }
            cause = err.source();
        }
        SendError::Failed(error_chain(err))
    }
}

/// An error and its causes, `: `-separated.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The client's request body on its way to the instance, cut off when it
/// stalls for longer than `--body-timeout`: a slow upload holds a lease, so
/// a few stalled clients could otherwise pin a service's capacity.
pub(crate) struct IdleBody {
    inner: Body,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleBody {
    pub fn new(inner: Body, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

/// The body of a request stalled.
#[derive(Debug)]
pub(crate) struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body stalled")
    }
}

impl std::error::Error for BodyStalled {}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::{BodyStalled, SendError};

    #[derive(Debug)]
    struct Wrapped(Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error trying to connect")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_stalled_body_is_found_among_the_causes() {
        let stalled = Wrapped(Box::new(Wrapped(Box::new(BodyStalled))));
        assert!(matches!(
            SendError::from_error(&stalled),
            SendError::Stalled
        ));
        let refused = Wrapped(Box::new(std::io::Error::other("connection refused")));
        match SendError::from_error(&refused) {
            SendError::Failed(message) => {
                assert_eq!(message, "error trying to connect: connection refused")
            }
            SendError::Stalled => panic!("not a stall"),
        }
    }
}
