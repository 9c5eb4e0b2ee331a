//! Opens a log directory built from arbitrary bytes; see
//! `farmlog_fuzz::open_arbitrary_dir` for how the input is read.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    farmlog_fuzz::open_arbitrary_dir(data);
});
