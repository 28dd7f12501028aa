//! Just enough of BTF (the kernel's type information, `/sys/kernel/btf/vmlinux`) to find
//! the byte offset of a struct member path such as `sock.__sk_common.skc_net.net`. Rust eBPF
//! has no CO-RE, so the kernel side gets these offsets from userspace at start-up.

use std::collections::{HashMap, HashSet};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no kernel BTF ({VMLINUX}: {0}); a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")]
    Missing(std::io::Error),
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no {0}")]
    NotFound(String),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    Composite {
        members: Vec<Member>,
    },
    /// typedef, const, volatile, restrict, type tag: look through to `ty`.
    Alias {
        ty: u32,
    },
    Other,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Named structs and unions, by name.
    composites: HashMap<String, u32>,
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    d.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_kernel() -> Result<Btf, BtfError> {
        let data = std::fs::read(VMLINUX).map_err(BtfError::Missing)?;
        Btf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
            return Err(BtfError::Malformed("bad magic (only little-endian BTF is read)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data =
            data.get(hdr_len + type_off..hdr_len + type_off + type_len).ok_or(BtfError::Malformed("types"))?;
        let strings =
            data.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or(BtfError::Malformed("strings"))?.to_vec();
        // Type id 0 is "void".
        let mut types = vec![Type::Other];
        let mut names = vec![0u32];
        let mut at = 0;
        while at < types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let t = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let off = u32_at(types_data, at + 8)?;
                        members.push(Member {
                            name: u32_at(types_data, at)?,
                            ty: u32_at(types_data, at + 4)?,
                            bit_offset: if kind_flag { off & 0x00ff_ffff } else { off },
                        });
                        at += 12;
                    }
                    Type::Composite { members }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias { ty: size_or_type }
                }
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    at += 4;
                    Type::Other
                }
                KIND_ARRAY => {
                    at += 12;
                    Type::Other
                }
                KIND_ENUM | KIND_FUNC_PROTO => {
                    at += 8 * vlen;
                    Type::Other
                }
                KIND_DATASEC | KIND_ENUM64 => {
                    at += 12 * vlen;
                    Type::Other
                }
                KIND_PTR | KIND_FWD | KIND_FUNC | KIND_FLOAT => Type::Other,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(t);
            names.push(if matches!(kind, KIND_STRUCT | KIND_UNION) { name } else { 0 });
        }
        let mut btf = Btf { types, strings, composites: HashMap::new() };
        for (id, &n) in names.iter().enumerate() {
            if n != 0 {
                let name = btf.name(n).to_string();
                btf.composites.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn resolve(&self, mut ty: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(ty as usize) {
                Some(Type::Alias { ty: next }) => ty = *next,
                _ => break,
            }
        }
        ty
    }

    /// Bit offset of `member` in composite `ty`, looking into anonymous members: each
    /// composite at most once per lookup, and at most `MAX_ANONYMOUS_DEPTH` deep (a malformed
    /// blob may make a struct its own member, or nest thousands of them).
    fn member(&self, ty: u32, member: &str, depth: usize, searched: &mut HashSet<u32>) -> Option<(u32, u32)> {
        const MAX_ANONYMOUS_DEPTH: usize = 16;
        let ty = self.resolve(ty);
        let Type::Composite { members } = self.types.get(ty as usize)? else { return None };
        if !searched.insert(ty) {
            return None;
        }
        for m in members {
            let name = self.name(m.name);
            if name == member {
                return Some((m.bit_offset, m.ty));
            }
            if name.is_empty()
                && depth < MAX_ANONYMOUS_DEPTH
                && let Some((inner, t)) = self.member(m.ty, member, depth + 1, searched)
            {
                return Some((m.bit_offset.checked_add(inner)?, t));
            }
        }
        None
    }

    /// Byte offset of `path` (`"struct.member.member…"`), e.g. `"sk_buff.cb"`.
    pub fn offset_of(&self, path: &str) -> Result<u32, BtfError> {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        let mut ty = *self.composites.get(root).ok_or_else(|| BtfError::NotFound(format!("struct {root}")))?;
        let mut bits = 0;
        for p in parts {
            let (off, next) =
                self.member(ty, p, 0, &mut HashSet::new()).ok_or_else(|| BtfError::NotFound(path.to_string()))?;
            bits = u32::checked_add(bits, off).ok_or(BtfError::Malformed("member offsets overflow"))?;
            ty = next;
        }
        if bits % 8 != 0 {
            return Err(BtfError::NotFound(format!("{path} (a bit field)")));
        }
        Ok(bits / 8)
    }
}

/// The offsets from a task to the socket behind one of its descriptors
/// (`tcpviz_common::AgentConfig::fd_path`), all 0 when one is missing.
pub fn fd_path(btf: &Btf) -> [u32; 6] {
    const PATH: [&str; 6] =
        ["task_struct.files", "files_struct.fdt", "fdtable.fd", "fdtable.max_fds", "file.private_data", "socket.sk"];
    let mut out = [0; 6];
    for (o, path) in out.iter_mut().zip(PATH) {
        match btf.offset_of(path) {
            Ok(off) => *o = off,
            Err(e) => {
                tracing::warn!("accepted sockets are found through /proc only: {e}");
                return [0; 6];
            }
        }
    }
    if out[0] == 0 { [0; 6] } else { out }
}

