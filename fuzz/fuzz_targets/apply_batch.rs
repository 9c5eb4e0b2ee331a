//! Applies arbitrary bytes as a command-batch record to a populated state;
//! see `farmlog_fuzz::apply_arbitrary_batch`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    farmlog_fuzz::apply_arbitrary_batch(data);
});
