//! The bytes of request bodies the public listener may buffer at once,
//! across every connection (`--max-buffered-bodies`). A body is counted
//! from its first byte (its whole declared length, when it declares one)
//! until its invocation is answered; a request that would go past the
//! budget is answered 503 with `Retry-After` at once, its body unread.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::GatewayError;

pub(crate) struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Bytes held for one buffered body, given back when dropped.
pub(crate) struct Held(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    pub fn new(total: usize) -> BodyBudget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    fn take(&self, held: &mut Held, bytes: usize) -> Result<(), GatewayError> {
        if bytes == 0 {
            return Ok(());
        }
        let over = || GatewayError::BodiesOverBudget { budget: self.total };
        let bytes = u32::try_from(bytes).map_err(|_| over())?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| over())?;
        match &mut held.0 {
            Some(all) => all.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }

    /// Reads `body`, at most `limit` bytes (413 beyond), within the budget.
    pub async fn read(
        &self,
        body: Body,
        headers: &HeaderMap,
        limit: usize,
    ) -> Result<(Bytes, Held), GatewayError> {
        let too_large = || GatewayError::BodyTooLarge { limit };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut held = Held(None);
        let mut counted = 0;
        if let Some(declared) = declared {
            counted = declared as usize;
            self.take(&mut held, counted)?;
        }
        let mut body = body;
        let mut buf = BytesMut::with_capacity(counted);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| GatewayError::BodyUnreadable(err.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
            if buf.len() > counted {
                self.take(&mut held, buf.len() - counted)?;
                counted = buf.len();
            }
        }
        Ok((buf.freeze(), held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(n: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, n.into());
        headers
    }

    #[tokio::test]
    async fn bodies_past_the_budget_are_refused_until_one_is_done() {
        let budget = BodyBudget::new(100);
        let (a, held_a) = budget
            .read(Body::from(vec![1u8; 60]), &sized(60), 1000)
            .await
            .unwrap();
        assert_eq!(a.len(), 60);
        let refused = budget
            .read(Body::from(vec![1u8; 50]), &sized(50), 1000)
            .await;
        assert_eq!(
            refused.err(),
            Some(GatewayError::BodiesOverBudget { budget: 100 })
        );
        // Without a declared length, counted as it arrives.
        let stream = futures_stream(vec![vec![0u8; 30], vec![0u8; 30]]);
        assert!(matches!(
            budget.read(stream, &HeaderMap::new(), 1000).await,
            Err(GatewayError::BodiesOverBudget { .. })
        ));
        drop(held_a);
        let (b, _held) = budget
            .read(Body::from(vec![1u8; 50]), &sized(50), 1000)
            .await
            .unwrap();
        assert_eq!(b.len(), 50);
        assert!(matches!(
            budget.read(Body::from(vec![1u8; 20]), &sized(20), 10).await,
            Err(GatewayError::BodyTooLarge { limit: 10 })
        ));
    }

    /// A body of `chunks`, with no declared length.
    fn futures_stream(chunks: Vec<Vec<u8>>) -> Body {
        struct Chunks(std::collections::VecDeque<Bytes>);
        impl http_body::Body for Chunks {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
            }
        }
        Body::new(Chunks(chunks.into_iter().map(Bytes::from).collect()))
    }
}
