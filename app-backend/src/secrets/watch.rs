//! Wakes a reconcile loop whenever the secrets folder changes (inotify via
//! `notify`), and at least every poll interval in case events are missed or
//! the folder does not exist yet.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// Runs `reconcile` now, after every change in `dir`, and every `interval`;
/// never returns (the task is dropped at shutdown).
pub async fn watch_dir<F, Fut>(dir: PathBuf, interval: Duration, mut reconcile: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let wake = Arc::new(Notify::new());
    let mut watcher: Option<RecommendedWatcher> = None;
    loop {
        if watcher.is_none() {
            watcher = start_watcher(&dir, wake.clone());
        }
        reconcile().await;
        tokio::select! {
            () = wake.notified() => {
                // An atomic rename produces several events: let them settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn start_watcher(dir: &Path, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
    if !dir.is_dir() {
        return None;
    }
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            wake.notify_one();
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start inotify watcher; relying on polling");
            return None;
        }
    };
    match w.watch(dir, RecursiveMode::NonRecursive) {
        Ok(()) => {
            tracing::debug!(dir = %dir.display(), "watching secrets folder");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch secrets folder; relying on polling");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[tokio::test]
    async fn a_change_wakes_the_loop_long_before_the_poll_interval() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let task = tokio::spawn(watch_dir(
            dir.path().to_path_buf(),
            Duration::from_secs(3600),
            move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            },
        ));
        let start = Instant::now();
        while calls.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the watcher start, then write the way the sidecar does (temp + rename).
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(dir.path().join(".db.json.tmp"), b"{}").unwrap();
        std::fs::rename(dir.path().join(".db.json.tmp"), dir.path().join("db.json")).unwrap();
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no wake-up after a change"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
    }

    #[tokio::test]
    async fn polling_covers_a_folder_that_appears_later() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("secrets");
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let task = tokio::spawn(watch_dir(
            dir.clone(),
            Duration::from_millis(50),
            move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            calls.load(Ordering::SeqCst) >= 3,
            "polls while the folder is absent"
        );
        std::fs::create_dir(&dir).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(calls.load(Ordering::SeqCst) > before);
        task.abort();
    }
}
