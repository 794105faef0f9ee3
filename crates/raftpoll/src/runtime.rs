//! Dedicated runtimes: Raft and the LibreNMS link run on threads of their own,
//! so heartbeats and applies never queue behind polls for a worker (and each
//! one's CPU can be read per thread); polling runs on threads of its own too,
//! at a lower priority; and the task that hands the memory those threads
//! freed back to the system.

use std::io;
use std::time::Duration;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::watch;

/// Raft's worker threads. One: a second thread woke for most heartbeats
/// to steal a task (each wake-up costs about 100 µs on a small VM, and an
/// idle cluster's Raft CPU is mostly wake-ups). What can take long runs
/// elsewhere so heartbeats never wait for it: applies, log file I/O and a
/// snapshot's install on the blocking pool, a snapshot's encoding on a
/// thread of its own.
pub const RAFT_THREADS: usize = 1;
/// Thread name of Raft's runtime (the gRPC server runs there too).
pub const RAFT_THREAD_NAME: &str = "raft";
/// Thread name of the LibreNMS link's runtime (database only, one thread).
pub const LIBRENMS_THREAD_NAME: &str = "librenms";
/// Thread name of the polling runtime (scheduler, SNMP, ICMP, reports).
pub const POLL_THREAD_NAME: &str = "poll";
/// How much lower than the rest of the node the polling threads run (a nice
/// increment): on a saturated machine the kernel then gives Raft's threads,
/// and sled's that write the Raft log, about three times the polling
/// threads' share. A late poll costs a few seconds of one device's schedule;
/// a late heartbeat costs an election, or a node's devices moved because it
/// looked dead.
pub const POLLING_NICE: i32 = 5;

/// A multi-thread tokio runtime whose threads carry `name`. Dropping it does
/// not block: a node drops it from inside its main runtime.
pub struct NamedRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl NamedRuntime {
    pub fn new(name: &str, threads: usize) -> io::Result<Self> {
        Self::build(name, threads, 0)
    }

    /// [`NamedRuntime::new`] whose threads (workers and blocking ones) run
    /// `nice` below the process's main thread. Threads inherit their
    /// creator's priority, and an unprivileged one cannot raise its own back:
    /// create this runtime, and the node's other threads, from the main
    /// thread, never from one of its threads.
    pub fn lowered(name: &str, threads: usize, nice: i32) -> io::Result<Self> {
        Self::build(name, threads, nice)
    }

    fn build(name: &str, threads: usize, nice: i32) -> io::Result<Self> {
        let mut builder = Builder::new_multi_thread();
        builder
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all();
        if nice != 0 {
            builder.on_thread_start(move || lower_this_thread(nice));
        }
        let runtime = builder.build()?;
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

/// Sets the calling thread's nice value to the main thread's plus `nice`
/// (Linux keeps it per thread). Should that fail, the thread keeps the
/// priority it inherited.
pub(crate) fn lower_this_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: getpid and gettid have no preconditions; getpriority and
    // setpriority read their arguments only, and change this thread alone.
    unsafe {
        let main = libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t);
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, main.saturating_add(nice));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// How often [`trim_freed_memory`] runs. Between two trims a busy node's RSS
/// climbs by what its threads free and malloc keeps (about 1 MiB/s at
/// 100,000 devices over 10 nodes): every 30 s that was a saw of 25–30 MiB
/// on top of the live heap, and its tops were the peaks.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

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
        let started = std::time::Instant::now();
        let _ = tokio::task::spawn_blocking(trim).await;
        tracing::debug!(
            took_ms = started.elapsed().as_millis() as u64,
            "freed heap memory returned"
        );
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

    /// A lowered runtime's threads, blocking ones included, run `nice`
    /// below the main thread, however deep they were spawned; the others
    /// keep its priority.
    #[cfg(target_os = "linux")]
    #[test]
    fn lowered_threads_run_below_the_others() {
        fn nice_of_this_thread() -> i32 {
            // SAFETY: reads this thread's nice value only.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        }
        let main = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t) };
        let lowered = NamedRuntime::lowered("lowered-test", 1, POLLING_NICE).expect("runtime");
        let plain = NamedRuntime::new("plain-test", 1).expect("runtime");
        let (on_worker, on_blocking) = futures::executor::block_on(lowered.handle().spawn(async {
            let blocking = tokio::task::spawn_blocking(nice_of_this_thread).await;
            (nice_of_this_thread(), blocking.expect("blocking task"))
        }))
        .expect("task");
        let on_plain =
            futures::executor::block_on(plain.handle().spawn(async { nice_of_this_thread() }))
                .expect("task");
        // At the top of the range a thread cannot go lower.
        let want = (main + POLLING_NICE).min(19);
        assert_eq!((on_worker, on_blocking), (want, want));
        assert_eq!(on_plain, main);
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
