//! Parts of `ixn-perf` that the criterion benches (`perf/benches`) share
//! with the command.

pub mod cycle;
