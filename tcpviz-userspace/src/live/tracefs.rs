//! Tracepoint record layouts, read from the tracefs `format` files at start-up, so that a
//! kernel with a different layout (fields added or moved between versions) still works.

use std::path::{Path, PathBuf};

/// Where tracefs is usually mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and could not be mounted ({0}): run `mount -t tracefs nodev /sys/kernel/tracing` as root (note: `ip netns exec` remounts /sys and hides it; use tcpviz live --netns NAME instead)"
    )]
    NotMounted(String),
    #[error(
        "tracefs at {0} is mounted but this user cannot read it: the agent needs CAP_DAC_READ_SEARCH (as in packaging/tcpviz.service) or root to read the tracepoint formats"
    )]
    Unreadable(PathBuf),
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: unreadable format file ({detail})")]
    Format { path: PathBuf, detail: String },
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

/// The layout of one tracepoint's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub category: String,
    pub name: String,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Bytes the record occupies (up to the end of its last field).
    pub fn record_len(&self) -> usize {
        self.fields.iter().map(|f| f.offset + f.size).max().unwrap_or(0)
    }

    /// Reads an unsigned field (1, 2, 4 or 8 bytes, host order) from a raw record.
    pub fn uint(&self, raw: &[u8], name: &str) -> Option<u64> {
        let f = self.field(name)?;
        let b = raw.get(f.offset..f.offset + f.size)?;
        Some(match f.size {
            1 => b[0] as u64,
            2 => u16::from_ne_bytes([b[0], b[1]]) as u64,
            4 => u32::from_ne_bytes(b.try_into().ok()?) as u64,
            8 => u64::from_ne_bytes(b.try_into().ok()?),
            _ => return None,
        })
    }

    /// A signed field, sign-extended.
    pub fn int(&self, raw: &[u8], name: &str) -> Option<i64> {
        let f = self.field(name)?;
        let v = self.uint(raw, name)?;
        Some(match f.size {
            1 => v as u8 as i8 as i64,
            2 => v as u16 as i16 as i64,
            4 => v as u32 as i32 as i64,
            _ => v as i64,
        })
    }

    /// The bytes of an array field.
    pub fn bytes<'a>(&self, raw: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let f = self.field(name)?;
        raw.get(f.offset..f.offset + f.size)
    }
}

/// Tracepoint records fit in a page of the trace buffer; the agent passes offsets to the
/// kernel side as 16-bit numbers.
const MAX_RECORD_LEN: usize = u16::MAX as usize;

/// Parses the text of a `format` file.
pub fn parse_format(category: &str, name: &str, text: &str) -> Result<Format, String> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else { continue };
        // field:<decl>;\toffset:N;\tsize:N;\tsigned:N;
        let mut parts = rest.split(';').map(str::trim);
        let decl = parts.next().ok_or("missing declaration")?;
        let mut offset = None;
        let mut size = None;
        let mut signed = false;
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse::<usize>().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse::<usize>().ok();
            } else if let Some(v) = p.strip_prefix("signed:") {
                signed = v == "1";
            }
        }
        // The name is the last word of the declaration, without an array suffix.
        let last = decl.split_whitespace().last().ok_or("empty declaration")?;
        let field_name = last.split('[').next().unwrap_or(last).trim_start_matches('*');
        let (Some(offset), Some(size)) = (offset, size) else {
            return Err(format!("field {field_name}: no offset or size"));
        };
        if offset.checked_add(size).is_none_or(|end| end > MAX_RECORD_LEN) {
            return Err(format!("field {field_name}: offset {offset} and size {size} reach past any record"));
        }
        fields.push(Field { name: field_name.to_string(), offset, size, signed });
    }
    if fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(Format { category: category.into(), name: name.into(), fields })
}

/// The tracefs root, mounting tracefs when it is missing and we may.
pub fn tracefs_root() -> Result<PathBuf, TracefsError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        match std::fs::metadata(Path::new(root).join("events")) {
            Ok(m) if m.is_dir() => return Ok(PathBuf::from(root)),
            // Mounted (the root is there) but closed to us: mounting again would only fail
            // with a misleading "not mounted".
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(TracefsError::Unreadable(PathBuf::from(root)));
            }
            _ => {}
        }
    }
    match mount_tracefs() {
        Ok(()) if Path::new(TRACEFS).join("events").is_dir() => Ok(PathBuf::from(TRACEFS)),
        Ok(()) => Err(TracefsError::NotMounted("mounted, but it has no events".into())),
        Err(e) => Err(TracefsError::NotMounted(e.to_string())),
    }
}

fn mount_tracefs() -> std::io::Result<()> {
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL");
    let source = std::ffi::CString::new("nodev").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        tracing::info!("mounted tracefs on {TRACEFS}");
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads a tracepoint's format; `Ok(None)` when this kernel has no such tracepoint.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Option<Format>, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TracefsError::Read { path, source }),
    };
    parse_format(category, name, &text).map(Some).map_err(|detail| TracefsError::Format { path, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRANSMIT: &str = "name: tcp_retransmit_skb
ID: 2281
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;

print fmt: \"skbaddr=%p\", REC->skbaddr
";

    #[test]
    fn parses_fields_and_reads_values() {
        let f = parse_format("tcp", "tcp_retransmit_skb", RETRANSMIT).unwrap();
        assert_eq!(f.field("skaddr").unwrap().offset, 16);
        assert_eq!(f.field("saddr_v6").unwrap().size, 16);
        assert!(f.field("err").unwrap().signed);
        assert_eq!(f.record_len(), 80);
        let mut raw = vec![0u8; 80];
        raw[28..30].copy_from_slice(&443u16.to_ne_bytes());
        raw[76..80].copy_from_slice(&(-16i32).to_ne_bytes());
        assert_eq!(f.uint(&raw, "sport"), Some(443));
        assert_eq!(f.int(&raw, "err"), Some(-16));
        assert_eq!(f.uint(&raw, "missing"), None);
        assert_eq!(f.uint(&raw[..20], "err"), None, "short records are not read past their end");
    }

    #[test]
    fn a_kernel_without_the_err_field_still_parses() {
        let old = RETRANSMIT.replace("\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;\n", "");
        let f = parse_format("tcp", "tcp_retransmit_skb", &old).unwrap();
        assert!(f.field("err").is_none());
        assert_eq!(f.record_len(), 58);
        assert!(parse_format("x", "y", "garbage").is_err());
    }

    /// Found by the `tracefs_format` fuzz target: an offset near usize::MAX overflowed when
    /// the end of the field was computed (record_len, uint, bytes).
    #[test]
    fn fields_past_any_record_are_rejected() {
        for (offset, size) in [(usize::MAX, 2), (8, usize::MAX), (65_530, 8)] {
            let text = format!("\tfield:int x;\toffset:{offset};\tsize:{size};\tsigned:1;\n");
            let err = parse_format("tcp", "t", &text).unwrap_err();
            assert!(err.contains("past any record"), "{err}");
        }
        let ok = parse_format("tcp", "t", "\tfield:int x;\toffset:65531;\tsize:4;\tsigned:1;\n").unwrap();
        assert_eq!(ok.record_len(), 65_535);
    }
}
