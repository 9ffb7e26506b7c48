//! The Kubernetes client: the usual configuration (KUBECONFIG, ~/.kube/config, in-cluster) plus a
//! client-side token bucket (`--kube-api-qps`, `--kube-api-burst`), so a burst of finishing runs
//! cannot flood the API server.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tower::{Layer, Service};

/// Requests per second and burst of the client-side limiter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

/// A token bucket shared by every request of one client.
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// Take a token, or say how long until one is available.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.limit.qps).min(f64::from(self.limit.burst.max(1)));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.limit.qps.max(0.001),
            ))
        }
    }
}

/// Tower layer applying a [`RateLimit`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<Bucket>>,
}

impl RateLimitLayer {
    pub fn new(limit: RateLimit) -> Self {
        RateLimitLayer {
            bucket: Arc::new(Mutex::new(Bucket {
                limit,
                tokens: f64::from(limit.burst.max(1)),
                refilled: Instant::now(),
            })),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            bucket: self.bucket.clone(),
            sleep: None,
            permit: false,
        }
    }
}

/// The service: waits for a token in `poll_ready`, so it composes with kube's internal buffer.
pub struct RateLimited<S> {
    inner: S,
    bucket: Arc<Mutex<Bucket>>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    permit: bool,
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.permit {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            let taken = self.bucket.lock().map_or(Ok(()), |mut b| b.take());
            match taken {
                Ok(()) => self.permit = true,
                Err(wait) => self.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.permit = false;
        self.inner.call(request)
    }
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no usable Kubernetes configuration (tried KUBECONFIG, ~/.kube/config and the in-cluster service account): {0}"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot create a Kubernetes client for {url}: {source}")]
    Build {
        url: String,
        #[source]
        source: kube::Error,
    },
}

/// Build the client from the usual configuration; returns it with the API URL (for messages).
pub async fn connect(limit: RateLimit) -> Result<(kube::Client, String), ClientError> {
    let config = kube::Config::infer().await.map_err(ClientError::Config)?;
    let url = config.cluster_url.to_string();
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|source| ClientError::Build {
            url: url.clone(),
            source,
        })?
        .with_layer(&RateLimitLayer::new(limit))
        .build();
    Ok((client, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_paces_at_qps() {
        let mut bucket = Bucket {
            limit: RateLimit {
                qps: 10.0,
                burst: 3,
            },
            tokens: 3.0,
            refilled: Instant::now(),
        };
        for _ in 0..3 {
            bucket.take().unwrap();
        }
        let wait = bucket.take().unwrap_err();
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }
}
