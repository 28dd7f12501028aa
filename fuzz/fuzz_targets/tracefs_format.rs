//! The tracefs `format` parser on any text, then the field readers the agent uses on a raw
//! record (its bytes come from the input too): never a panic, never a read past the record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpviz::live::tracefs::parse_format;

// Input: format text, then (after the first NUL byte, if any) a raw record.
fuzz_target!(|input: &[u8]| {
    let (text, raw) = match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Ok(format) = parse_format("tcp", "fuzz", text) else { return };
    assert!(!format.fields.is_empty());
    let _ = format.record_len();
    for f in &format.fields {
        if let Some(bytes) = format.bytes(raw, &f.name) {
            assert!(bytes.len() <= raw.len());
        }
        let u = format.uint(raw, &f.name);
        let i = format.int(raw, &f.name);
        assert_eq!(u.is_some(), i.is_some(), "{}: uint and int disagree on readability", f.name);
    }
});
