//! Replays the fuzz corpus of `tests/fuzz/` through the same decoding steps
//! as the `frame_decoder` fuzz target, so every `cargo test` exercises the
//! corpus without the fuzzer. Also holds the generator of the seed files.
//!
//! Run: `cargo test -p ixn-shard --test fuzz_corpus`.
//! Rewrite the seeds after changing them here:
//! `cargo test -p ixn-shard --test fuzz_corpus -- --ignored write_seed_corpus`.

// The fuzz target's own code, compiled here too: the replay cannot drift
// from what the fuzzer runs.
#[path = "../../tests/fuzz/src/lib.rs"]
mod drive;

use std::path::PathBuf;

use drive::{check, Step, FUZZ_MAX_FRAME};
use ixn_shard::kv;
use ixn_shard::proto::frame::{FatalFrameError, Frame, HEADER_LEN};
use ixn_shard::proto::msg::{attr, msg_type, ClientType, ErrorCode};
use ixn_shard::proto::request::{Request, Submit};
use ixn_shard::value::{KvList, Value, TAG_INT, TAG_LIST, TAG_STR};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus/frame_decoder")
}

/// What a seed must do when replayed.
#[derive(Debug)]
enum Expect {
    /// Whole frames that all decode to these requests, nothing left over.
    Requests(&'static [&'static str]),
    /// One frame whose body does not decode.
    BodyError,
    /// One frame whose body decodes but whose request fails with this code.
    RequestError(ErrorCode),
    /// A fatal framing error after this many whole frames.
    Fatal { after: usize, error: FatalFrameError },
    /// This many whole frames, then an unfinished one of this many bytes.
    Incomplete { after: usize, held: usize },
}

fn header(length: u32, msg_type: u16, version: u8, ref_id: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&length.to_le_bytes());
    h.extend_from_slice(&msg_type.to_le_bytes());
    h.push(version);
    h.push(0);
    h.extend_from_slice(&ref_id.to_le_bytes());
    h
}

/// A frame with a hand-made body (for bodies the encoder cannot write).
fn raw_frame(msg_type: u16, ref_id: u32, body: &[u8]) -> Vec<u8> {
    let mut f = header((HEADER_LEN + body.len()) as u32, msg_type, 1, ref_id);
    f.extend_from_slice(body);
    f
}

fn nested(levels: usize) -> Value {
    let mut v = Value::Int(1);
    for _ in 0..levels {
        v = Value::List(KvList::from_entries(vec![("k".into(), v)]));
    }
    v
}

fn register() -> Request {
    Request::RegisterClient {
        client_type: ClientType::MediaServer,
        name: "chat-1".into(),
        credential: Some("pw".into()),
    }
}

fn submit() -> Request {
    Request::Submit(Box::new(Submit {
        tenant: "default".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "inbound".into(),
        priority: 5,
        properties: kv![("lang", "en"), ("n", 3), ("blob", vec![0u8, 1, 255]), ("addr", kv![("city", "Oslo")])],
        id: Some("order-42".into()),
        received_at_ms: Some(1_735_689_600_000),
    }))
}

