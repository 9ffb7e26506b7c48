//! A registry host that accepts TCP connections and never answers: the worst a dead or overloaded
//! registry does to a client (no refusal, no error, only the client's own timeout). Used by the
//! fairness scenarios and the `blackhole` benchmark.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use tokio::net::TcpListener;

/// A loopback listener that accepts every connection and never reads nor answers.
pub struct Blackhole {
    /// `127.0.0.1:PORT`, to name in a repository.
    pub host: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Result<Blackhole> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let host = listener.local_addr()?.to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                // Kept open, never read from nor written to.
                held.push(socket);
            }
        });
        Ok(Blackhole {
            host,
            accepted,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
