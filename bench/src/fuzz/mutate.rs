//! Mutations of valid frames. Each says what it does to the byte stream,
//! which decides what the fuzzer may still expect of the connection:
//!
//! - [`Effect::Framed`]: the frame keeps a valid header and length, so the
//!   server can tell where it ends and must answer it, exactly once, with
//!   its reference id (an EventError, or whatever request it turned into);
//! - [`Effect::Fatal`]: a length or version the server must refuse: it
//!   sends EventError with reference id 0 and this code, then closes;
//! - [`Effect::Desync`]: the stream no longer splits into the frames the
//!   fuzzer meant (a wrong length, garbage, a header bit flip): nothing
//!   can be expected of the connection any more but that the server
//!   survives it.

use ixn_shard::proto::frame::{encode_attr, Attr, Frame, HEADER_LEN, MAX_LIST_DEPTH};
use ixn_shard::proto::{attr, msg_type, ErrorCode};
use ixn_shard::value::{TAG_BIN, TAG_INT, TAG_LIST, TAG_STR};
use ixn_shard::{KvList, Value};

use super::rng::Rng;
use super::setup::MAX_FRAME;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Framed,
    Fatal(ErrorCode),
    Desync,
}

pub struct Mutation {
    pub bytes: Vec<u8>,
    pub kind: &'static str,
    pub effect: Effect,
}

/// Mutates `frame` (a valid request with reference id `ref_id`).
/// `stream_breaking` allows the mutations that are not [`Effect::Framed`].
pub fn mutate(rng: &mut Rng, frame: &Frame, stream_breaking: bool) -> Mutation {
    let framed = framed_mutation(rng, frame);
    if !stream_breaking || rng.chance(0.75) {
        return framed;
    }
    let bytes = frame.encode();
    match rng.below(7) {
        0 => {
            // A length past the frame limit, checked from the first 4 bytes.
            let length = rng.range(MAX_FRAME as u64 + 1, u32::MAX as u64) as u32;
            Mutation {
                bytes: with_length(&bytes, length),
                kind: "huge-length",
                effect: Effect::Fatal(ErrorCode::FrameTooLarge),
            }
        }
        1 => {
            let length = rng.below(HEADER_LEN as u64) as u32;
            Mutation {
                bytes: with_length(&bytes, length),
                kind: "tiny-length",
                effect: Effect::Fatal(ErrorCode::InvalidFrame),
            }
        }
        2 => {
            let mut b = bytes;
            b[6] = *rng.pick(&[0u8, 2, 3, 0x7f, 0xff]);
            Mutation { bytes: b, kind: "bad-version", effect: Effect::Fatal(ErrorCode::UnsupportedVersion) }
        }
        3 => {
            // Declares more than it sends (within the limit): the next frames
            // are read as this one's body.
            let extra = rng.range(1, 4096) as u32;
            let length = bytes.len() as u32 + extra;
            Mutation { bytes: with_length(&bytes, length), kind: "long-length", effect: Effect::Desync }
        }
        4 if bytes.len() > HEADER_LEN => {
            // Declares less than it sends: the rest is read as a header.
            let length = rng.range(HEADER_LEN as u64, bytes.len() as u64 - 1) as u32;
            Mutation { bytes: with_length(&bytes, length), kind: "short-length", effect: Effect::Desync }
        }
        5 => {
            let mut b = bytes;
            for _ in 0..rng.range(1, 3) {
                let i = rng.index(HEADER_LEN);
                b[i] ^= 1 << rng.below(8);
            }
            Mutation { bytes: b, kind: "header-bitflip", effect: Effect::Desync }
        }
        _ => {
            let n = rng.range(1, 300) as usize;
            Mutation { bytes: rng.bytes(n), kind: "garbage", effect: Effect::Desync }
        }
    }
}

/// The frame's bytes with another length field.
fn with_length(bytes: &[u8], length: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[..4].copy_from_slice(&length.to_le_bytes());
    b
}

