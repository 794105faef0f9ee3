//! Dedicated runtimes: Raft and the LibreNMS link run on threads of their own,
//! so heartbeats and applies never queue behind polls for a worker (and each
//! one's CPU can be read per thread).

use std::io;
use tokio::runtime::{Builder, Handle, Runtime};

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

#[cfg(test)]
mod tests {
    use super::*;

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
