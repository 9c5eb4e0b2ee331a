//! Decodes a record (and every other on-disk structure) from arbitrary
//! bytes; see `farmlog_fuzz::decode_arbitrary_record`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    farmlog_fuzz::decode_arbitrary_record(data);
});
