//! Wiring of the stages: bounded channels, cancellation, progress.

pub mod bench;
pub mod copy;
pub mod human;
pub mod metrics;
pub mod progress;
pub mod status;
pub mod verify;
pub mod verify_values;
pub mod watermark;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::source::Source;

/// The one quit flag: the first error or Ctrl-C sets it, and every stage stops at its next
/// batch.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Error::Cancelled)` once the flag is set.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Runs `work` for every source, at most `readers` at once, in rank order of start. The first
/// error cancels the rest.
pub(crate) fn for_each_source<T: Send>(
    sources: &[Box<dyn Source>],
    readers: usize,
    cancel: &Cancel,
    work: impl Fn(usize, &dyn Source) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..sources.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..readers.clamp(1, sources.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= sources.len() || cancel.is_cancelled() {
                    break;
                }
                let r = work(i, sources[i].as_ref());
                if r.is_err() {
                    cancel.cancel();
                }
                if let Ok(mut v) = results.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().map_err(|_| Error::Internal("reader thread panicked".into()))?;
    // Report the first real error, not the cancellations it caused.
    let mut out = Vec::with_capacity(results.len());
    let mut first_cancel = None;
    for r in results {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(Error::Cancelled)) | None => first_cancel = Some(Error::Cancelled),
            Some(Err(e)) => return Err(e),
        }
    }
    match first_cancel {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
