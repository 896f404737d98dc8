//! The condition parser on arbitrary input: never panics, and errors point
//! inside the text. (The cargo-fuzz target `condition_parser` in tests/fuzz
//! does the same with coverage guidance.)

use ixn_shard::condition::{parse_order, Condition, Scalar};
use proptest::prelude::*;

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("priority".to_string()),
        Just("lang".to_string()),
        Just("'en'".to_string()),
        Just("5".to_string()),
        Just("-3".to_string()),
        Just("=".to_string()),
        Just("!=".to_string()),
        Just("<=".to_string()),
        Just(">".to_string()),
        Just("AND".to_string()),
        Just("OR".to_string()),
        Just("NOT".to_string()),
        Just("IN".to_string()),
        Just("LIKE".to_string()),
        Just("IS".to_string()),
        Just("NULL".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just(",".to_string()),
        Just("'%a_'".to_string()),
        Just("\"odd key\"".to_string()),
        "[ -~]{0,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
        if let Err(e) = Condition::parse(&text) {
            prop_assert!(e.offset <= text.len());
        }
        let _ = parse_order(&text);
    }

    #[test]
    fn token_soup_never_panics_and_evaluates(parts in proptest::collection::vec(fragment(), 0..16)) {
        let text = parts.join(" ");
        match Condition::parse(&text) {
            Ok(c) => {
                let get = |name: &str| if name == "priority" { Some(Scalar::Int(5)) } else if name == "lang" { Some(Scalar::Str("en")) } else { None };
                let _ = c.eval(&get);
            }
            Err(e) => prop_assert!(e.offset <= text.len(), "{text}: {e}"),
        }
    }
}
