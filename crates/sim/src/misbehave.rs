//! Misbehaving devices for fault tests: an agent that never answers, answers late, answers
//! with an error status, or sends garbage, truncated BER or a wrong request-id.
//!
//! The handler builds the correct response first; [`Misbehave::apply`] then rewrites it (or
//! tells the server to drop or delay it), so the request path itself stays unchanged.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::ber::{self, Reader, tag};

/// genErr: what `error-status` without a number answers with.
pub const GEN_ERR: i64 = 5;
/// Longest accepted `slow:<ms>` delay (a minute: longer is "silent").
const MAX_DELAY_MS: u64 = 60_000;

/// How one device misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Never answers (the poller times out).
    Silent,
    /// Answers correctly, this long after the request arrived.
    Slow(Duration),
    /// Answers with this error-status at error-index 1.
    ErrorStatus(i64),
    /// Answers with random bytes.
    Garbage,
    /// Answers with the first half of the correct response.
    Truncated,
    /// Answers correctly except for the request-id (the request's + 1).
    WrongRequestId,
}

/// What the server does with the (rewritten) response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Send,
    Drop,
    SendAfter(Duration),
}

impl Misbehave {
    /// Rewrites the correct response in `out`; `salt` varies the garbage between answers.
    pub fn apply(self, out: &mut Vec<u8>, salt: u64) -> Action {
        match self {
            Misbehave::Silent => Action::Drop,
            Misbehave::Slow(d) => Action::SendAfter(d),
            Misbehave::ErrorStatus(status) => rewrite(out, |rid| rid, Some((status, 1))),
            Misbehave::WrongRequestId => {
                // Stay a valid Integer32 so the answer decodes and only the id is wrong.
                rewrite(
                    out,
                    |rid| {
                        if rid == i64::from(i32::MAX) {
                            0
                        } else {
                            rid + 1
                        }
                    },
                    None,
                )
            }
            Misbehave::Truncated => {
                out.truncate(out.len() / 2);
                Action::Send
            }
            Misbehave::Garbage => {
                garbage(out, salt);
                Action::Send
            }
        }
    }
}

/// Re-encodes the response in `out` with a new request-id and, if given, (error-status,
/// error-index). Drops the answer if `out` is not a response this module can read.
fn rewrite(out: &mut Vec<u8>, rid: impl Fn(i64) -> i64, error: Option<(i64, i64)>) -> Action {
    let Some(msg) = reencode(out, rid, error) else {
        return Action::Drop;
    };
    *out = msg;
    Action::Send
}

fn reencode(msg: &[u8], rid: impl Fn(i64) -> i64, error: Option<(i64, i64)>) -> Option<Vec<u8>> {
    let mut m = Reader::new(Reader::new(msg).expect(tag::SEQUENCE)?);
    let (t, _, version) = m.tlv()?;
    let (c, _, community) = m.tlv()?;
    if t != tag::INTEGER || c != tag::OCTET_STRING {
        return None;
    }
    let mut p = Reader::new(m.expect(tag::RESPONSE)?);
    let old_rid = ber::decode_int(p.expect(tag::INTEGER)?)?;
    let status = ber::decode_int(p.expect(tag::INTEGER)?)?;
    let index = ber::decode_int(p.expect(tag::INTEGER)?)?;
    let (t, _, varbinds) = p.tlv()?;
    if t != tag::SEQUENCE {
        return None;
    }
    let (status, index) = error.unwrap_or((status, index));
    let mut pdu = Vec::with_capacity(varbinds.len() + 16);
    ber::put_int(&mut pdu, tag::INTEGER, rid(old_rid));
    ber::put_int(&mut pdu, tag::INTEGER, status);
    ber::put_int(&mut pdu, tag::INTEGER, index);
    pdu.extend_from_slice(varbinds);
    let mut body = Vec::with_capacity(pdu.len() + version.len() + community.len() + 8);
    body.extend_from_slice(version);
    body.extend_from_slice(community);
    ber::put_header(&mut body, tag::RESPONSE, pdu.len());
    body.extend_from_slice(&pdu);
    let mut out = Vec::with_capacity(body.len() + 6);
    ber::put_header(&mut out, tag::SEQUENCE, body.len());
    out.extend_from_slice(&body);
    Some(out)
}

/// Replaces `out` with random bytes of a random length up to its own. Every other answer
/// starts like a message (SEQUENCE with a long length), to reach deeper into decoders.
fn garbage(out: &mut Vec<u8>, salt: u64) {
    let mut x = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = 1 + (next() as usize) % out.len().max(8);
    out.clear();
    out.extend((0..len).map(|_| next() as u8));
    if salt.is_multiple_of(2) && out.len() >= 4 {
        out[..2].copy_from_slice(&[tag::SEQUENCE, 0x82]);
    }
}

impl FromStr for Misbehave {
    type Err = String;

