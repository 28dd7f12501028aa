//! The BTF reader on any bytes, then member-offset lookups: the agent's own paths, and
//! paths made of names found in the input's string section. Never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpviz::live::btf::Btf;

/// The paths the live agent asks the kernel's BTF for.
const AGENT_PATHS: [&str; 3] = ["sock.__sk_common.skc_net.net", "net.ns.inum", "sk_buff.cb"];

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else { return };
    for path in AGENT_PATHS {
        let _ = btf.offset_of(path);
    }
    // Names from the input (NUL-separated, as in a string section): try them as struct and
    // member names, so that lookups reach the members of whatever the input describes.
    let names: Vec<&str> = data
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter(|s| !s.is_empty() && s.len() < 64 && !s.contains('.'))
        .take(6)
        .collect();
    for a in &names {
        let _ = btf.offset_of(a);
        for b in &names {
            let _ = btf.offset_of(&format!("{a}.{b}"));
            for c in &names {
                let _ = btf.offset_of(&format!("{a}.{b}.{c}"));
            }
        }
    }
});