/// Encodes a header and body as given (the body may be anything).
fn framed(msg_type: u16, ref_id: u32, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    b.extend_from_slice(&msg_type.to_le_bytes());
    b.push(1);
    b.push(flags);
    b.extend_from_slice(&ref_id.to_le_bytes());
    b.extend_from_slice(body);
    b
}

fn body_of(attrs: &[Attr]) -> Vec<u8> {
    let mut b = Vec::new();
    for a in attrs {
        encode_attr(a.id, &a.value, &mut b);
    }
    b
}

/// A value of another type than `v`.
fn other_type(rng: &mut Rng, v: &Value) -> Value {
    let choices: Vec<u8> = [TAG_INT, TAG_STR, TAG_BIN, TAG_LIST].into_iter().filter(|t| *t != v.tag()).collect();
    match *rng.pick(&choices) {
        TAG_INT => Value::Int(rng.next_u64() as i64),
        TAG_STR => Value::Str("wrong type".into()),
        TAG_BIN => Value::Bin(rng.bytes(5)),
        _ => {
            let mut l = KvList::new();
            l.push("k", Value::Int(1));
            Value::List(l)
        }
    }
}

/// A list nested `levels` deep.
fn nested(levels: usize) -> Value {
    let mut v = Value::Int(1);
    for _ in 0..levels {
        let mut l = KvList::new();
        l.push("n", v);
        v = Value::List(l);
    }
    v
}