/// The seed corpus: name, bytes, expected replay.
fn seeds() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let enc = |r: &Request, ref_id: u32| r.encode(ref_id).encode();
    let id = "07BKBRG000000407".to_string();
    let mut pipeline = Vec::new();
    for (i, r) in
        [register(), Request::Ping, submit(), Request::GetInteractionProperties { id: id.clone() }].iter().enumerate()
    {
        r.encode(i as u32 + 1).encode_into(&mut pipeline);
    }
    let mut truncated = enc(&submit(), 7);
    truncated.truncate(truncated.len() - 5);
    let truncated_len = truncated.len();
    let mut after_valid = enc(&Request::Ping, 1);
    after_valid.extend_from_slice(&header(1 << 20, msg_type::REQUEST_PING, 1, 2));
    vec![
        ("seed-register", enc(&register(), 1), Requests(&["RequestRegisterClient"])),
        ("seed-ping", enc(&Request::Ping, 2), Requests(&["RequestPing"])),
        ("seed-submit", enc(&submit(), 3), Requests(&["RequestSubmit"])),
        (
            "seed-get",
            enc(&Request::GetInteractionProperties { id: id.clone() }, 4),
            Requests(&["RequestGetInteractionProperties"]),
        ),
        (
            "seed-change",
            enc(
                &Request::ChangeProperties { id: id.clone(), changed: kv![("lang", "fr")], deleted: vec!["n".into()] },
                5,
            ),
            Requests(&["RequestChangeProperties"]),
        ),
        (
            "seed-place",
            enc(&Request::PlaceInQueue { id: id.clone(), queue: Some("done".into()) }, 6),
            Requests(&["RequestPlaceInQueue"]),
        ),
        (
            "seed-stop",
            enc(&Request::StopProcessing { id: id.clone(), reason: Some("done".into()) }, 7),
            Requests(&["RequestStopProcessing"]),
        ),
        (
            "seed-pipeline",
            pipeline,
            Requests(&["RequestRegisterClient", "RequestPing", "RequestSubmit", "RequestGetInteractionProperties"]),
        ),
        (
            "seed-nesting-7",
            Frame::new(msg_type::REQUEST_CHANGE_PROPERTIES, 8)
                .with(attr::INTERACTION_ID, id.as_str())
                .with(attr::PROPERTIES, nested(7))
                .encode(),
            Requests(&["RequestChangeProperties"]),
        ),
        ("seed-truncated", truncated, Incomplete { after: 0, held: truncated_len }),
        (
            "seed-oversized-length",
            header(1 << 20, msg_type::REQUEST_PING, 1, 1),
            Fatal { after: 0, error: FatalFrameError::TooLarge { length: 1 << 20, max: FUZZ_MAX_FRAME } },
        ),
        (
            "seed-oversized-after-valid",
            after_valid,
            Fatal { after: 1, error: FatalFrameError::TooLarge { length: 1 << 20, max: FUZZ_MAX_FRAME } },
        ),
        ("seed-length-too-small", header(5, 2, 1, 1), Fatal { after: 0, error: FatalFrameError::LengthTooSmall(5) }),
        ("seed-bad-version", header(12, 2, 2, 1), Fatal { after: 0, error: FatalFrameError::UnsupportedVersion(2) }),
        ("seed-bad-tag", raw_frame(2, 9, &[1, 0, 9, 1, 0, 0, 0, 0]), BodyError),
        ("seed-bad-int-length", raw_frame(2, 10, &[22, 0, TAG_INT, 3, 0, 0, 0, 1, 2, 3]), BodyError),
        ("seed-bad-utf8", raw_frame(16, 11, &[18, 0, TAG_STR, 2, 0, 0, 0, 0xc3, 0x28]), BodyError),
        (
            "seed-list-overrun",
            raw_frame(18, 12, &[23, 0, TAG_LIST, 6, 0, 0, 0, 2, 0, b'k', b'k', TAG_INT, 8]),
            BodyError,
        ),
        (
            "seed-deep-nesting",
            Frame::new(msg_type::REQUEST_CHANGE_PROPERTIES, 13)
                .with(attr::INTERACTION_ID, id.as_str())
                .with(attr::PROPERTIES, nested(8))
                .encode(),
            BodyError,
        ),
        ("seed-unknown-type", Frame::new(999, 14).with(1, 1).encode(), RequestError(ErrorCode::UnknownMessage)),
        (
            "seed-missing-queue",
            Frame::new(msg_type::REQUEST_SUBMIT, 15).with(attr::MEDIA_TYPE, "chat").encode(),
            RequestError(ErrorCode::MissingAttribute),
        ),
        (
            "seed-wrong-type",
            Frame::new(msg_type::REQUEST_SUBMIT, 16).with(attr::MEDIA_TYPE, 5).with(attr::QUEUE, "inbound").encode(),
            RequestError(ErrorCode::WrongAttributeType),
        ),
        (
            "seed-bad-client-type",
            Frame::new(msg_type::REQUEST_REGISTER_CLIENT, 17)
                .with(attr::CLIENT_TYPE, 9)
                .with(attr::CLIENT_NAME, "x")
                .encode(),
            RequestError(ErrorCode::InvalidValue),
        ),
    ]
}

