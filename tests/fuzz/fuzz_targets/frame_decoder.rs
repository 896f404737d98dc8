//! Fuzz target: the input is a byte stream from a client. See
//! `ixn_fuzz::check` for what is decoded and asserted.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ixn_fuzz::check(data);
});