/// A mutation that keeps the frame's boundary: the server must answer it.
fn framed_mutation(rng: &mut Rng, frame: &Frame) -> Mutation {
    let (t, r) = (frame.msg_type, frame.ref_id);
    let mut attrs = frame.attrs.clone();
    let out = |body: Vec<u8>, kind| Mutation { bytes: framed(t, r, 0, &body), kind, effect: Effect::Framed };
    match rng.below(15) {
        0 | 1 => {
            let mut body = body_of(&attrs);
            if body.is_empty() {
                let n = rng.range(1, 9) as usize;
                body = rng.bytes(n);
            }
            for _ in 0..rng.range(1, 4) {
                let i = rng.index(body.len());
                body[i] ^= 1 << rng.below(8);
            }
            out(body, "body-bitflip")
        }
        2 if !attrs.is_empty() => {
            let i = rng.index(attrs.len());
            attrs[i].value = other_type(rng, &attrs[i].value);
            out(body_of(&attrs), "wrong-type")
        }
        3 if !attrs.is_empty() => {
            let i = rng.index(attrs.len());
            let mut dup = attrs[i].clone();
            if rng.chance(0.5) {
                dup.value = other_type(rng, &dup.value);
            }
            let at = rng.index(attrs.len() + 1);
            attrs.insert(at, dup);
            out(body_of(&attrs), "duplicate-attribute")
        }
        4 => {
            let t = *rng.pick(&[
                0u16,
                3,
                15,
                29,
                39,
                57,
                100,
                127,
                msg_type::EVENT_ACK,
                msg_type::EVENT_INVITE,
                999,
                u16::MAX,
            ]);
            Mutation { bytes: framed(t, r, 0, &body_of(&attrs)), kind: "unknown-message-type", effect: Effect::Framed }
        }
        5 => {
            let body = body_of(&attrs);
            let keep = rng.below(body.len() as u64 + 1) as usize;
            out(body[..keep].to_vec(), "truncated-body")
        }
        6 => {
            // A value as big as the frame allows: a property list past half
            // the frame limit (14), or a long string.
            let room = MAX_FRAME - HEADER_LEN - body_of(&attrs).len() - 64;
            let size = rng.range((MAX_FRAME / 2) as u64, room as u64) as usize;
            if rng.chance(0.5) {
                let mut l = KvList::new();
                l.push("big", Value::Str("b".repeat(size)));
                attrs.retain(|a| a.id != attr::PROPERTIES);
                attrs.push(Attr { id: attr::PROPERTIES, value: Value::List(l) });
            } else {
                let id = *rng.pick(&[
                    attr::QUEUE,
                    attr::TENANT,
                    attr::CLIENT_NAME,
                    attr::CONDITION,
                    attr::WORKBIN_OWNER,
                    attr::REASON,
                ]);
                attrs.retain(|a| a.id != id);
                attrs.insert(0, Attr { id, value: Value::Str("q".repeat(size)) });
            }
            out(body_of(&attrs), "oversize-value")
        }
        7 => {
            let levels = rng.range(MAX_LIST_DEPTH as u64 - 2, MAX_LIST_DEPTH as u64 + 3) as usize;
            attrs.retain(|a| a.id != attr::PROPERTIES);
            attrs.push(Attr { id: attr::PROPERTIES, value: nested(levels) });
            out(body_of(&attrs), "deep-list")
        }
        8 => {
            // A string attribute whose payload is not UTF-8.
            let id = attrs.iter().find(|a| a.value.tag() == TAG_STR).map(|a| a.id).unwrap_or(attr::TENANT);
            attrs.retain(|a| a.id != id);
            let mut body = body_of(&attrs);
            body.extend_from_slice(&id.to_le_bytes());
            body.push(TAG_STR);
            body.extend_from_slice(&3u32.to_le_bytes());
            body.extend_from_slice(&[0xff, 0xfe, b'x']);
            out(body, "bad-utf8")
        }
        9 => {
            for _ in 0..rng.range(1, 4) {
                let id = *rng.pick(&[10u16, 11, 15, 26, 51, 63, 75, 1000, u16::MAX]);
                let value = other_type(rng, &Value::Int(0));
                attrs.insert(rng.index(attrs.len() + 1), Attr { id, value });
            }
            out(body_of(&attrs), "unknown-attributes")
        }
        10 if attrs.iter().any(|a| a.value.tag() == TAG_INT) => {
            for a in attrs.iter_mut().filter(|a| a.value.tag() == TAG_INT) {
                a.value = Value::Int(*rng.pick(&[i64::MIN, i64::MAX, -1, 0, u32::MAX as i64 + 1, 65536]));
            }
            out(body_of(&attrs), "extreme-ints")
        }
        11 if !attrs.is_empty() => {
            attrs.remove(rng.index(attrs.len()));
            out(body_of(&attrs), "dropped-attribute")
        }
        12 => {
            // Reserved flags: receivers ignore them.
            let flags = rng.range(1, 255) as u8;
            Mutation { bytes: framed(t, r, flags, &body_of(&attrs)), kind: "flags", effect: Effect::Framed }
        }
        13 => {
            for a in attrs.iter_mut().filter(|a| a.value.tag() == TAG_STR) {
                a.value =
                    Value::Str(if rng.chance(0.5) { String::new() } else { "n".repeat(rng.range(256, 4000) as usize) });
            }
            out(body_of(&attrs), "odd-strings")
        }
        _ => {
            let n = rng.range(1, 200) as usize;
            out(rng.bytes(n), "garbage-body")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ixn_shard::proto::frame::split_frame;

    #[test]
    fn framed_mutations_keep_the_frame_boundary() {
        let mut rng = Rng::new(3);
        let f = Frame::new(msg_type::REQUEST_SUBMIT, 77).with(attr::QUEUE, "inbound").with(attr::PRIORITY, 3i64);
        for _ in 0..2000 {
            let m = framed_mutation(&mut rng, &f);
            let (h, _, total) = split_frame(&m.bytes, MAX_FRAME).unwrap().expect("a whole frame");
            assert_eq!((h.ref_id(), total), (77, m.bytes.len()), "{}", m.kind);
        }
    }

    #[test]
    fn fatal_mutations_break_the_header() {
        let mut rng = Rng::new(5);
        let f = Frame::new(msg_type::REQUEST_PING, 1);
        for _ in 0..500 {
            let m = mutate(&mut rng, &f, true);
            if let Effect::Fatal(_) = m.effect {
                assert!(split_frame(&m.bytes, MAX_FRAME).is_err(), "{}", m.kind);
            }
        }
    }
}
