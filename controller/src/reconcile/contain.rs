//! A panic in one run's reconcile or publish pass stays with that run. The passes of every run
//! share one task with the watches and the publish workers: before, a panic there (a token
//! lifetime from a hostile registry made `Instant + Duration` overflow) ended the task, so
//! nothing was reconciled any more, and the process exited 0 as if stopped cleanly. Now the pass
//! fails with [`Error::Panicked`], logged at ERROR and counted
//! (`provenant_reconcile_errors_total{reason="Panic"}`), and the run is retried after
//! [`PANIC_RETRY`]; the other runs go on.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt as _;
use tracing::error;

use super::context::Error;

/// When a run whose pass panicked is tried again: later than after an ordinary error, since a
/// panic is likely to repeat.
pub const PANIC_RETRY: Duration = Duration::from_secs(60);

/// Runs one pass, turning a panic into [`Error::Panicked`]. Unwinding out of a pass is safe to
/// continue from: what passes share (the queue, the publisher's caches, the registry auth
/// state) sits behind locks that recover from poisoning, and every pass starts again from the
/// API server's copy of the run.
pub async fn contain<T>(
    step: &'static str,
    pass: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match AssertUnwindSafe(pass).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            error!(
                step,
                panic = %message,
                retry_in = ?PANIC_RETRY,
                "the pass panicked (a bug: please report it); contained to this run, which is retried"
            );
            Err(Error::Panicked { step, message })
        }
    }
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_pass_becomes_an_error_of_that_pass() {
        let panicking = async {
            let lifetime = Duration::from_secs(u64::MAX);
            let _ = std::time::Instant::now() + lifetime;
            Ok::<(), Error>(())
        };
        let error = contain("provenance", panicking).await.unwrap_err();
        assert_eq!(error.metric_label(), "Panic");
        assert!(
            error
                .to_string()
                .starts_with("provenance panicked: overflow when adding duration to instant"),
            "{error}"
        );
        // A pass that does not panic is left as it is.
        assert!(
            contain("reconcile", async { Ok::<_, Error>(7) })
                .await
                .is_ok()
        );
        assert!(matches!(
            contain("reconcile", async { Err::<(), _>(Error::NoNamespace) }).await,
            Err(Error::NoNamespace)
        ));
    }
}
