//! The simulated agents: devices keyed by (UDP port, community), and the request handler
//! that turns one SNMP v1/v2c request datagram into one response datagram.

use std::collections::HashMap;
use std::sync::Arc;

use super::ber::{self, Reader, tag};
use super::misbehave::Misbehave;
use super::snmprec::{Entry, Recording, Value};

/// Default maximum response size: one unfragmented Ethernet frame (1500 − IP − UDP).
pub const DEFAULT_MAX_SIZE: usize = 1472;

/// Largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65507;

/// Error-status values used in responses.
mod status {
    pub const NO_ERROR: i64 = 0;
    pub const TOO_BIG: i64 = 1;
    pub const NO_SUCH_NAME: i64 = 2;
    pub const NO_ACCESS: i64 = 6;
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    pub port: u16,
    pub community: Vec<u8>,
    pub recording: Arc<Recording>,
    /// Fault injection: how this device mangles its answers (None: it behaves).
    pub misbehave: Option<Misbehave>,
}

/// All devices, indexed for lookup by (local port, community).
#[derive(Debug)]
pub struct Agent {
    devices: Vec<Device>,
    by_port: HashMap<u16, HashMap<Box<[u8]>, u32>>,
    max_size: usize,
}

/// What the handler did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response is in the output buffer; carries the device index.
    Respond(u32),
    /// Not a well-formed v1/v2c request: dropped.
    Malformed,
    /// Well-formed, but no device has this community on this port: dropped.
    UnknownCommunity,
}

impl Agent {
    /// Builds the lookup index; `max_size` is clamped to 64..=65507 bytes. Later duplicates of a (port, community) pair are ignored.
    pub fn new(devices: Vec<Device>, max_size: usize) -> Self {
        let mut by_port: HashMap<u16, HashMap<Box<[u8]>, u32>> = HashMap::new();
        for (i, d) in devices.iter().enumerate() {
            by_port
                .entry(d.port)
                .or_default()
                .entry(d.community.clone().into())
                .or_insert(i as u32);
        }
        Self {
            devices,
            by_port,
            max_size: max_size.clamp(64, MAX_UDP_PAYLOAD),
        }
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The UDP ports that have at least one device, sorted.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.by_port.keys().copied().collect();
        ports.sort_unstable();
        ports
    }
}

/// Per-socket scratch state, reused across requests so the hot path does not allocate.
#[derive(Debug, Default)]
pub struct Handler {
    oid: Vec<u32>,
    arcs: Vec<u32>,
    vbs: Vec<ReqVarBind>,
    body: Vec<u8>,
    value: Vec<u8>,
    cursors: Vec<Option<usize>>,
    /// Varbinds in the last answer (see [`Handler::varbinds`]).
    varbinds: u32,
}

#[derive(Debug, Clone)]
struct ReqVarBind {
    /// Range of the raw OID TLV in the request.
    oid_tlv: (usize, usize),
    /// Range of the decoded arcs in `Handler::arcs`.
    arcs: (usize, usize),
}

/// The parts of a request the response needs.
struct Request<'a> {
    version: i64,
    community_tlv: &'a [u8],
    community: &'a [u8],
    pdu_tag: u8,
    request_id_tlv: &'a [u8],
    a: i64,
    b: i64,
    /// Raw content of the request's varbind list (echoed in v1 error responses).
    varbind_list: &'a [u8],
}

