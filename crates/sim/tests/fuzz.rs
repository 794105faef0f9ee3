//! Seeded fuzz tests of raftpoll-sim's decoders: random and mutated requests, BER primitives,
//! recordings with junk lines and `--misbehave` rewrites must never panic and must give sane
//! results (round trips, echoed ids, bounded sizes).
//!
//! A small xorshift generator with fixed seeds keeps runs reproducible: a failure names the
//! seed and the input. Iteration counts keep each test to a few seconds in debug builds.

use std::sync::Arc;

use raftpoll_sim::ber::{self, Reader, decode_response, encode_request, tag};
use raftpoll_sim::{Agent, Device, Handler, LoadOptions, Misbehave, Outcome, Recording};
use raftpoll_testbed::fuzz::{Rng, mutate};
// ---------------------------------------------------------------- raftpoll-sim BER

const RECORDING: &str = "1.3.6.1.2.1.1.1.0|4|descr\n1.3.6.1.2.1.1.3.0|67|500\n\
    1.3.6.1.2.1.1.5.0|4|fuzz\n1.3.6.1.2.1.2.2.1.10.1|65:numeric|rate=1000,initial=4294967000\n\
    1.3.6.1.2.1.2.2.1.10.2|65|7\n1.3.6.1.2.1.31.1.1.1.6.1|70|9\n1.3.6.1.4.1.9.1|6|1.3.6.1.4.1.9\n";

const MAX_SIZE: usize = 300;

fn agent() -> Agent {
    let rec = Arc::new(Recording::parse(
        RECORDING.as_bytes(),
        LoadOptions::default(),
    ));
    let dev = |community: &str| Device {
        port: 161,
        community: community.as_bytes().to_vec(),
        recording: rec.clone(),
        misbehave: None,
    };
    Agent::new(vec![dev("a"), dev("bb")], MAX_SIZE)
}

fn random_oid(rng: &mut Rng) -> Vec<u32> {
    let known: [&[u32]; 4] = [
        &[1, 3, 6, 1, 2, 1, 1, 1, 0],
        &[1, 3, 6, 1, 2, 1, 2, 2, 1, 10],
        &[1, 3, 6, 1, 2, 1, 31],
        &[1, 3],
    ];
    let mut oid = rng.pick(&known).to_vec();
    if rng.chance(2) {
        for _ in 0..rng.below(4) {
            oid.push(match rng.below(3) {
                0 => rng.below(3) as u32,
                1 => u32::MAX - rng.below(2) as u32,
                _ => rng.next_u64() as u32,
            });
        }
    }
    oid
}

/// A well-formed request with random fields; returns it with its request-id and varbind count.
fn random_request(rng: &mut Rng) -> (Vec<u8>, i32, usize) {
    let version = if rng.chance(8) {
        rng.int()
    } else {
        rng.below(2) as i64
    };
    let community = *rng.pick::<&[u8]>(&[b"a", b"bb", b"", b"nope"]);
    let pdu = *rng.pick(&[
        tag::GET,
        tag::GET_NEXT,
        tag::GET_BULK,
        tag::SET,
        tag::RESPONSE,
        0xa4,
        0xa7,
    ]);
    let rid = rng.int() as i32;
    let oids: Vec<Vec<u32>> = (0..rng.below(6)).map(|_| random_oid(rng)).collect();
    let refs: Vec<&[u32]> = oids.iter().map(|o| &o[..]).collect();
    let (a, b) = (rng.int(), rng.int());
    let req = encode_request(version, community, pdu, rid, a, b, &refs).expect("encodable OIDs");
    (req, rid, oids.len())
}

/// Requests, well-formed and mutated, through the simulator's handler: no panic, every
/// answer decodes, fits the size limit and echoes the request-id.
#[test]
fn sim_request_handler_survives_random_and_mutated_requests() {
    let agent = agent();
    let mut rng = Rng::new(0xb0e5);
    let mut handler = Handler::default();
    let mut out = Vec::new();
    let (mut answered, mut malformed) = (0, 0);
    for i in 0..60_000 {
        let (req, rid, vbs) = random_request(&mut rng);
        let (pkt, intact) = match i % 4 {
            0 => (req, true),
            1 => (rng.bytes(120), false),
            _ => (mutate(&mut rng, &req), false),
        };
        match handler.handle(&agent, 161, &pkt, rng.below(100_000) as f64, &mut out) {
            Outcome::Respond(dev) => {
                answered += 1;
                assert!(dev < 2, "device index {dev}");
                assert!(
                    out.len() <= MAX_SIZE,
                    "answer of {} bytes to {pkt:02x?}",
                    out.len()
                );
                let (got_rid, status, index, got) = decode_response(&out)
                    .unwrap_or_else(|| panic!("undecodable answer {out:02x?} to {pkt:02x?}"));
                assert!((0..=18).contains(&status), "status {status} to {pkt:02x?}");
                assert!(index >= 0, "error index {index}");
                if intact {
                    assert_eq!(got_rid, i64::from(rid), "request-id not echoed");
                    // GET and GETNEXT answer every varbind, or fail as a whole.
                    if pkt.contains(&tag::GET) && status == 0 && got.len() != vbs {
                        let pdu = Reader::new(&pkt)
                            .expect(tag::SEQUENCE)
                            .and_then(|m| {
                                let mut m = Reader::new(m);
                                m.tlv()?;
                                m.tlv()?;
                                m.tlv().map(|t| t.0)
                            })
                            .expect("intact request");
                        assert_eq!(pdu, tag::GET_BULK, "{vbs} varbinds asked, {got:?} answered");
                    }
                }
            }
            Outcome::Malformed | Outcome::UnknownCommunity => malformed += 1,
        }
    }
    // Both paths were exercised.
    assert!(
        answered > 2_000 && malformed > 5_000,
        "{answered} answered, {malformed} dropped"
    );
}