    /// `silent` (or `timeout`), `slow:<ms>`, `error-status[:<n>]`, `garbage`, `truncated`,
    /// `wrong-reqid`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let number = |what: &str| -> Result<u64, String> {
            arg.ok_or_else(|| format!("`{name}` needs `:<{what}>`"))?
                .parse::<u64>()
                .map_err(|_| format!("`{s}`: {what} must be a whole number"))
        };
        let no_arg = |m: Misbehave| match arg {
            None => Ok(m),
            Some(_) => Err(format!("`{name}` takes no argument")),
        };
        match name {
            "silent" | "timeout" => no_arg(Misbehave::Silent),
            "garbage" => no_arg(Misbehave::Garbage),
            "truncated" => no_arg(Misbehave::Truncated),
            "wrong-reqid" => no_arg(Misbehave::WrongRequestId),
            "slow" => match number("ms")? {
                ms @ 1..=MAX_DELAY_MS => Ok(Misbehave::Slow(Duration::from_millis(ms))),
                _ => Err(format!("`{s}`: delay must be 1 to {MAX_DELAY_MS} ms")),
            },
            "error-status" if arg.is_none() => Ok(Misbehave::ErrorStatus(GEN_ERR)),
            "error-status" => match number("status")? {
                n @ 1..=18 => Ok(Misbehave::ErrorStatus(n as i64)),
                _ => Err(format!("`{s}`: error-status must be 1 to 18")),
            },
            _ => Err(format!(
                "unknown misbehaviour `{s}` (silent, slow:<ms>, error-status[:<n>], garbage, \
                 truncated, wrong-reqid)"
            )),
        }
    }
}

impl fmt::Display for Misbehave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misbehave::Silent => write!(f, "silent"),
            Misbehave::Slow(d) => write!(f, "slow:{}", d.as_millis()),
            Misbehave::ErrorStatus(n) => write!(f, "error-status:{n}"),
            Misbehave::Garbage => write!(f, "garbage"),
            Misbehave::Truncated => write!(f, "truncated"),
            Misbehave::WrongRequestId => write!(f, "wrong-reqid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ber::{decode_response, encode_request};

    /// A response as the handler writes it: request-id 77, no error, one varbind.
    fn response() -> Vec<u8> {
        let mut req =
            encode_request(1, b"c", tag::GET, 77, 0, 0, &[&[1, 3, 6, 1, 2, 1, 1, 5, 0]]).unwrap();
        // Same layout as a response except the PDU tag: GET (0xa0) → RESPONSE.
        let at = req.iter().position(|b| *b == tag::GET).unwrap();
        req[at] = tag::RESPONSE;
        req
    }

    #[test]
    fn parses_every_mode() {
        for (text, want) in [
            ("silent", Misbehave::Silent),
            ("timeout", Misbehave::Silent),
            ("slow:900", Misbehave::Slow(Duration::from_millis(900))),
            ("error-status", Misbehave::ErrorStatus(GEN_ERR)),
            ("error-status:2", Misbehave::ErrorStatus(2)),
            ("garbage", Misbehave::Garbage),
            ("truncated", Misbehave::Truncated),
            ("wrong-reqid", Misbehave::WrongRequestId),
        ] {
            assert_eq!(text.parse::<Misbehave>(), Ok(want), "{text}");
            assert_eq!(want.to_string().parse::<Misbehave>(), Ok(want));
        }
        for bad in [
            "",
            "slow",
            "slow:x",
            "slow:0",
            "error-status:0",
            "garbage:1",
            "nope",
        ] {
            assert!(bad.parse::<Misbehave>().is_err(), "{bad}");
        }
    }

    #[test]
    fn error_status_and_wrong_reqid_rewrite_a_valid_answer() {
        let mut out = response();
        assert_eq!(Misbehave::ErrorStatus(5).apply(&mut out, 0), Action::Send);
        let (rid, status, index, vbs) = decode_response(&out).unwrap();
        assert_eq!((rid, status, index, vbs.len()), (77, 5, 1, 1));

        let mut out = response();
        assert_eq!(Misbehave::WrongRequestId.apply(&mut out, 0), Action::Send);
        let (rid, status, _, vbs) = decode_response(&out).unwrap();
        assert_eq!((rid, status, vbs.len()), (78, 0, 1));
    }

    #[test]
    fn truncated_and_garbage_do_not_decode() {
        let mut out = response();
        let full = out.len();
        Misbehave::Truncated.apply(&mut out, 0);
        assert_eq!(out.len(), full / 2);
        assert!(decode_response(&out).is_none());
        for salt in 0..1000 {
            let mut out = response();
            assert_eq!(Misbehave::Garbage.apply(&mut out, salt), Action::Send);
            assert!(!out.is_empty() && out.len() <= full.max(8));
            assert!(decode_response(&out).is_none(), "salt {salt}: {out:?}");
        }
    }

    #[test]
    fn silent_drops_and_slow_delays() {
        let mut out = response();
        assert_eq!(Misbehave::Silent.apply(&mut out, 0), Action::Drop);
        let d = Duration::from_millis(5);
        assert_eq!(Misbehave::Slow(d).apply(&mut out, 0), Action::SendAfter(d));
        assert_eq!(out, response());
    }
}
