//! The decoding steps of the `frame_decoder` fuzz target.
//!
//! This file is also compiled into `shard/tests/fuzz_corpus.rs` (included by
//! path), so the fuzzer and the corpus replay that runs with `cargo test`
//! execute exactly the same code. It may only use `std` and `ixn_shard`.
//!
//! The input is a byte stream as a client would send it. It is split into
//! frames the way the server's read loop does (`split_frame` on a growing
//! buffer, with a small frame limit so that the oversized path is easy to
//! reach), and each whole frame goes through `decode_body` and
//! `Request::decode`. Besides "no panic", it asserts:
//!
//! - every frame handed out is at least a header and at most the limit, and
//!   its length field, version and body slice agree;
//! - reading the stream in one piece and one byte at a time gives the same
//!   steps (frame boundaries and errors do not depend on how reads are cut);
//! - a body that decodes encodes back to the same bytes (flags aside): the
//!   encoding is canonical, so nothing is silently dropped or invented;
//! - a request that decodes re-encodes to a frame that decodes to the same
//!   request; a request that does not decode fails with code 11 to 14.

use ixn_shard::proto::frame::{decode_body, split_frame, FatalFrameError, Frame, Header, HEADER_LEN, PROTOCOL_VERSION};
use ixn_shard::proto::msg::ErrorCode;
use ixn_shard::proto::request::Request;

/// Frame limit used by the target: small, so that lengths over the limit
/// are as easy to find as lengths under it.
pub const FUZZ_MAX_FRAME: usize = 512;

/// What the read loop did, step by step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A whole frame.
    Frame {
        msg_type: u16,
        ref_id: u32,
        total: usize,
        /// Number of attributes, or the body error.
        body: Result<usize, String>,
        /// The request's name, or its error code; `None` if the body failed.
        request: Option<Result<&'static str, ErrorCode>>,
    },
    /// A fatal framing error: the server answers and closes.
    Fatal(FatalFrameError),
    /// The stream ended in the middle of a frame, with this many bytes held.
    Incomplete(usize),
}

/// Runs both read strategies over `data`, checks they agree, and returns the
/// steps.
pub fn check(data: &[u8]) -> Vec<Step> {
    let whole = read_whole(data);
    let bytewise = read_bytewise(data);
    assert_eq!(whole, bytewise, "frame boundaries depend on how the stream is read");
    whole
}

/// All of `data` arrives in one read.
pub fn read_whole(data: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut at = 0;
    loop {
        match split_frame(&data[at..], FUZZ_MAX_FRAME) {
            Ok(Some((header, body, total))) => {
                steps.push(frame_step(&header, body, total, &data[at..at + total]));
                at += total;
            }
            Ok(None) => {
                steps.push(Step::Incomplete(data.len() - at));
                return steps;
            }
            Err(e) => {
                steps.push(Step::Fatal(e));
                return steps;
            }
        }
    }
}

/// `data` arrives one byte per read; the buffer is looked at after each.
pub fn read_bytewise(data: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(FUZZ_MAX_FRAME);
    for &b in data {
        buf.push(b);
        match split_frame(&buf, FUZZ_MAX_FRAME) {
            Ok(Some((header, body, total))) => {
                // One byte completes at most one frame, and completes it
                // exactly: nothing can follow it in the buffer yet.
                assert_eq!(total, buf.len(), "a frame completed before its last byte arrived");
                steps.push(frame_step(&header, body, total, &buf));
                buf.clear();
            }
            Ok(None) => {}
            Err(e) => {
                steps.push(Step::Fatal(e));
                return steps;
            }
        }
    }
    steps.push(Step::Incomplete(buf.len()));
    steps
}

fn frame_step(header: &Header, body: &[u8], total: usize, bytes: &[u8]) -> Step {
    assert!(total >= HEADER_LEN, "frame of {total} bytes is shorter than a header");
    assert!(total <= FUZZ_MAX_FRAME, "frame of {total} bytes is over the {FUZZ_MAX_FRAME}-byte limit");
    assert_eq!(header.length() as usize, total);
    assert_eq!(header.version, PROTOCOL_VERSION);
    assert_eq!(bytes.len(), total);
    assert_eq!(body, &bytes[HEADER_LEN..]);
    let (msg_type, ref_id) = (header.msg_type(), header.ref_id());
    let attrs = match decode_body(body) {
        Ok(attrs) => attrs,
        Err(e) => return Step::Frame { msg_type, ref_id, total, body: Err(e.0), request: None },
    };
    let count = attrs.len();
    let frame = Frame { msg_type, ref_id, attrs, raw: Vec::new() };
    let mut expect = bytes.to_vec();
    expect[7] = 0; // flags: ignored on input, written as 0
    assert_eq!(frame.encode(), expect, "decoding then encoding changed the frame");
    let request = match Request::decode(&frame) {
        Ok(r) => {
            let again = Request::decode(&r.encode(ref_id));
            assert_eq!(again.as_ref(), Ok(&r), "a decoded request does not survive encode and decode");
            Ok(r.name())
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::UnknownMessage
                        | ErrorCode::MissingAttribute
                        | ErrorCode::WrongAttributeType
                        | ErrorCode::InvalidValue
                ),
                "request decoding failed with {e}"
            );
            Err(e.code)
        }
    };
    Step::Frame { msg_type, ref_id, total, body: Ok(count), request: Some(request) }
}
