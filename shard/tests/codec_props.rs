//! Properties of the protocol v1 codec (docs/protocol.md), checked on
//! generated inputs, and the worked example of the specification checked
//! against what the encoder writes so the document cannot drift from the
//! code.
//!
//! Run: `cargo test -p ixn-shard --test codec_props`.
//! More cases: `PROPTEST_CASES=5000 cargo test -p ixn-shard --test codec_props`.

use ixn_shard::id::{self, IdParts};
use ixn_shard::kv;
use ixn_shard::proto::frame::{
    decode_body, decode_frame, split_frame, Attr, BodyError, FatalFrameError, Frame, Header, ABSOLUTE_MAX_FRAME,
    DEFAULT_MAX_FRAME, HEADER_LEN,
};
use ixn_shard::proto::msg::{attr, msg_type, ClientType, ErrorCode};
use ixn_shard::proto::request::{event_ack, Request, Submit};
use ixn_shard::value::{KvList, Value, TAG_LIST};
use proptest::collection::vec;
use proptest::prelude::*;

/// Lists may be nested at most this many levels inside one another on the
/// wire: an attribute whose value is a list holding a list counts two
/// (docs/protocol.md, "Nesting limit").
const LIST_LEVELS_ACCEPTED: usize = 7;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Deepest nesting of lists in `v`: 0 for a scalar, 1 for a list of scalars.
fn list_levels(v: &Value) -> usize {
    match v {
        Value::List(l) => 1 + l.iter().map(|(_, v)| list_levels(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn frame_levels(f: &Frame) -> usize {
    f.attrs.iter().map(|a| list_levels(&a.value)).max().unwrap_or(0)
}

/// What a server's read loop sees: every whole frame in order (with its
/// decoded body), then either a fatal error or the incomplete tail.
#[derive(Debug, PartialEq)]
struct Stream {
    frames: Vec<(Header, usize, Result<Vec<Attr>, BodyError>)>,
    fatal: Option<FatalFrameError>,
    leftover: usize,
}

/// Splits `bytes` into frames the way a server does with a whole buffer.
fn decode_stream(bytes: &[u8], max_frame: usize) -> Stream {
    let mut out = Stream { frames: Vec::new(), fatal: None, leftover: 0 };
    let mut at = 0;
    loop {
        match split_frame(&bytes[at..], max_frame) {
            Ok(Some((h, body, total))) => {
                out.frames.push((h, total, decode_body(body)));
                at += total;
            }
            Ok(None) => {
                out.leftover = bytes.len() - at;
                return out;
            }
            Err(e) => {
                out.fatal = Some(e);
                return out;
            }
        }
    }
}

/// The same, with the bytes arriving in chunks of the given sizes (cycled):
/// the frame boundaries must not depend on how the reads were cut.
fn decode_stream_chunked(bytes: &[u8], max_frame: usize, chunks: &[usize]) -> Stream {
    let mut out = Stream { frames: Vec::new(), fatal: None, leftover: 0 };
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    while fed < bytes.len() {
        let n = chunks[i % chunks.len()].max(1).min(bytes.len() - fed);
        i += 1;
        buf.extend_from_slice(&bytes[fed..fed + n]);
        fed += n;
        loop {
            match split_frame(&buf, max_frame) {
                Ok(Some((h, body, total))) => {
                    out.frames.push((h, total, decode_body(body)));
                    buf.drain(..total);
                }
                Ok(None) => break,
                Err(e) => {
                    out.fatal = Some(e);
                    return out;
                }
            }
        }
    }
    out.leftover = buf.len();
    out
}

fn header_bytes(length: u32, msg_type: u16, version: u8, flags: u8, ref_id: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&length.to_le_bytes());
    h.extend_from_slice(&msg_type.to_le_bytes());
    h.push(version);
    h.push(flags);
    h.extend_from_slice(&ref_id.to_le_bytes());
    h
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn arb_key() -> BoxedStrategy<String> {
    prop_oneof![3 => "[a-z_]{1,8}", 1 => Just(String::new()), 1 => any::<String>()].boxed()
}

fn arb_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        any::<String>().prop_map(Value::Str),
        vec(any::<u8>(), 0..24).prop_map(Value::Bin),
    ]
    .boxed()
}

/// Values with at most `levels` lists nested inside one another.
fn arb_value(levels: u32) -> BoxedStrategy<Value> {
    arb_leaf()
        .prop_recursive(levels, 48, 4, |inner| {
            vec((arb_key(), inner), 0..4).prop_map(|e| Value::List(KvList::from_entries(e)))
        })
        .boxed()
}

/// A chain of exactly `levels` lists, each holding the next, the innermost
/// holding an int.
fn nested(levels: usize) -> Value {
    let mut v = Value::Int(1);
    for _ in 0..levels {
        v = Value::List(KvList::from_entries(vec![("k".into(), v)]));
    }
    v
}

/// Values whose lists nest 0 to `levels` deep with every depth about as
/// likely (recursive generation alone seldom goes past 4): a chain of lists,
/// each with a few scalar siblings around the next one.
fn arb_chain(levels: u32) -> BoxedStrategy<Value> {
    let level = (vec((arb_key(), arb_leaf()), 0..3), any::<prop::sample::Index>(), arb_key());
    (arb_leaf(), vec(level, levels as usize + 1))
        .prop_flat_map(move |(leaf, wraps)| (Just(leaf), Just(wraps), 0..=levels as usize))
        .prop_map(|(leaf, wraps, depth)| {
            let mut v = leaf;
            for (siblings, at, key) in wraps.into_iter().take(depth) {
                let mut entries = siblings;
                let i = at.index(entries.len() + 1);
                entries.insert(i, (key, v));
                v = Value::List(KvList::from_entries(entries));
            }
            v
        })
        .boxed()
}

/// Any value with at most `levels` lists nested inside one another: bushy
/// shallow trees and deep chains.
fn arb_any_value(levels: u32) -> BoxedStrategy<Value> {
    prop_oneof![2 => arb_value(levels), 1 => arb_chain(levels)].boxed()
}

fn arb_frame_with(levels: u32) -> BoxedStrategy<Frame> {
    (any::<u16>(), any::<u32>(), vec((any::<u16>(), arb_any_value(levels)), 0..6))
        .prop_map(|(msg_type, ref_id, attrs)| Frame {
            msg_type,
            ref_id,
            attrs: attrs.into_iter().map(|(id, value)| Attr { id, value }).collect(),
            raw: Vec::new(),
        })
        .boxed()
}

fn arb_frame() -> BoxedStrategy<Frame> {
    arb_frame_with(LIST_LEVELS_ACCEPTED as u32)
}

/// The value type protocol v1 defines for an attribute id.
fn attr_type(id: u16) -> u8 {
    use ixn_shard::value::{TAG_INT, TAG_STR};
    match id {
        attr::CLIENT_TYPE | attr::ERROR_CODE | attr::NODE_ID | attr::PROTOCOL_VERSION | attr::SHARD_COUNT => TAG_INT,
        attr::HEARTBEAT_TIMEOUT | attr::SESSION_ID => TAG_INT,
        attr::PRIORITY | attr::RECEIVED_AT..=attr::SERVER_TIME | attr::VERSION => TAG_INT,
        attr::COUNT | attr::LIMIT | attr::LOCK | attr::SNAPSHOT_ID | attr::START | attr::TOTAL => TAG_INT,
        attr::CAPACITY | attr::DO_NOT_DISTURB | attr::TICKET | attr::EVENT_SEQUENCE | attr::EVENT_TIME => TAG_INT,
        attr::PROPERTIES | attr::DELETED_KEYS | attr::INTERACTION | attr::QUEUE_DEPTH => TAG_LIST,
        attr::MEDIA_LIST | attr::AGENT_STATE => TAG_LIST,
        _ => TAG_STR,
    }
}

/// Frames shaped like requests: request message types, the attribute ids
/// requests use, mostly with the right value type (so that decoding gets
/// past the first attribute), sometimes another type, sometimes repeated.
fn arb_request_like_frame() -> BoxedStrategy<Frame> {
    let types = prop_oneof![
        Just(msg_type::REQUEST_REGISTER_CLIENT),
        Just(msg_type::REQUEST_PING),
        Just(msg_type::REQUEST_CLOSE_SESSION),
        Just(msg_type::REQUEST_SUBMIT),
        Just(msg_type::REQUEST_GET_INTERACTION_PROPERTIES),
        Just(msg_type::REQUEST_CHANGE_PROPERTIES),
        Just(msg_type::REQUEST_PLACE_IN_QUEUE),
        Just(msg_type::REQUEST_STOP_PROCESSING),
        (msg_type::REQUEST_AGENT_LOGIN..=msg_type::REQUEST_UNSUBSCRIBE),
        any::<u16>(),
    ];
    let ids = prop_oneof![
        6 => prop::sample::select(vec![1u16, 2, 3, 11, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 28]),
        4 => prop::sample::select(vec![16u16, 17, 18, 21, 25, 64, 65, 66, 67, 68, 69]),
        1 => 0u16..80,
    ];
    let attr = (ids, 0u8..6, -2i64..10, "[a-z]{0,6}", vec((arb_key(), arb_leaf()), 0..4), arb_any_value(3)).prop_map(
        |(id, pick, int, text, entries, other)| {
            use ixn_shard::value::{TAG_INT, TAG_STR};
            let value = match (pick, attr_type(id)) {
                (0, _) => other,
                (_, TAG_INT) => Value::Int(int),
                (_, TAG_STR) => Value::Str(text),
                _ => Value::List(KvList::from_entries(entries)),
            };
            Attr { id, value }
        },
    );
    (types, any::<u32>(), vec(attr, 0..16))
        .prop_map(|(msg_type, ref_id, attrs)| Frame { msg_type, ref_id, attrs, raw: Vec::new() })
        .boxed()
}

/// Property lists as a request carries them: the Properties attribute is
/// one list level, so the values inside hold at most six more.
fn arb_props() -> BoxedStrategy<KvList> {
    vec((arb_key(), arb_any_value(LIST_LEVELS_ACCEPTED as u32 - 1)), 0..4).prop_map(KvList::from_entries).boxed()
}

fn arb_client_type() -> impl Strategy<Value = ClientType> {
    (1i64..=6).prop_map(|c| ClientType::from_code(c).expect("1..=6 are client types"))
}

fn arb_request() -> BoxedStrategy<Request> {
    let s = || any::<String>();
    prop_oneof![
        (arb_client_type(), s(), proptest::option::of(s()))
            .prop_map(|(client_type, name, credential)| Request::RegisterClient { client_type, name, credential }),
        Just(Request::Ping),
        Just(Request::CloseSession),
        (
            (s(), s(), s(), s(), s()),
            any::<i64>(),
            arb_props(),
            proptest::option::of(s()),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(
                |(
                    (tenant, media_type, interaction_type, interaction_subtype, queue),
                    priority,
                    properties,
                    id,
                    received_at_ms,
                )| {
                    Request::Submit(Box::new(Submit {
                        tenant,
                        media_type,
                        interaction_type,
                        interaction_subtype,
                        queue,
                        priority,
                        properties,
                        id,
                        received_at_ms,
                    }))
                }
            ),
        s().prop_map(|id| Request::GetInteractionProperties { id }),
        (s(), arb_props(), vec(arb_key(), 0..4)).prop_map(|(id, changed, deleted)| Request::ChangeProperties {
            id,
            changed,
            deleted
        }),
        (s(), proptest::option::of(s())).prop_map(|(id, queue)| Request::PlaceInQueue { id, queue }),
        (s(), proptest::option::of(s())).prop_map(|(id, reason)| Request::StopProcessing { id, reason }),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    /// Any frame within the nesting limit survives encode then decode
    /// exactly, and its length field is its byte length.
    #[test]
    fn frames_round_trip(f in arb_frame()) {
        let bytes = f.encode();
        prop_assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len());
        prop_assert_eq!(bytes[6], 1, "version byte");
        prop_assert_eq!(bytes[7], 0, "flags byte");
        prop_assert_eq!(decode_frame(&bytes, ABSOLUTE_MAX_FRAME), Ok(f.clone()));
        // The limit is inclusive: exactly at the limit is fine, one over is not.
        prop_assert_eq!(decode_frame(&bytes, bytes.len()), Ok(f));
        let over = split_frame(&bytes, bytes.len() - 1);
        prop_assert!(matches!(over, Err(FatalFrameError::TooLarge { .. })), "{:?}", over);
    }

    /// Decoding accepts exactly the frames whose lists nest at most
    /// LIST_LEVELS_ACCEPTED deep.
    #[test]
    fn nesting_limit_is_exact(f in arb_frame_with(LIST_LEVELS_ACCEPTED as u32 + 2)) {
        let bytes = f.encode();
        let decoded = decode_frame(&bytes, ABSOLUTE_MAX_FRAME);
        if frame_levels(&f) <= LIST_LEVELS_ACCEPTED {
            prop_assert_eq!(decoded, Ok(f));
        } else {
            prop_assert!(decoded.is_err(), "{} levels accepted", frame_levels(&f));
        }
    }

    /// Arbitrary bytes never panic the splitter or the body decoder, and no
    /// frame handed out is longer than the limit (nor shorter than a header).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600), max in 0usize..700) {
        let s = decode_stream(&bytes, max);
        for (h, total, _) in &s.frames {
            prop_assert!(*total <= max.min(ABSOLUTE_MAX_FRAME));
            prop_assert!(*total >= HEADER_LEN);
            prop_assert_eq!(h.length() as usize, *total);
            prop_assert_eq!(h.version, 1);
        }
    }

    /// Well-framed headers with arbitrary bodies: the splitter hands the
    /// whole frame out; the body decoder either fails (a body error, the
    /// connection goes on) or returns attributes that encode back to the
    /// same bytes (the encoding is canonical, flags aside).
    #[test]
    fn arbitrary_bodies_decode_canonically_or_fail(
        msg in any::<u16>(), ref_id in any::<u32>(), flags in any::<u8>(), body in vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = header_bytes((HEADER_LEN + body.len()) as u32, msg, 1, flags, ref_id);
        bytes.extend_from_slice(&body);
        let (h, got, total) = split_frame(&bytes, DEFAULT_MAX_FRAME).unwrap().expect("whole frame");
        prop_assert_eq!(total, bytes.len());
        prop_assert_eq!(got, &body[..]);
        if let Ok(attrs) = decode_body(got) {
            let again = Frame { msg_type: h.msg_type(), ref_id: h.ref_id(), attrs, raw: Vec::new() }.encode();
            let mut expect = bytes.clone();
            expect[7] = 0;
            prop_assert_eq!(again, expect);
        }
    }

    /// Valid frames with a few bytes flipped: never a panic, never a frame
    /// over the limit.
    #[test]
    fn mutated_frames_never_panic(
        f in arb_frame(), flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..6), max in 12usize..2048,
    ) {
        let mut bytes = f.encode();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        let s = decode_stream(&bytes, max);
        for (_, total, _) in &s.frames {
            prop_assert!(*total <= max);
        }
    }

    /// Every proper prefix of a frame is "not yet a frame"; the whole frame
    /// is one frame, whatever follows it.
    #[test]
    fn prefixes_are_incomplete_until_whole(f in arb_frame(), next in arb_frame()) {
        let bytes = f.encode();
        for cut in 0..bytes.len() {
            prop_assert_eq!(split_frame(&bytes[..cut], ABSOLUTE_MAX_FRAME), Ok(None), "cut at {}", cut);
        }
        let (_, body, total) = split_frame(&bytes, ABSOLUTE_MAX_FRAME).unwrap().expect("whole");
        prop_assert_eq!(total, bytes.len());
        prop_assert_eq!(body, &bytes[HEADER_LEN..]);
        let mut two = bytes.clone();
        two.extend_from_slice(&next.encode());
        let (_, _, total) = split_frame(&two, ABSOLUTE_MAX_FRAME).unwrap().expect("whole");
        prop_assert_eq!(total, bytes.len());
    }

    /// A stream of frames read in arbitrary chunks yields the same frames,
    /// in order, as the whole buffer at once; so does a broken stream.
    #[test]
    fn chunking_does_not_change_the_frames(
        frames in vec(arb_frame_with(3), 1..5),
        garbage in vec(any::<u8>(), 0..40),
        chunks in vec(1usize..40, 1..8),
    ) {
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode_into(&mut bytes);
        }
        bytes.extend_from_slice(&garbage);
        let whole = decode_stream(&bytes, ABSOLUTE_MAX_FRAME);
        let decoded: Vec<Frame> = whole.frames.iter().take(frames.len()).map(|(h, _, attrs)| Frame {
            msg_type: h.msg_type(),
            ref_id: h.ref_id(),
            attrs: attrs.clone().expect("valid body"),
            raw: Vec::new(),
        }).collect();
        prop_assert_eq!(&decoded, &frames);
        prop_assert_eq!(decode_stream_chunked(&bytes, ABSOLUTE_MAX_FRAME, &chunks), whole);
    }

    /// Typed requests survive `Request::encode`, the bytes, and
    /// `Request::decode`, with their reference id.
    #[test]
    fn requests_round_trip(r in arb_request(), ref_id in any::<u32>()) {
        let bytes = r.encode(ref_id).encode();
        let f = decode_frame(&bytes, ABSOLUTE_MAX_FRAME).expect("a request encodes to a valid frame");
        prop_assert_eq!(f.ref_id, ref_id);
        prop_assert_eq!(Request::decode(&f), Ok(r));
    }

    /// Request decoding of arbitrary request-shaped frames only ever fails
    /// with the per-request codes 11 to 14, and what it accepts re-encodes
    /// to a request that decodes the same.
    #[test]
    fn request_decode_is_total(f in arb_request_like_frame()) {
        match Request::decode(&f) {
            Ok(r) => prop_assert_eq!(Request::decode(&r.encode(f.ref_id)), Ok(r)),
            Err(e) => prop_assert!(
                matches!(
                    e.code,
                    ErrorCode::UnknownMessage
                        | ErrorCode::MissingAttribute
                        | ErrorCode::WrongAttributeType
                        | ErrorCode::InvalidValue
                ),
                "{:?}", e
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Fixed cases: limits and framing errors, as docs/protocol.md states them
// ---------------------------------------------------------------------------

#[test]
fn nesting_boundary() {
    let ok = Frame::new(1, 1).with(attr::PROPERTIES, nested(LIST_LEVELS_ACCEPTED));
    assert_eq!(decode_frame(&ok.encode(), DEFAULT_MAX_FRAME), Ok(ok));
    let deep = Frame::new(1, 1).with(attr::PROPERTIES, nested(LIST_LEVELS_ACCEPTED + 1));
    assert!(decode_frame(&deep.encode(), DEFAULT_MAX_FRAME).is_err());
    // An empty list at the eighth level is refused too.
    let mut v = Value::List(KvList::new());
    for _ in 0..LIST_LEVELS_ACCEPTED {
        v = Value::List(KvList::from_entries(vec![("k".into(), v)]));
    }
    assert!(decode_frame(&Frame::new(1, 1).with(23, v).encode(), DEFAULT_MAX_FRAME).is_err());
}

#[test]
fn length_is_checked_from_the_first_four_bytes() {
    let max = DEFAULT_MAX_FRAME;
    for n in 0..4 {
        assert_eq!(split_frame(&[0xff; 4][..n], max), Ok(None), "{n} bytes say nothing yet");
    }
    assert_eq!(split_frame(&11u32.to_le_bytes(), max), Err(FatalFrameError::LengthTooSmall(11)));
    assert_eq!(split_frame(&0u32.to_le_bytes(), max), Err(FatalFrameError::LengthTooSmall(0)));
    assert_eq!(
        split_frame(&(max as u32 + 1).to_le_bytes(), max),
        Err(FatalFrameError::TooLarge { length: max as u32 + 1, max })
    );
    assert_eq!(split_frame(&(max as u32).to_le_bytes(), max), Ok(None), "exactly the limit is allowed");
    // The version is looked at once the whole header is there, after the length.
    let h = header_bytes(12, 2, 2, 0, 1);
    assert_eq!(split_frame(&h[..11], max), Ok(None));
    assert_eq!(split_frame(&h, max), Err(FatalFrameError::UnsupportedVersion(2)));
    let h = header_bytes(5, 2, 2, 0, 1);
    assert_eq!(split_frame(&h, max), Err(FatalFrameError::LengthTooSmall(5)), "length before version");
    // A header alone (no body) is a whole frame; flags are ignored.
    let h = header_bytes(12, 2, 1, 0xa5, 7);
    let (hd, body, total) = split_frame(&h, max).unwrap().unwrap();
    assert_eq!((hd.msg_type(), hd.ref_id(), body.len(), total), (2, 7, 0, 12));
}

#[test]
fn configured_limit_is_capped_at_16_mib() {
    let len = ABSOLUTE_MAX_FRAME as u32 + 1;
    assert_eq!(
        split_frame(&len.to_le_bytes(), usize::MAX),
        Err(FatalFrameError::TooLarge { length: len, max: ABSOLUTE_MAX_FRAME })
    );
    assert_eq!(split_frame(&(ABSOLUTE_MAX_FRAME as u32).to_le_bytes(), usize::MAX), Ok(None));
    assert_eq!(ABSOLUTE_MAX_FRAME, 16 * 1024 * 1024);
    assert_eq!(DEFAULT_MAX_FRAME, 1024 * 1024);
}

#[test]
fn body_errors_are_specific() {
    use ixn_shard::value::{TAG_BIN, TAG_INT, TAG_STR};
    // Each of these is a well-framed body that must fail to decode.
    let bad: &[(&str, Vec<u8>)] = &[
        ("attribute id cut short", vec![1]),
        ("type tag missing", vec![1, 0]),
        ("value length cut short", vec![1, 0, TAG_STR, 1, 0]),
        ("payload shorter than its length", vec![1, 0, TAG_BIN, 4, 0, 0, 0, 1, 2]),
        ("int of 7 bytes", vec![1, 0, TAG_INT, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("int of 9 bytes", vec![1, 0, TAG_INT, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("unknown tag 0", vec![1, 0, 0, 0, 0, 0, 0]),
        ("unknown tag 5", vec![1, 0, 5, 0, 0, 0, 0]),
        ("string not UTF-8", vec![1, 0, TAG_STR, 2, 0, 0, 0, 0xc3, 0x28]),
        ("list key not UTF-8", vec![1, 0, TAG_LIST, 8, 0, 0, 0, 1, 0, 0xff, TAG_BIN, 0, 0, 0, 0]),
        ("list entry cut short", vec![1, 0, TAG_LIST, 3, 0, 0, 0, 1, 0, b'k']),
        ("list key length past the list", vec![1, 0, TAG_LIST, 2, 0, 0, 0, 9, 0]),
    ];
    for (what, body) in bad {
        assert!(decode_body(body).is_err(), "{what}: {body:?}");
    }
    // And these are fine.
    assert_eq!(decode_body(&[]), Ok(vec![]));
    assert_eq!(decode_body(&[9, 0, TAG_BIN, 0, 0, 0, 0]), Ok(vec![Attr { id: 9, value: Value::Bin(vec![]) }]));
    assert_eq!(
        decode_body(&[9, 0, TAG_LIST, 7, 0, 0, 0, 0, 0, TAG_STR, 0, 0, 0, 0]),
        Ok(vec![Attr { id: 9, value: Value::List(KvList::from_entries(vec![("".into(), Value::Str("".into()))])) }]),
        "an empty key is valid at the codec level (requests refuse it later)"
    );
}

#[test]
fn longest_key_round_trips() {
    let key = "k".repeat(u16::MAX as usize);
    let f = Frame::new(1, 1).with(attr::PROPERTIES, KvList::from_entries(vec![(key, Value::Int(5))]));
    assert_eq!(decode_frame(&f.encode(), ABSOLUTE_MAX_FRAME), Ok(f));
}

/// A list key longer than 65535 bytes cannot be expressed on the wire (its
/// length is a u16): the encoder must refuse it rather than write a frame
/// that means something else. Accepts a refusal or a faithful round trip.
#[test]
fn overlong_key_is_refused_or_round_trips() {
    let key = "k".repeat(u16::MAX as usize + 1);
    let f = Frame::new(1, 1).with(attr::PROPERTIES, KvList::from_entries(vec![(key, Value::Int(5))]));
    let encoded = std::panic::catch_unwind(|| f.encode());
    if let Ok(bytes) = encoded {
        let back = decode_frame(&bytes, ABSOLUTE_MAX_FRAME);
        assert!(
            back.as_ref() == Ok(&f),
            "the encoder wrote a frame that means something else: {:?}",
            back.map(|_| "another frame")
        );
    }
}

// ---------------------------------------------------------------------------
// The worked example of docs/protocol.md
// ---------------------------------------------------------------------------

/// The example request: RequestSubmit, reference id 1, media type chat,
/// queue inbound, one property lang = en; everything else defaulted.
fn example_submit() -> Frame {
    Frame::new(msg_type::REQUEST_SUBMIT, 1)
        .with(attr::MEDIA_TYPE, "chat")
        .with(attr::QUEUE, "inbound")
        .with(attr::PROPERTIES, kv![("lang", "en")])
}

/// The id of the example: made 2025-01-01T00:00:00Z, first of that
/// millisecond, node 1, partition 7.
fn example_id_parts() -> IdParts {
    IdParts { time_ms: 1_735_689_600_000, node: 1, partition: 7, seq: 0 }
}

fn example_ack() -> Frame {
    event_ack(1).with(attr::INTERACTION_ID, id::encode(example_id_parts()))
}

fn example_ping() -> Frame {
    Frame::new(msg_type::REQUEST_PING, 2)
}

/// The answer to the ping, at 2025-01-01T00:00:00.123Z.
fn example_pong() -> Frame {
    event_ack(2).with(attr::SERVER_TIME, 1_735_689_600_123i64)
}

fn docs_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")
}

/// The bytes of the hex block that follows `<!-- example:NAME -->` in the
/// specification. Each line is `OFFSET  BYTES... | comment`; the offsets
/// are checked too.
fn documented_bytes(doc: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- example:{name} -->");
    let start = doc.find(&marker).unwrap_or_else(|| panic!("docs/protocol.md has no {marker}"));
    let rest = &doc[start + marker.len()..];
    let open = rest.find("```").expect("a code block after the marker");
    let rest = &rest[open + 3..];
    let rest = &rest[rest.find('\n').expect("fence line") + 1..];
    let block = &rest[..rest.find("```").expect("closing fence")];
    let mut bytes = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let data = line.split('|').next().unwrap();
        let mut tokens = data.split_whitespace();
        let offset = tokens.next().expect("offset");
        let offset = usize::from_str_radix(offset, 16).unwrap_or_else(|_| panic!("bad offset in {line:?}"));
        assert_eq!(offset, bytes.len(), "{name}: offset of {line:?}");
        for t in tokens {
            assert_eq!(t.len(), 2, "{name}: {t:?} in {line:?} is not one byte");
            bytes.push(u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("{name}: {t:?} in {line:?}")));
        }
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn documented_example_matches_the_encoder() {
    let doc = std::fs::read_to_string(docs_path()).expect("docs/protocol.md");
    let pull = Request::Pull { tenant: "default".into(), view: "inbound-by-priority".into(), count: 5 }.encode(3);
    for (name, frame) in [
        ("submit", example_submit()),
        ("ack", example_ack()),
        ("ping", example_ping()),
        ("pong", example_pong()),
        ("pull", pull),
    ] {
        let written = frame.encode();
        let documented = documented_bytes(&doc, name);
        assert_eq!(
            documented,
            written,
            "{name}: the document shows\n{}\nthe encoder writes\n{}",
            hex(&documented),
            hex(&written)
        );
        assert_eq!(decode_frame(&documented, DEFAULT_MAX_FRAME), Ok(frame));
    }
    // The interaction id the document spells out.
    let id = id::encode(example_id_parts());
    assert!(doc.contains(&format!("`{id}`")), "docs/protocol.md should name the example id {id}");
    assert_eq!(id::decode(&id), Some(example_id_parts()));
    assert_eq!(id::partition_of(&id), 7);
}

#[test]
fn documented_example_is_a_submit_with_defaults() {
    let r = Request::decode(&example_submit()).expect("valid submit");
    let Request::Submit(s) = r else { panic!("not a submit: {r:?}") };
    assert_eq!(
        *s,
        Submit {
            tenant: "default".into(),
            media_type: "chat".into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: "InboundNew".into(),
            queue: "inbound".into(),
            priority: 0,
            properties: kv![("lang", "en")],
            id: None,
            received_at_ms: None,
        }
    );
}

/// The message type, attribute and error numbers the specification lists.
#[test]
fn documented_numbers_match_the_code() {
    let doc = std::fs::read_to_string(docs_path()).expect("docs/protocol.md");
    // Every message type the code names must have its row.
    let mut named = 0;
    for n in 0..1024u16 {
        let name = msg_type::name(n);
        if name == "Unknown" {
            continue;
        }
        named += 1;
        let row = format!("| {n} | {name} |");
        assert!(doc.contains(&row), "message table lacks {row:?}");
    }
    assert_eq!(named, 69, "message types named by the code");
    for code in 0..200 {
        if let Some(e) = ErrorCode::from_code(code) {
            assert_eq!(e.code(), code);
            let row = format!("| {code} | {e:?} |");
            assert!(doc.contains(&row), "error table lacks {row:?}");
        }
    }
    for code in 0..20 {
        if let Some(t) = ClientType::from_code(code) {
            let row = format!("| {code} | {} |", t.name());
            assert!(doc.contains(&row), "client type table lacks {row:?}");
        }
    }
    let attrs = [
        (attr::CLIENT_TYPE, "ClientType", "int"),
        (attr::CLIENT_NAME, "ClientName", "string"),
        (attr::CREDENTIAL, "Credential", "string"),
        (attr::ERROR_CODE, "ErrorCode", "int"),
        (attr::ERROR_TEXT, "ErrorText", "string"),
        (attr::SERVER_NAME, "ServerName", "string"),
        (attr::NODE_ID, "NodeId", "int"),
        (attr::PROTOCOL_VERSION, "ProtocolVersion", "int"),
        (attr::SHARD_COUNT, "ShardCount", "int"),
        (attr::HEARTBEAT_TIMEOUT, "HeartbeatTimeout", "int"),
        (attr::SESSION_ID, "SessionId", "int"),
        (attr::INTERACTION_ID, "InteractionId", "string"),
        (attr::TENANT, "Tenant", "string"),
        (attr::MEDIA_TYPE, "MediaType", "string"),
        (attr::INTERACTION_TYPE, "InteractionType", "string"),
        (attr::INTERACTION_SUBTYPE, "InteractionSubtype", "string"),
        (attr::QUEUE, "Queue", "string"),
        (attr::PRIORITY, "Priority", "int"),
        (attr::PROPERTIES, "Properties", "list"),
        (attr::DELETED_KEYS, "DeletedKeys", "list"),
        (attr::REASON, "Reason", "string"),
        (attr::SUBMITTED_BY, "SubmittedBy", "string"),
        (attr::RECEIVED_AT, "ReceivedAt", "int"),
        (attr::SUBMITTED_AT, "SubmittedAt", "int"),
        (attr::PLACED_IN_QUEUE_AT, "PlacedInQueueAt", "int"),
        (attr::MOVED_TO_QUEUE_AT, "MovedToQueueAt", "int"),
        (attr::DELIVERED_AT, "DeliveredAt", "int"),
        (attr::ASSIGNED_AT, "AssignedAt", "int"),
        (attr::HELD_AT, "HeldAt", "int"),
        (attr::COMPLETED_AT, "CompletedAt", "int"),
        (attr::SERVER_TIME, "ServerTime", "int"),
        (attr::BUSINESS_PROCESS, "BusinessProcess", "string"),
        (attr::VERSION, "Version", "int"),
        (attr::VIEW, "View", "string"),
        (attr::COUNT, "Count", "int"),
        (attr::INTERACTION, "Interaction", "list"),
        (attr::CONDITION, "Condition", "string"),
        (attr::LIMIT, "Limit", "int"),
        (attr::WORKBIN, "Workbin", "string"),
        (attr::WORKBIN_OWNER, "WorkbinOwner", "string"),
        (attr::LOCK, "Lock", "int"),
        (attr::SNAPSHOT_ID, "SnapshotId", "int"),
        (attr::START, "Start", "int"),
        (attr::QUEUE_DEPTH, "QueueDepth", "list"),
        (attr::TOTAL, "Total", "int"),
        (attr::AGENT_ID, "AgentId", "string"),
        (attr::PLACE, "Place", "string"),
        (attr::MEDIA_LIST, "MediaList", "list"),
        (attr::CAPACITY, "Capacity", "int"),
        (attr::DO_NOT_DISTURB, "DoNotDisturb", "int"),
        (attr::TICKET, "Ticket", "int"),
        (attr::AGENT_STATE, "AgentState", "list"),
        (attr::EVENT_SEQUENCE, "EventSequence", "int"),
        (attr::EVENT_TIME, "EventTime", "int"),
        (attr::FROM_QUEUE, "FromQueue", "string"),
        (attr::FROM_AGENT, "FromAgent", "string"),
    ];
    for (id, name, ty) in attrs {
        let row = format!("| {id} | {name} | {ty} |");
        assert!(doc.contains(&row), "attribute table lacks {row:?}");
    }
}

/// Attributes passed on pre-encoded (Frame::raw) go on the wire exactly as
/// if they had been pushed after the others.
#[test]
fn pre_encoded_attributes_encode_like_pushed_ones() {
    use ixn_shard::proto::frame::encode_attr;
    let l = kv![("id", "X1"), ("priority", 3)];
    let pushed = Frame::new(msg_type::EVENT_SNAPSHOT_INTERACTIONS, 7)
        .with(attr::COUNT, 2i64)
        .with(attr::INTERACTION, l.clone())
        .with(attr::INTERACTION, kv![("id", "X2")]);
    let mut raw = Frame::new(msg_type::EVENT_SNAPSHOT_INTERACTIONS, 7).with(attr::COUNT, 2i64);
    encode_attr(attr::INTERACTION, &Value::List(l), &mut raw.raw);
    encode_attr(attr::INTERACTION, &Value::List(kv![("id", "X2")]), &mut raw.raw);
    assert_eq!(raw.encode(), pushed.encode());
    assert_eq!(decode_frame(&raw.encode(), DEFAULT_MAX_FRAME), Ok(pushed));
}
