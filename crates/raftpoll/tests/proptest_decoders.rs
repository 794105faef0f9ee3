//! Property tests (proptest) of the decoders we own, with shrinking: whatever bytes arrive,
//! they decode or are refused, never panic, and what we encode decodes back to itself.

use proptest::prelude::*;
use raftpoll::rrd::layout::{DsDef, DsType, RrdDef, RrdUpdate, RrdValue};
use raftpoll::rrd::spool;
use raftpoll::sim::ber::{decode_response, encode_request, tag};
use raftpoll::sim::{Agent, Device, Handler, LoadOptions, Recording};
use std::collections::HashMap;
use std::sync::Arc;

const RECORDING: &str = "1.3.6.1.2.1.1.1.0|4|test agent\n\
1.3.6.1.2.1.1.3.0|67|100\n\
1.3.6.1.2.1.2.2.1.10.1|65|1000\n\
1.3.6.1.2.1.31.1.1.1.6.1|70|5000000000\n";

fn agent() -> Agent {
    let recording = Arc::new(Recording::parse(
        RECORDING.as_bytes(),
        LoadOptions::default(),
    ));
    let device = Device {
        port: 161,
        community: b"public".to_vec(),
        recording,
        misbehave: None,
    };
    Agent::new(vec![device], 1472)
}

fn port_def() -> Arc<RrdDef> {
    Arc::new(RrdDef {
        ds: vec![
            DsDef {
                name: "INOCTETS",
                kind: DsType::Derive,
                min: Some(0.0),
                max: None,
            },
            DsDef {
                name: "uptime",
                kind: DsType::Gauge,
                min: None,
                max: Some(1.0),
            },
        ],
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Any datagram: an answer that decodes as a response, or no answer at all.
    #[test]
    fn sim_request_path_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let agent = agent();
        let mut out = Vec::new();
        Handler::default().handle(&agent, 161, &bytes, 1.0, &mut out);
        if !out.is_empty() {
            prop_assert!(decode_response(&out).is_some());
        }
    }

    /// A well-formed GET for any OID and request id is answered with that request id.
    #[test]
    fn sim_answers_every_valid_get(
        arcs in proptest::collection::vec(0u32..200, 0..12),
        request_id in 0i32..i32::MAX,
    ) {
        let mut oid = vec![1, 3];
        oid.extend(arcs);
        let req = encode_request(1, b"public", tag::GET, request_id, 0, 0, &[&oid[..]]);
        prop_assume!(req.is_some());
        let agent = agent();
        let mut out = Vec::new();
        Handler::default().handle(&agent, 161, &req.unwrap_or_default(), 1.0, &mut out);
        let answer = decode_response(&out);
        prop_assert!(answer.is_some());
        if let Some((id, _, _, varbinds)) = answer {
            prop_assert_eq!(id, i64::from(request_id));
            prop_assert_eq!(varbinds.len(), 1);
        }
    }

    /// Spool records: any bytes decode or are refused; encoded records round-trip.
    #[test]
    fn spool_records_round_trip_and_junk_is_refused(
        junk in proptest::collection::vec(any::<u8>(), 0..300),
        seq in any::<u64>(),
        timestamp in any::<u64>(),
        millis in 0u16..1000,
        host in "[a-z0-9-]{1,20}",
        counter in any::<u64>(),
        gauge in -1e12f64..1e12,
    ) {
        let mut defs = HashMap::new();
        let _ = spool::decode(&junk, &mut defs);
        let update = RrdUpdate {
            path: format!("{host}/port-id1.rrd"),
            def: port_def(),
            timestamp,
            millis,
            values: vec![RrdValue::Counter(counter), RrdValue::Gauge(gauge)],
        };
        let bytes = spool::encode(seq, &update);
        let back = spool::decode(&bytes, &mut defs);
        prop_assert_eq!(back, Some((seq, update)));
    }
}
