//! Who polled what, and when: the request record of a recording agent (`raftpoll-sim --record`)
//! parsed into requests, and requests grouped into polls. Pure, so the chaos checker and the
//! tests read the same record the same way.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// One SNMP request the agent answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub at_ms: u64,
    pub src: IpAddr,
    pub community: String,
}

/// One poll of one device: a burst of requests from one source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    pub start_ms: u64,
    pub end_ms: u64,
    pub src: IpAddr,
    pub requests: usize,
}

/// Parses the record's `unix_ms src_ip:port community port` lines, in time order; malformed
/// lines (a torn last line after a kill, a half-written line being flushed) are skipped.
pub fn parse_record(text: &str) -> Vec<Request> {
    let mut out: Vec<Request> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let at_ms = fields.next()?.parse().ok()?;
            let src = fields.next()?.parse::<SocketAddr>().ok()?.ip();
            let community = fields.next()?.to_string();
            fields.next()?.parse::<u16>().ok()?;
            Some(Request {
                at_ms,
                src,
                community,
            })
        })
        .collect();
    out.sort_by_key(|r| r.at_ms);
    out
}

/// Groups requests into polls, per community: a poll is a run of requests from one source
/// address, each less than `burst_gap_ms` after the previous one of that source. Requests from
/// another address never join it (two nodes never share a poll), even when they interleave.
pub fn group_polls(requests: &[Request], burst_gap_ms: u64) -> BTreeMap<String, Vec<Poll>> {
    let mut sorted: Vec<&Request> = requests.iter().collect();
    sorted.sort_by_key(|r| r.at_ms);
    let mut out: BTreeMap<String, Vec<Poll>> = BTreeMap::new();
    for r in sorted {
        let polls = out.entry(r.community.clone()).or_default();
        let open = polls
            .iter_mut()
            .rev()
            .find(|p| p.src == r.src && r.at_ms.saturating_sub(p.end_ms) < burst_gap_ms);
        match open {
            Some(p) => {
                p.end_ms = r.at_ms;
                p.requests += 1;
            }
            None => polls.push(Poll {
                start_ms: r.at_ms,
                end_ms: r.at_ms,
                src: r.src,
                requests: 1,
            }),
        }
    }
    for polls in out.values_mut() {
        polls.sort_by_key(|p| p.start_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_and_malformed_lines_are_skipped() {
        let text = "1000 127.0.0.1:5000 c0 161\nnot a line\n900 127.0.0.2:1 c1 161\n1100 127.0";
        let r = parse_record(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].at_ms, 900, "sorted by time");
        assert_eq!(r[1].community, "c0");
    }

    #[test]
    fn interleaved_bursts_of_two_sources_stay_two_polls() {
        let text = "0 127.0.0.1:1 c 161\n10 127.0.0.2:1 c 161\n20 127.0.0.1:1 c 161\n\
                    30 127.0.0.2:1 c 161\n5000 127.0.0.1:1 c 161\n";
        let polls = &group_polls(&parse_record(text), 1000)["c"];
        let shape: Vec<(u64, u64, usize)> = polls
            .iter()
            .map(|p| (p.start_ms, p.end_ms, p.requests))
            .collect();
        assert_eq!(shape, vec![(0, 20, 2), (10, 30, 2), (5000, 5000, 1)]);
    }
}