fn frames(steps: &[Step]) -> usize {
    steps.iter().filter(|s| matches!(s, Step::Frame { .. })).count()
}

fn assert_expected(name: &str, steps: &[Step], expect: &Expect) {
    let last = steps.last().expect("at least one step");
    match expect {
        Expect::Requests(names) => {
            let got: Vec<_> = steps
                .iter()
                .filter_map(|s| match s {
                    Step::Frame { request: Some(Ok(n)), .. } => Some(*n),
                    _ => None,
                })
                .collect();
            assert_eq!(&got, names, "{name}: {steps:?}");
            assert_eq!(frames(steps), names.len(), "{name}: {steps:?}");
            assert_eq!(last, &Step::Incomplete(0), "{name}");
        }
        Expect::BodyError => {
            assert!(matches!(steps, [Step::Frame { body: Err(_), .. }, Step::Incomplete(0)]), "{name}: {steps:?}");
        }
        Expect::RequestError(code) => {
            assert!(
                matches!(steps, [Step::Frame { request: Some(Err(c)), .. }, Step::Incomplete(0)] if c == code),
                "{name}: {steps:?}"
            );
        }
        Expect::Fatal { after, error } => {
            assert_eq!(frames(steps), *after, "{name}: {steps:?}");
            assert_eq!(last, &Step::Fatal(error.clone()), "{name}");
        }
        Expect::Incomplete { after, held } => {
            assert_eq!(frames(steps), *after, "{name}: {steps:?}");
            assert_eq!(last, &Step::Incomplete(*held), "{name}");
        }
    }
}

/// Every file of the corpus directory goes through the fuzz target's
/// checks. An empty (or missing) corpus is a failure: it would make this
/// test pass without testing anything.
#[test]
fn corpus_replays_without_failure() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the fuzz corpus {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the fuzz corpus {} is empty", dir.display());
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "corpus file {} fails the fuzz target's checks", path.display());
    }
    println!("replayed {} corpus files", files.len());
}

/// The seeds do what their names say.
#[test]
fn seeds_behave_as_named() {
    for (name, bytes, expect) in seeds() {
        let steps = check(&bytes);
        assert_expected(name, &steps, &expect);
        if !matches!(expect, Expect::Fatal { .. }) {
            let valid_frames_fit = steps.iter().all(|s| match s {
                Step::Frame { total, .. } => *total <= FUZZ_MAX_FRAME,
                _ => true,
            });
            assert!(valid_frames_fit, "{name}");
        }
    }
}

/// The committed seed files are exactly what `seeds()` makes, and every
/// committed `seed-*` file still has a generator.
#[test]
fn seed_files_are_current() {
    let dir = corpus_dir();
    let seeds = seeds();
    for (name, bytes, _) in &seeds {
        let path = dir.join(name);
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run: cargo test -p ixn-shard --test fuzz_corpus -- --ignored write_seed_corpus",
                path.display()
            )
        });
        assert!(
            &on_disk == bytes,
            "{} is stale; run: cargo test -p ixn-shard --test fuzz_corpus -- --ignored write_seed_corpus",
            path.display()
        );
    }
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let name = entry.expect("entry").file_name().to_string_lossy().to_string();
        if name.starts_with("seed-") {
            assert!(seeds.iter().any(|(n, _, _)| *n == name), "{name} has no generator in seeds(); delete it");
        }
    }
}

/// Writes the seed files into the corpus directory (ignored: run it by
/// hand after changing `seeds()`).
#[test]
#[ignore = "writes tests/fuzz/corpus/frame_decoder/seed-*; run by hand"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
            std::fs::remove_file(&path).expect("remove old seed");
        }
    }
    for (name, bytes, _) in seeds() {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}
