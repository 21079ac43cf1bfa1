//! Feeds arbitrary bytes to everything that reads untrusted MessagePack:
//! the message decoder, the value validators and the msgpack → JSON mapping.
//! None of them may panic, overflow the stack or allocate from a length
//! header, and what they accept must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multifrost::codec::{self, Limits};
use multifrost::json;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = codec::decode(data, limits);
    let valid = codec::validate_value(data, limits).is_ok();
    let _ = codec::validate_args(data, limits);
    // Whatever converts to JSON is one valid value, and its JSON converts
    // back to a value the codec accepts (floats and bin change form, so
    // only success is compared, not bytes).
    if let Ok(text) = json::from_msgpack(data) {
        assert!(valid, "from_msgpack accepted bytes validate_value refuses");
        let again = json::to_msgpack(&text).unwrap_or_else(|e| {
            panic!("from_msgpack wrote JSON that to_msgpack refuses: {e}: {text}")
        });
        assert!(
            codec::validate_value(&again, limits).is_ok(),
            "from_msgpack wrote JSON whose msgpack the codec refuses"
        );
    }
    // Tight limits walk the refusal paths.
    let tight = Limits {
        max_bytes: 16,
        max_items: 8,
        max_depth: 4,
    };
    let _ = codec::decode(data, tight);
    let _ = codec::validate_value(data, tight);
});
