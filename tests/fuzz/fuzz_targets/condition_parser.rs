//! Fuzz target for the condition language (shard/src/condition.rs): any
//! text either parses or gives an error with an offset inside the text;
//! parsing never panics, and a parsed condition evaluates without panicking.
#![no_main]

use ixn_shard::condition::{parse_order, Condition, Scalar};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Condition::parse(text) {
        Ok(c) => {
            let get = |name: &str| match name.len() % 3 {
                0 => None,
                1 => Some(Scalar::Int(name.len() as i64)),
                _ => Some(Scalar::Str("value")),
            };
            let _ = c.eval(&get);
        }
        Err(e) => assert!(e.offset <= text.len(), "error offset {} past the end ({})", e.offset, text.len()),
    }
    let _ = parse_order(text);
});
