//! What each poller really asked: the simulator's request record (`unix_ms src community
//! port varbinds` per answered request) summed over each poller's measured window.

use std::collections::HashMap;
use std::io::BufRead;

/// A measured window, unix milliseconds, start inclusive, end exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Window {
    fn contains(&self, ms: u64) -> bool {
        (self.start_ms..self.end_ms).contains(&ms)
    }
}

/// Requests the agent answered in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    /// Varbinds in the answers (values and exceptions of answers without error status).
    pub varbinds: u64,
    /// Polls of one device in the window. A poll is a burst of requests to one device
    /// (UDP port) from one source address, after a silence of at least the burst gap or
    /// a change of source (the next poller starting); one cut by a window edge
    /// counts for the share of its requests inside, as its CPU time does. Pollers that
    /// poll every device at the same tick would otherwise gain or lose a whole round.
    pub polls: f64,
}

/// The open burst of one device: its requests so far, in total and per window.
#[derive(Default)]
struct Burst {
    src: String,
    last_ms: u64,
    requests: u64,
    inside: Vec<u64>,
}

impl Burst {
    /// Adds this burst's share of a poll to every window it touched.
    fn close(&self, out: &mut [Counts]) {
        if self.requests == 0 {
            return;
        }
        for (c, n) in out.iter_mut().zip(&self.inside) {
            c.polls += *n as f64 / self.requests as f64;
        }
    }
}

/// Sums the record over `windows`. One device per simulator port, so the port names the
/// device whatever community or source port the poller used. Lines that do not parse
/// (a torn last line) are skipped.
pub fn count(record: impl BufRead, windows: &[Window], burst_gap_ms: u64) -> Vec<Counts> {
    let mut out = vec![Counts::default(); windows.len()];
    let mut bursts: HashMap<u16, Burst> = HashMap::new();
    for line in record.lines().map_while(Result::ok) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(ms), Some(src), Some(port), Some(varbinds)) = (
            f.first().and_then(|v| v.parse::<u64>().ok()),
            f.get(1),
            f.get(3).and_then(|v| v.parse::<u16>().ok()),
            f.get(4).and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let burst = bursts.entry(port).or_default();
        if burst.requests > 0
            && (ms.saturating_sub(burst.last_ms) >= burst_gap_ms || burst.src != *src)
        {
            burst.close(&mut out);
            *burst = Burst::default();
        }
        if burst.inside.is_empty() {
            burst.inside = vec![0; windows.len()];
            burst.src = src.to_string();
        }
        burst.last_ms = ms;
        burst.requests += 1;
        if let Some(i) = windows.iter().position(|w| w.contains(ms)) {
            burst.inside[i] += 1;
            out[i].requests += 1;
            out[i].varbinds += varbinds;
        }
    }
    for burst in bursts.values() {
        burst.close(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_sum_requests_varbinds_and_polls() {
        // Port 1: polls at 0, 10 000 and 20 000 ms (three requests each); port 2 polls
        // at 5 000 and 15 000 with a retry 1 s into the second poll.
        let mut text = String::new();
        for start in [0u64, 10_000, 20_000] {
            for k in 0..3 {
                text.push_str(&format!("{} 127.0.0.1:9 c 1 25\n", start + k));
            }
        }
        for line in [
            "5000 127.0.0.1:9 c 2 13",
            "15000 127.0.0.1:9 c 2 13",
            "16000 127.0.0.1:9 c 2 13",
            "16001 127.0.0.1:9 c 2", // no varbinds field: skipped
            "garbage",
        ] {
            text.push_str(line);
            text.push('\n');
        }
        let windows = [
            Window {
                start_ms: 0,
                end_ms: 10_000,
            },
            Window {
                start_ms: 10_000,
                end_ms: 30_000,
            },
        ];
        let counts = count(text.as_bytes(), &windows, 4_000);
        assert_eq!(
            counts[0],
            Counts {
                requests: 4,
                varbinds: 3 * 25 + 13,
                polls: 2.0
            }
        );
        assert_eq!(
            counts[1],
            Counts {
                requests: 8,
                varbinds: 6 * 25 + 2 * 13,
                polls: 3.0
            }
        );
    }

    #[test]
    fn the_next_poller_starts_a_new_poll_however_soon() {
        // One poller's last poll runs past its window; the next one starts 1 s later.
        let text = "9990 127.0.0.1:7 c 1 5\n10010 127.0.0.1:7 c 1 5\n\
                    11000 127.0.0.1:8 c 1 5\n11010 127.0.0.1:8 c 1 5\n";
        let w = [
            Window {
                start_ms: 0,
                end_ms: 10_000,
            },
            Window {
                start_ms: 10_500,
                end_ms: 20_000,
            },
        ];
        let counts = count(text.as_bytes(), &w, 4_000);
        assert_eq!((counts[0].polls, counts[1].polls), (0.5, 1.0));
    }

    #[test]
    fn a_poll_cut_by_the_window_counts_for_its_share_inside() {
        // Four requests of one poll, one of them before the window.
        let text = "9990 a c 1 5\n10010 a c 1 5\n10020 a c 1 5\n10030 a c 1 5\n";
        let w = [Window {
            start_ms: 10_000,
            end_ms: 20_000,
        }];
        assert_eq!(
            count(text.as_bytes(), &w, 4_000)[0],
            Counts {
                requests: 3,
                varbinds: 15,
                polls: 0.75
            }
        );
    }
}