impl Handler {
    /// Handles one datagram received on `port`. `secs` is the time since the simulator
    /// started (drives moving counters). On `Respond`, `out` holds the response.
    pub fn handle(
        &mut self,
        agent: &Agent,
        port: u16,
        req: &[u8],
        secs: f64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        self.varbinds = 0;
        let Some(r) = self.parse(req) else {
            return Outcome::Malformed;
        };
        let Some(&dev) = agent.by_port.get(&port).and_then(|m| m.get(r.community)) else {
            return Outcome::UnknownCommunity;
        };
        let rec = &agent.devices[dev as usize].recording;
        let max = agent.max_size;
        let v1 = r.version == 0;
        let (mut err, mut index) = (status::NO_ERROR, 0);
        self.body.clear();
        match r.pdu_tag {
            tag::GET | tag::GET_NEXT => {
                let next = r.pdu_tag == tag::GET_NEXT;
                for i in 0..self.vbs.len() {
                    let vb = self.vbs[i].clone();
                    let arcs = &self.arcs[vb.arcs.0..vb.arcs.1];
                    let found = if next {
                        next_index(rec, arcs, v1)
                    } else {
                        exact(rec, arcs, v1)
                    };
                    match found {
                        Ok(e) => push_entry(&mut self.body, &mut self.value, &rec.entries[e], secs),
                        Err(_) if v1 => {
                            (err, index) = (status::NO_SUCH_NAME, i as i64 + 1);
                            break;
                        }
                        Err(exc) => {
                            push_exception(&mut self.body, &req[vb.oid_tlv.0..vb.oid_tlv.1], exc)
                        }
                    }
                }
                if err == status::NO_ERROR && message_size(&r, self.body.len()) > max {
                    err = status::TOO_BIG;
                }
            }
            tag::GET_BULK if !v1 => self.bulk(rec, &r, req, secs, max),
            tag::SET => {
                (err, index) = (
                    if v1 {
                        status::NO_SUCH_NAME
                    } else {
                        status::NO_ACCESS
                    },
                    1,
                )
            }
            _ => return Outcome::Malformed,
        }
        if err != status::NO_ERROR {
            self.body.clear();
            // v1 echoes the request's varbinds; v2c sends an empty list for tooBig.
            if v1 || err != status::TOO_BIG {
                self.body.extend_from_slice(r.varbind_list);
            }
            if message_size(&r, self.body.len()) > max {
                self.body.clear();
            }
        } else {
            self.varbinds = count_tlvs(&self.body);
        }
        write_message(out, &r, err, index, &self.body);
        Outcome::Respond(dev)
    }

    /// Varbinds in the list of the last answer (values and exceptions alike), or 0
    /// when it was an error response or the datagram was dropped. Load tests
    /// count what a poller really fetched with it.
    pub fn varbinds(&self) -> u32 {
        self.varbinds
    }

    /// GETBULK: non-repeaters get one GETNEXT each, then up to max-repetitions rows of the
    /// rest. Stops early when the response would exceed `max` (RFC 3416 §4.2.3: fewer
    /// varbinds, not tooBig) or when every repeater reached the end of the MIB.
    fn bulk(&mut self, rec: &Recording, r: &Request, req: &[u8], secs: f64, max: usize) {
        let n = self.vbs.len();
        let non_rep = (r.a.max(0) as usize).min(n);
        let reps = r.b.max(0) as usize;
        let fits = |body: &mut Vec<u8>, mark: usize| {
            if message_size(r, body.len()) > max {
                body.truncate(mark);
                false
            } else {
                true
            }
        };
        for i in 0..non_rep {
            let vb = self.vbs[i].clone();
            let mark = self.body.len();
            match next_index(rec, &self.arcs[vb.arcs.0..vb.arcs.1], false) {
                Ok(e) => push_entry(&mut self.body, &mut self.value, &rec.entries[e], secs),
                Err(exc) => push_exception(&mut self.body, &req[vb.oid_tlv.0..vb.oid_tlv.1], exc),
            }
            if !fits(&mut self.body, mark) {
                return;
            }
        }
        if non_rep == n {
            return;
        }
        // Cursor per repeater: index of the last entry returned, or None at the end.
        self.cursors.clear();
        for vb in &self.vbs[non_rep..] {
            let arcs = &self.arcs[vb.arcs.0..vb.arcs.1];
            self.cursors.push(next_index(rec, arcs, false).ok());
        }
        for row in 0..reps {
            let mut live = false;
            for (k, vb) in self.vbs[non_rep..].iter().enumerate() {
                let mark = self.body.len();
                let cur = if row == 0 {
                    self.cursors[k]
                } else {
                    self.cursors[k]
                        .map(|c| c + 1)
                        .filter(|c| *c < rec.entries.len())
                };
                self.cursors[k] = cur;
                match cur {
                    Some(e) => {
                        live = true;
                        push_entry(&mut self.body, &mut self.value, &rec.entries[e], secs);
                    }
                    None => {
                        // endOfMibView names the last OID returned for this column.
                        let oid = match row {
                            0 => &req[vb.oid_tlv.0..vb.oid_tlv.1],
                            _ => &rec.entries[rec.entries.len() - 1].oid_tlv[..],
                        };
                        push_exception(&mut self.body, oid, tag::END_OF_MIB_VIEW);
                    }
                }
                if !fits(&mut self.body, mark) {
                    return;
                }
            }
            if !live {
                return;
            }
        }
    }