/// The offsets of a socket's ends in `struct sock` (`tcpviz_common::AgentConfig::
/// sock_ends_off`), or None when one is missing.
pub fn sock_ends(btf: &Btf) -> Option<[u32; 7]> {
    const FIELDS: [&str; 7] =
        ["skc_daddr", "skc_rcv_saddr", "skc_dport", "skc_num", "skc_family", "skc_v6_daddr", "skc_v6_rcv_saddr"];
    let mut out = [0; 7];
    for (o, field) in out.iter_mut().zip(FIELDS) {
        match btf.offset_of(&format!("sock.__sk_common.{field}")) {
            Ok(off) => *o = off,
            Err(e) => {
                tracing::warn!("accepted sockets of other namespaces are found through /proc only: {e}");
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: struct outer { int a; struct { int pad; struct inner in; }; };
    /// struct inner { long x; int y; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0in\0inner\0x\0y\0pad\0".to_vec();
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { x at 0, y at 64 bits }
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 16, s("x"), 1, 0, s("y"), 1, 64]);
        // 3: anonymous struct { pad at 0, in at 64 bits }
        push(&[0, (KIND_STRUCT << 24) | 2, 24, s("pad"), 1, 0, s("in"), 2, 64]);
        // 4: typedef-free struct outer { a at 0, <anon> at 64 bits }
        push(&[s("outer"), (KIND_STRUCT << 24) | 2, 32, s("a"), 1, 0, 0, 3, 64]);
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn member_paths_through_anonymous_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset_of("outer.a").unwrap(), 0);
        assert_eq!(btf.offset_of("outer.in").unwrap(), 16);
        assert_eq!(btf.offset_of("outer.in.y").unwrap(), 24);
        assert!(matches!(btf.offset_of("outer.nope"), Err(BtfError::NotFound(_))));
        assert!(Btf::parse(b"not btf").is_err());
    }

    /// Found by the `btf` fuzz target: a struct whose anonymous member is the struct itself
    /// sent the member lookup into endless recursion (a stack overflow), and member offsets
    /// near 2^32 bits overflowed when added up.
    #[test]
    fn self_containing_struct_and_huge_offsets_are_not_fatal() {
        let strings = b"\0s\0x\0u\0v\0y\0w\0z\0";
        let words: [[u32; 6]; 4] = [
            // 1: struct s { <anonymous> of type s at bit 0 }
            [1, (KIND_STRUCT << 24) | 1, 8, 0, 1, 0],
            // 2: struct u { <anonymous> of type v at bit 0xffff_fff0 }
            [5, (KIND_STRUCT << 24) | 1, 8, 0, 3, 0xffff_fff0],
            // 3: struct v { w y at bit 0x100 }
            [7, (KIND_STRUCT << 24) | 1, 8, 9, 4, 0x100],
            // 4: struct w { s z at bit 0xffff_ff00 }
            [11, (KIND_STRUCT << 24) | 1, 8, 13, 1, 0xffff_ff00],
        ];
        let types: Vec<u8> = words.iter().flatten().flat_map(|w| w.to_le_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend_from_slice(&0xeb9fu16.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        let btf = Btf::parse(&blob).unwrap();
        assert!(matches!(btf.offset_of("s.x"), Err(BtfError::NotFound(_))));
        assert_eq!(btf.offset_of("v.y").unwrap(), 32);
        assert!(btf.offset_of("u.y").is_err());
        assert!(matches!(btf.offset_of("v.y.z"), Err(BtfError::Malformed(_))));
    }

    /// Found by the `btf` fuzz target (a timeout): a struct with many anonymous members of
    /// its own type made the lookup try every path through them, exponentially many.
    #[test]
    fn many_anonymous_self_members_are_searched_once() {
        let strings = b"\0s\0";
        let mut words = vec![1, (KIND_STRUCT << 24) | 1000, 8];
        for _ in 0..1000 {
            words.extend([0, 1, 0]);
        }
        let types: Vec<u8> = words.iter().flat_map(|w: &u32| w.to_le_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend_from_slice(&0xeb9fu16.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        let btf = Btf::parse(&blob).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(btf.offset_of("s.x"), Err(BtfError::NotFound(_))));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn the_running_kernel_has_the_offsets_the_agent_needs() {
        let Ok(btf) = Btf::from_kernel() else { return };
        for path in ["sock.__sk_common.skc_net.net", "net.ns.inum", "sk_buff.cb"] {
            assert!(btf.offset_of(path).is_ok(), "{path}");
        }
        // The segments of a retransmitted skb: `tcp_skb_pcount()` and `tcp_skb_mss()`.
        assert_eq!(btf.offset_of("tcp_skb_cb.tcp_gso_segs").unwrap(), 8);
        assert_eq!(btf.offset_of("tcp_skb_cb.tcp_gso_size").unwrap(), 10);
        // The segment size that turns tcp_probe's cwnd into bytes.
        assert!(btf.offset_of("tcp_sock.mss_cache").unwrap() > 0);
        // The socket behind an accepted descriptor.
        let path = fd_path(&btf);
        assert!(path[0] > 0 && path.iter().skip(1).filter(|&&o| o > 0).count() >= 4, "{path:?}");
    }
}
