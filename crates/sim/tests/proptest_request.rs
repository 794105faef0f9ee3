//! Property tests (proptest) of raftpoll-sim's request path, with shrinking: whatever bytes
//! arrive, they are answered with a response that decodes, or not answered at all.

use proptest::prelude::*;
use raftpoll_sim::ber::{decode_response, encode_request, tag};
use raftpoll_sim::{Agent, Device, Handler, LoadOptions, Recording};
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
}