    /// Parses a v1/v2c request; fills `self.vbs`/`self.arcs`.
    fn parse<'a>(&mut self, req: &'a [u8]) -> Option<Request<'a>> {
        let mut m = Reader::new(Reader::new(req).expect(tag::SEQUENCE)?);
        let version = ber::decode_int(m.expect(tag::INTEGER)?)?;
        if version != 0 && version != 1 {
            return None;
        }
        let (t, community, community_tlv) = m.tlv()?;
        if t != tag::OCTET_STRING {
            return None;
        }
        let (pdu_tag, pdu, _) = m.tlv()?;
        let mut p = Reader::new(pdu);
        let (t, _, request_id_tlv) = p.tlv()?;
        // request-id is an Integer32: at most 4 content bytes (5 with a sign pad is invalid).
        if t != tag::INTEGER || request_id_tlv.len() > 6 {
            return None;
        }
        let a = ber::decode_int(p.expect(tag::INTEGER)?)?;
        let b = ber::decode_int(p.expect(tag::INTEGER)?)?;
        let varbind_list = p.expect(tag::SEQUENCE)?;
        let mut list = Reader::new(varbind_list);
        self.vbs.clear();
        self.arcs.clear();
        while !list.is_empty() {
            let mut vb = Reader::new(list.expect(tag::SEQUENCE)?);
            let (t, oid, oid_tlv) = vb.tlv()?;
            if t != tag::OID {
                return None;
            }
            vb.tlv()?;
            // Offsets into `req`: both slices borrow from it.
            let start = oid_tlv.as_ptr() as usize - req.as_ptr() as usize;
            ber::decode_oid(oid, &mut self.oid)?;
            let a0 = self.arcs.len();
            self.arcs.extend_from_slice(&self.oid);
            self.vbs.push(ReqVarBind {
                oid_tlv: (start, start + oid_tlv.len()),
                arcs: (a0, self.arcs.len()),
            });
        }
        Some(Request {
            version,
            community_tlv,
            community,
            pdu_tag,
            request_id_tlv,
            a,
            b,
            varbind_list,
        })
    }
}

/// Exact match for GET. Err carries the exception tag.
fn exact(rec: &Recording, oid: &[u32], v1: bool) -> Result<usize, u8> {
    match rec.entries.binary_search_by(|e| e.oid[..].cmp(oid)) {
        Ok(i) if !(v1 && rec.entries[i].is_counter64) => Ok(i),
        Ok(_) => Err(tag::NO_SUCH_OBJECT),
        Err(i) => {
            // noSuchInstance when a neighbour looks like an instance of the same object:
            // the request extends the neighbour's parent (scalar `.0` / one-arc index).
            let near = |e: &Entry| {
                let parent = &e.oid[..e.oid.len() - 1];
                oid.len() > parent.len() && oid.starts_with(parent)
            };
            let before = i.checked_sub(1).map(|j| &rec.entries[j]);
            if before.into_iter().chain(rec.entries.get(i)).any(near) {
                Err(tag::NO_SUCH_INSTANCE)
            } else {
                Err(tag::NO_SUCH_OBJECT)
            }
        }
    }
}

