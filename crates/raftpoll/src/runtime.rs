//! Dedicated runtimes: Raft and the LibreNMS link run on threads of their own,
//! so heartbeats and applies never queue behind polls for a worker (and each
//! one's CPU can be read per thread); and the task that hands the memory
//! those threads freed back to the system.

use std::io;
use std::time::Duration;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::watch;

/// Raft's worker threads: one for openraft's core and replication, one for
/// applies and snapshots, so a long apply does not hold up a heartbeat.
pub const RAFT_THREADS: usize = 2;
/// Thread name of Raft's runtime (the gRPC server runs there too).
pub const RAFT_THREAD_NAME: &str = "raft";
/// Thread name of the LibreNMS link's runtime (database only, one thread).
pub const LIBRENMS_THREAD_NAME: &str = "librenms";

/// A multi-thread tokio runtime whose threads carry `name`. Dropping it does
/// not block: a node drops it from inside its main runtime.
pub struct NamedRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl NamedRuntime {
    pub fn new(name: &str, threads: usize) -> io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where to spawn onto this runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for NamedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How often [`trim_freed_memory`] runs.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Hands the heap memory malloc keeps after frees back to the system, every
/// `every`, until `shutdown`. glibc keeps what was freed in each thread's
/// arena for that arena's next allocations, and a node has a dozen threads
/// allocating (polls, Raft, applies and snapshots, the RRD writer): a node of
/// a 100,000-device cluster held 691 MiB, of which one trim returned 369.
pub async fn trim_freed_memory(every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        // Walks every arena under its lock: off the async workers.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes malloc's own locks and only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trimming_stops_on_shutdown() {
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(trim_freed_memory(Duration::from_millis(5), shutdown));
        stop.send(true).expect("the trim task listens");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops within the deadline")
            .expect("no panic");
    }

    #[tokio::test]
    async fn tasks_run_on_named_threads_and_drop_does_not_block() {
        let runtime = NamedRuntime::new("named-test", 1).expect("runtime");
        let name = runtime
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("named-test"));
        // Dropped inside another runtime: must not panic.
        drop(runtime);
    }
}