/// The BER primitives on random input: no panic; what decodes re-encodes to the same bytes
/// (OIDs) or the same value (integers); every TLV stays inside its input.
#[test]
fn ber_primitives_round_trip_and_reject_junk() {
    let mut rng = Rng::new(0x0b1d);
    let mut arcs = Vec::new();
    for i in 0..100_000 {
        let input = if i % 2 == 0 {
            rng.bytes(24)
        } else {
            let mut oid = Vec::new();
            ber::put_oid(&mut oid, &random_oid(&mut rng)).expect("valid OID");
            mutate(&mut rng, &oid[2..])
        };
        if ber::decode_oid(&input, &mut arcs).is_some() {
            assert!(
                (2..=ber::MAX_OID_ARCS).contains(&arcs.len()),
                "{input:02x?}"
            );
            let mut again = Vec::new();
            ber::put_oid(&mut again, &arcs).expect("decoded OID re-encodes");
            let mut r = Reader::new(&again);
            assert_eq!(r.expect(tag::OID), Some(&input[..]), "{arcs:?}");
        }
        if let Some(v) = ber::decode_int(&input) {
            assert!(input.len() <= 8);
            let mut enc = Vec::new();
            ber::put_int(&mut enc, tag::INTEGER, v);
            assert_eq!(ber::decode_int(&enc[2..]), Some(v));
        }
        let mut r = Reader::new(&input);
        while let Some((_, content, whole)) = r.tlv() {
            assert!(whole.len() >= content.len() + 2 && r.pos() <= input.len());
        }
        let _ = decode_response(&input);
    }
    for _ in 0..20_000 {
        let v = rng.int();
        let mut enc = Vec::new();
        ber::put_int(&mut enc, tag::INTEGER, v);
        assert_eq!(ber::decode_int(&enc[2..]), Some(v), "{v}");
    }
}

/// Recording text junk: never panics, entries come out strictly sorted, and the agent serves
/// whatever was loaded.
#[test]
fn recordings_survive_junk_lines() {
    let mut rng = Rng::new(0x5a7e);
    let words: [&[u8]; 14] = [
        b"1.3.6.1.2.1.1.1.0",
        b"1.3.6.1.2.1.2.2.1.10.1",
        b".1.3",
        b"4294967296.1",
        b"|",
        b"4",
        b"4x",
        b"65:numeric",
        b"70",
        b"rate=1000,initial=9",
        b"min=5,max=1,wrap=1",
        b"zz",
        b"\n",
        b"\xff\xfe",
    ];
    for _ in 0..2_000 {
        let mut text = Vec::new();
        for _ in 0..rng.below(40) {
            if rng.chance(6) {
                text.extend(rng.bytes(10));
            } else {
                text.extend_from_slice(rng.pick::<&[u8]>(&words));
            }
        }
        let text = mutate(&mut rng, &text);
        let opts = LoadOptions {
            counter_rate: rng.chance(3).then(|| rng.below(1_000_000) as f64 / 7.0),
        };
        let rec = Recording::parse(&text, opts);
        assert!(
            rec.entries.windows(2).all(|w| w[0].oid < w[1].oid),
            "unsorted entries from {text:02x?}"
        );
        if rec.entries.is_empty() {
            continue;
        }
        let agent = Agent::new(
            vec![Device {
                port: 1,
                community: b"c".to_vec(),
                recording: Arc::new(rec),
                misbehave: None,
            }],
            MAX_SIZE,
        );
        let req = encode_request(1, b"c", tag::GET_BULK, 9, 0, 30, &[&[1, 3]]).expect("request");
        let mut out = Vec::new();
        let secs = rng.below(1 << 40) as f64;
        let outcome = Handler::default().handle(&agent, 1, &req, secs, &mut out);
        assert_eq!(outcome, Outcome::Respond(0));
        assert!(
            decode_response(&out).is_some(),
            "undecodable walk of {text:02x?}"
        );
    }
}

/// `--misbehave` rewriting random answers never panics, and its parser takes junk calmly.
#[test]
fn misbehave_rewrites_any_answer() {
    let mut rng = Rng::new(0x3157);
    let modes = [
        Misbehave::ErrorStatus(5),
        Misbehave::WrongRequestId,
        Misbehave::Truncated,
        Misbehave::Garbage,
    ];
    let good = {
        let mut r = encode_request(1, b"c", tag::GET, 5, 0, 0, &[&[1, 3, 6]]).expect("request");
        let at = r.iter().position(|b| *b == tag::GET).expect("pdu tag");
        r[at] = tag::RESPONSE;
        r
    };
    for i in 0..50_000u64 {
        let mut out = if i % 2 == 0 {
            mutate(&mut rng, &good)
        } else {
            rng.bytes(64)
        };
        let _ = rng.pick(&modes).apply(&mut out, i);
        let text = String::from_utf8_lossy(&rng.bytes(12)).into_owned();
        let _ = text.parse::<Misbehave>();
    }
}