/// First entry strictly after `oid` (v1 skips Counter64 objects).
fn next_index(rec: &Recording, oid: &[u32], v1: bool) -> Result<usize, u8> {
    let mut i = match rec.entries.binary_search_by(|e| e.oid[..].cmp(oid)) {
        Ok(i) => i + 1,
        Err(i) => i,
    };
    while v1 && rec.entries.get(i).is_some_and(|e| e.is_counter64) {
        i += 1;
    }
    if i < rec.entries.len() {
        Ok(i)
    } else {
        Err(tag::END_OF_MIB_VIEW)
    }
}

fn push_entry(body: &mut Vec<u8>, scratch: &mut Vec<u8>, e: &Entry, secs: f64) {
    let value: &[u8] = match &e.value {
        Value::Static(tlv) => tlv,
        Value::Moving(m) => {
            scratch.clear();
            m.encode_at(secs, scratch);
            scratch
        }
    };
    ber::put_header(body, tag::SEQUENCE, e.oid_tlv.len() + value.len());
    body.extend_from_slice(&e.oid_tlv);
    body.extend_from_slice(value);
}

fn push_exception(body: &mut Vec<u8>, oid_tlv: &[u8], exc: u8) {
    ber::put_header(body, tag::SEQUENCE, oid_tlv.len() + 2);
    body.extend_from_slice(oid_tlv);
    body.extend_from_slice(&[exc, 0]);
}

/// Size of the response message whose varbind list content is `body_len` bytes, with the
/// largest error fields (so a later error response never outgrows the estimate).
fn message_size(r: &Request, body_len: usize) -> usize {
    let pdu = r.request_id_tlv.len() + 3 + 4 + ber::tlv_size(body_len);
    let msg = 3 + r.community_tlv.len() + ber::tlv_size(pdu);
    ber::tlv_size(msg)
}

fn write_message(out: &mut Vec<u8>, r: &Request, err: i64, index: i64, body: &[u8]) {
    let fields = int_size(err) + int_size(index);
    let pdu = r.request_id_tlv.len() + fields + ber::tlv_size(body.len());
    let msg = 3 + r.community_tlv.len() + ber::tlv_size(pdu);
    out.reserve(ber::tlv_size(msg));
    ber::put_header(out, tag::SEQUENCE, msg);
    ber::put_int(out, tag::INTEGER, r.version);
    out.extend_from_slice(r.community_tlv);
    ber::put_header(out, tag::RESPONSE, pdu);
    out.extend_from_slice(r.request_id_tlv);
    ber::put_int(out, tag::INTEGER, err);
    ber::put_int(out, tag::INTEGER, index);
    ber::put_header(out, tag::SEQUENCE, body.len());
    out.extend_from_slice(body);
}

/// Number of TLVs in a well-formed concatenation of them (a varbind list's content).
fn count_tlvs(list: &[u8]) -> u32 {
    let mut r = Reader::new(list);
    let mut n = 0;
    while r.tlv().is_some() {
        n += 1;
    }
    n
}

