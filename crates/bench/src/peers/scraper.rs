//! The scraper snmp_exporter needs: every target fetched once per interval, start times
//! spread evenly over the interval, from a few threads. Its own CPU is the benchmark's,
//! not the exporter's.

use super::super::harness::http_get;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One scrape: when it began (unix ms) and whether it returned the module's metrics.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub at_ms: u64,
    pub ok: bool,
    pub error: Option<String>,
}

/// What to scrape and for how long.
pub struct Plan<'a> {
    pub exporter: SocketAddr,
    pub module: &'a str,
    /// UDP ports of the targets on 127.0.0.1.
    pub targets: &'a [u16],
    pub interval: Duration,
    pub threads: usize,
    /// No scrape starts at or after this instant.
    pub until: Instant,
    /// A metric name every good answer holds.
    pub expect: &'a str,
}

/// Scrapes until `plan.until` or until `stop` is set; returns every scrape made.
pub fn run(plan: &Plan, stop: &AtomicBool) -> Vec<Scrape> {
    let start = Instant::now();
    let threads = plan.threads.clamp(1, plan.targets.len().max(1));
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || worker(plan, stop, start, t, threads)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Thread `t` of `threads` scrapes targets t, t + threads, …; target i starts at
/// `i / n` of every interval.
fn worker(plan: &Plan, stop: &AtomicBool, start: Instant, t: usize, threads: usize) -> Vec<Scrape> {
    let n = plan.targets.len() as u32;
    let mut done = Vec::new();
    // Bounded by time (`until`) and so by count: no round starts after `until`.
    let span = plan.until.saturating_duration_since(start);
    let rounds = (span.as_secs_f64() / plan.interval.as_secs_f64().max(1e-3)).ceil() as u32;
    for round in 0..rounds {
        for i in (t..plan.targets.len()).step_by(threads) {
            let at = start + plan.interval * round + plan.interval * i as u32 / n;
            if at >= plan.until || !sleep_until(at, stop) {
                return done;
            }
            let path = format!(
                "/snmp?target=127.0.0.1:{}&module={}",
                plan.targets[i], plan.module
            );
            let at_ms = unix_ms();
            let result = http_get(plan.exporter, &path, plan.interval);
            let (ok, error) = match result {
                Ok((200, body)) if contains(&body, plan.expect.as_bytes()) => (true, None),
                Ok((status, body)) => (
                    false,
                    Some(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                    )),
                ),
                Err(e) => (false, Some(e.to_string())),
            };
            done.push(Scrape { at_ms, ok, error });
        }
    }
    done
}

/// Sleeps until `at` in short steps; false when `stop` was set meanwhile.
fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A tiny HTTP server: target port 3 fails with 500, others answer a metric.
    fn serve(listener: TcpListener, stop: &AtomicBool) -> Vec<String> {
        listener.set_nonblocking(true).unwrap();
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let answer = if path.contains("target=127.0.0.1:3&") {
                "HTTP/1.0 500 Internal Server Error\r\n\r\nboom".to_string()
            } else {
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nifHCInOctets{ifIndex=\"1\"} 7\n"
                    .to_string()
            };
            conn.write_all(answer.as_bytes()).unwrap();
            seen.push(path);
        }
        seen
    }

    #[test]
    fn every_target_once_per_interval_until_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_stop = AtomicBool::new(false);
        let scraper_stop = AtomicBool::new(false);
        let (scrapes, seen) = std::thread::scope(|s| {
            let server = s.spawn(|| serve(listener, &server_stop));
            // Targets start at 0, 1/3 and 2/3 of each 300 ms interval; rounds at 0, 300
            // and 600 ms; the last one to start before 750 ms is target 1 of round 2.
            let plan = Plan {
                exporter: addr,
                module: "m",
                targets: &[1, 2, 3],
                interval: Duration::from_millis(300),
                threads: 2,
                until: Instant::now() + Duration::from_millis(750),
                expect: "ifHCInOctets{",
            };
            let scrapes = run(&plan, &scraper_stop);
            server_stop.store(true, Ordering::Relaxed);
            (scrapes, server.join().unwrap())
        });
        assert_eq!(scrapes.len(), 8, "{scrapes:?}");
        assert_eq!(seen.len(), 8);
        assert!(
            seen.iter()
                .all(|p| p.starts_with("/snmp?target=127.0.0.1:") && p.ends_with("&module=m"))
        );
        let failed: Vec<&Scrape> = scrapes.iter().filter(|s| !s.ok).collect();
        assert_eq!(failed.len(), 2, "{scrapes:?}");
        assert!(failed.iter().all(|s| {
            s.error
                .as_deref()
                .is_some_and(|e| e.starts_with("HTTP 500"))
        }));
    }
}