/// Encoded size of a small non-negative INTEGER TLV.
fn int_size(v: i64) -> usize {
    match v {
        0..=0x7f => 3,
        0x80..=0x7fff => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ber::{decode_response, encode_request};
    use crate::snmprec::LoadOptions;
    use rand::{Rng, SeedableRng};

    const TEXT: &str = "1.3.6.1.2.1.1.1.0|4|descr\n1.3.6.1.2.1.1.3.0|67|500\n\
        1.3.6.1.2.1.2.2.1.10.1|65:numeric|rate=1000,initial=4294967000\n\
        1.3.6.1.2.1.2.2.1.10.2|65|7\n1.3.6.1.2.1.31.1.1.1.6.1|70|9\n";

    fn agent(max_size: usize) -> Agent {
        let rec = Arc::new(Recording::parse(TEXT.as_bytes(), LoadOptions::default()));
        let dev = |port, c: &str| Device {
            port,
            community: c.as_bytes().to_vec(),
            recording: rec.clone(),
            misbehave: None,
        };
        Agent::new(vec![dev(161, "a"), dev(161, "b"), dev(162, "a")], max_size)
    }

    fn ask(
        agent: &Agent,
        port: u16,
        req: &[u8],
        secs: f64,
    ) -> (Outcome, Option<super::ber::DecodedResponse>) {
        let mut out = Vec::new();
        let outcome = Handler::default().handle(agent, port, req, secs, &mut out);
        (outcome, decode_response(&out))
    }

    fn oid(s: &str) -> Vec<u32> {
        crate::snmprec::parse_oid(s).unwrap()
    }

    #[test]
    fn devices_by_port_and_community() {
        let a = agent(DEFAULT_MAX_SIZE);
        let o = oid("1.3.6.1.2.1.1.1.0");
        let req = encode_request(1, b"b", tag::GET, 42, 0, 0, &[&o]).unwrap();
        assert_eq!(ask(&a, 161, &req, 0.0).0, Outcome::Respond(1));
        assert_eq!(ask(&a, 162, &req, 0.0).0, Outcome::UnknownCommunity);
        let req = encode_request(1, b"a", tag::GET, 42, 0, 0, &[&o]).unwrap();
        assert_eq!(ask(&a, 162, &req, 0.0).0, Outcome::Respond(2));
        assert_eq!(a.ports(), vec![161, 162]);
    }

    #[test]
    fn get_values_and_exceptions() {
        let a = agent(DEFAULT_MAX_SIZE);
        let oids = [
            oid("1.3.6.1.2.1.1.1.0"),
            oid("1.3.6.1.2.1.1.1.1"),
            oid("1.3.6.1.2.1.1.2"),
            oid("1.3.6.1.2.1.2.2.1.10.1"),
            oid("1.3.6.1.2.1.1.3.0"),
        ];
        let refs: Vec<&[u32]> = oids.iter().map(|o| &o[..]).collect();
        let req = encode_request(1, b"a", tag::GET, -7, 0, 0, &refs).unwrap();
        let (_, resp) = ask(&a, 161, &req, 1.0);
        let (rid, st, _, vbs) = resp.unwrap();
        assert_eq!((rid, st), (-7, 0));
        assert_eq!(
            vbs[0],
            (oids[0].clone(), tag::OCTET_STRING, b"descr".to_vec())
        );
        assert_eq!(vbs[1].1, tag::NO_SUCH_INSTANCE);
        assert_eq!(vbs[2].1, tag::NO_SUCH_OBJECT);
        // 4294967000 + 1000 wraps at 2^32.
        assert_eq!(
            vbs[3].2,
            (4294968000u64 - (1 << 32)).to_be_bytes()[6..].to_vec()
        );
        // Static sysUpTime ticks at 100/s: 500 + 100 = 600.
        assert_eq!(vbs[4].2, vec![0x02, 0x58]);
    }

    #[test]
    fn v1_hides_counter64_and_reports_no_such_name() {
        let a = agent(DEFAULT_MAX_SIZE);
        let c64 = oid("1.3.6.1.2.1.31.1.1.1.6.1");
        let req = encode_request(
            0,
            b"a",
            tag::GET,
            1,
            0,
            0,
            &[&oid("1.3.6.1.2.1.1.1.0"), &c64],
        )
        .unwrap();
        let (_, resp) = ask(&a, 161, &req, 0.0);
        let (_, st, idx, vbs) = resp.unwrap();
        assert_eq!((st, idx), (status::NO_SUCH_NAME, 2));
        assert_eq!(vbs[1].1, tag::NULL, "v1 errors echo the request varbinds");
        let last32 = oid("1.3.6.1.2.1.2.2.1.10.2");
        let req = encode_request(0, b"a", tag::GET_NEXT, 1, 0, 0, &[&last32]).unwrap();
        let (_, st, idx, _) = ask(&a, 161, &req, 0.0).1.unwrap();
        assert_eq!((st, idx), (status::NO_SUCH_NAME, 1));
        let req = encode_request(0, b"a", tag::GET_BULK, 1, 0, 5, &[&last32]).unwrap();
        assert_eq!(ask(&a, 161, &req, 0.0).0, Outcome::Malformed);
    }

    #[test]
    fn getnext_walks_to_end_of_mib_view() {
        let a = agent(DEFAULT_MAX_SIZE);
        let mut cur = oid("1.3");
        let mut seen = 0;
        loop {
            let req = encode_request(1, b"a", tag::GET_NEXT, 3, 0, 0, &[&cur]).unwrap();
            let (_, _, _, vbs) = ask(&a, 161, &req, 0.0).1.unwrap();
            if vbs[0].1 == tag::END_OF_MIB_VIEW {
                assert_eq!(vbs[0].0, cur);
                break;
            }
            assert!(vbs[0].0 > cur);
            cur = vbs[0].0.clone();
            seen += 1;
        }
        assert_eq!(seen, 5);
    }

    #[test]
    fn getbulk_repeats_and_ends() {
        let a = agent(DEFAULT_MAX_SIZE);
        let req = encode_request(
            1,
            b"a",
            tag::GET_BULK,
            9,
            1,
            10,
            &[
                &oid("1.3.6.1.2.1.1"),
                &oid("1.3.6.1.2.1.2.2.1.10"),
                &oid("1.3.6.1.2.1.31"),
            ],
        )
        .unwrap();
        let (_, st, _, vbs) = ask(&a, 161, &req, 0.0).1.unwrap();
        assert_eq!(st, 0);
        let names: Vec<String> = vbs
            .iter()
            .map(|(o, t, _)| {
                format!(
                    "{}:{t:x}",
                    o.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(".")
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "1.3.6.1.2.1.1.1.0:4",
                "1.3.6.1.2.1.2.2.1.10.1:41",
                "1.3.6.1.2.1.31.1.1.1.6.1:46",
                "1.3.6.1.2.1.2.2.1.10.2:41",
                "1.3.6.1.2.1.31.1.1.1.6.1:82",
                "1.3.6.1.2.1.31.1.1.1.6.1:46",
                "1.3.6.1.2.1.31.1.1.1.6.1:82",
                // The first row with every repeater at the end closes the answer.
                "1.3.6.1.2.1.31.1.1.1.6.1:82",
                "1.3.6.1.2.1.31.1.1.1.6.1:82",
            ]
        );
    }

    #[test]
    fn size_limit_truncates_bulk_and_fails_get_with_too_big() {
        let rec: String = (1..=200)
            .map(|i| format!("1.3.6.1.4.1.99.1.{i}|4|{}\n", "x".repeat(40)))
            .collect();
        let rec = Arc::new(Recording::parse(rec.as_bytes(), LoadOptions::default()));
        let a = Agent::new(
            vec![Device {
                port: 161,
                community: b"c".to_vec(),
                recording: rec,
                misbehave: None,
            }],
            DEFAULT_MAX_SIZE,
        );
        let start = oid("1.3.6.1.4.1.99");
        let req = encode_request(1, b"c", tag::GET_BULK, 5, 0, 100, &[&start]).unwrap();
        let mut out = Vec::new();
        Handler::default().handle(&a, 161, &req, 0.0, &mut out);
        assert!(out.len() <= DEFAULT_MAX_SIZE, "{}", out.len());
        let (_, st, _, vbs) = decode_response(&out).unwrap();
        assert_eq!(st, 0);
        assert!(vbs.len() > 20 && vbs.len() < 100, "{}", vbs.len());
        let oids: Vec<Vec<u32>> = (1..=60)
            .map(|i| oid(&format!("1.3.6.1.4.1.99.1.{i}")))
            .collect();
        let refs: Vec<&[u32]> = oids.iter().map(|o| &o[..]).collect();
        let req = encode_request(1, b"c", tag::GET, 6, 0, 0, &refs).unwrap();
        let (_, st, idx, vbs) = ask(&a, 161, &req, 0.0).1.unwrap();
        assert_eq!((st, idx, vbs.len()), (status::TOO_BIG, 0, 0));
    }

    #[test]
    fn varbinds_counts_the_answer_list() {
        let a = agent(DEFAULT_MAX_SIZE);
        let mut h = Handler::default();
        let mut out = Vec::new();
        let mut count =
            |pdu: u8, version: i64, community: &[u8], oids: &[&str]| {
                let oids: Vec<Vec<u32>> = oids.iter().map(|o| oid(o)).collect();
                let refs: Vec<&[u32]> = oids.iter().map(|o| &o[..]).collect();
                let req = encode_request(version, community, pdu, 1, 0, 3, &refs).unwrap();
                h.handle(&a, 161, &req, 0.0, &mut out);
                let listed = decode_response(&out).map_or(0, |(_, st, _, vbs)| {
                    if st == 0 { vbs.len() as u32 } else { u32::MAX }
                });
                (h.varbinds(), listed)
            };
        // Values and exceptions alike, as many as the answer lists.
        let get = ["1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.9.0"];
        assert_eq!(count(tag::GET, 1, b"a", &get), (2, 2));
        // GETBULK, 3 repetitions of 2 columns; the last row ends at endOfMibView.
        let bulk = ["1.3.6.1.2.1.2.2.1.10", "1.3.6.1.2.1.31"];
        let (n, listed) = count(tag::GET_BULK, 1, b"a", &bulk);
        assert_eq!((n, listed), (6, 6));
        // Error answers (v1 noSuchName echoes the request) and drops count nothing.
        assert_eq!(count(tag::GET, 0, b"a", &["1.3.6.1.2.1.31.1.1.1.6.1"]).0, 0);
        assert_eq!(count(tag::SET, 1, b"a", &get).0, 0);
        assert_eq!(count(tag::GET, 1, b"nobody", &get).0, 0);
        assert_eq!(count(tag::GET, 1, b"a", &get).0, 2);
    }

    #[test]
    fn set_is_refused() {
        let a = agent(DEFAULT_MAX_SIZE);
        let req = encode_request(1, b"a", tag::SET, 2, 0, 0, &[&oid("1.3.6.1.2.1.1.1.0")]).unwrap();
        let (_, st, idx, _) = ask(&a, 161, &req, 0.0).1.unwrap();
        assert_eq!((st, idx), (status::NO_ACCESS, 1));
    }

    /// Random and mutated datagrams must never panic; they are dropped or answered.
    #[test]
    fn random_bytes_never_panic() {
        let a = agent(200);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let good = encode_request(
            1,
            b"a",
            tag::GET_BULK,
            77,
            1,
            3,
            &[&oid("1.3.6.1.2.1.1"), &oid("1.3.6.1.2.1.2")],
        )
        .unwrap();
        let mut h = Handler::default();
        let mut out = Vec::new();
        for i in 0..200_000 {
            let pkt: Vec<u8> = if i % 2 == 0 {
                let len = rng.random_range(0..80);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut p = good.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..p.len());
                    p[at] = rng.random();
                }
                p.truncate(rng.random_range(0..=p.len()));
                p
            };
            if let Outcome::Respond(_) = h.handle(&a, 161, &pkt, 0.0, &mut out) {
                assert!(
                    decode_response(&out).is_some(),
                    "undecodable answer to {pkt:?}"
                );
            }
        }
    }
}
