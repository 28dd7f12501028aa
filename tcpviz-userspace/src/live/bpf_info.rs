//! What the kernel says about a loaded program (`BPF_OBJ_GET_INFO_BY_FD`): its name and tag,
//! to recognise tcpviz's own programs, and `recursion_misses`, the runs the kernel skipped
//! because another BPF program was already running on that CPU (aya's `ProgramInfo` does
//! not expose it).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya_obj::generated::bpf_prog_info;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub name: String,
    pub tag: [u8; 8],
    /// Runs skipped because a BPF program was already running on the CPU (Linux 5.12+;
    /// zero before).
    pub recursion_misses: u64,
}

impl ProgInfo {
    pub fn tag_hex(&self) -> String {
        tag_hex(&self.tag)
    }
}

pub fn tag_hex(tag: &[u8; 8]) -> String {
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<libc::c_long> {
    // SAFETY: the attribute buffer is valid for its length; the kernel reads and writes
    // within it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as libc::c_uint) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// The information of the program behind `fd`.
pub fn prog_info(fd: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    // SAFETY: bpf_prog_info is plain data; all zeros is its valid empty value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(size_of::<bpf_prog_info>() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(&mut info as *mut bpf_prog_info as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name_bytes: Vec<u8> = info.name.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    Ok(ProgInfo {
        id: info.id,
        name: String::from_utf8_lossy(&name_bytes).into_owned(),
        tag: info.tag,
        recursion_misses: info.recursion_misses,
    })
}

/// The information of a program by its id (`ENOENT` once it is unloaded).
pub fn prog_info_by_id(id: u32) -> io::Result<ProgInfo> {
    let mut attr = [0u8; 12];
    attr[0..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    use std::os::fd::AsFd;
    prog_info(fd.as_fd())
}

/// Processes that hold a descriptor of one of `prog_ids` (a program or a link to it), from
/// `/proc/*/fdinfo`: (program id, pid, command name). A program a filter still runs but no
/// process holds is what a killed agent left behind.
pub fn holders(prog_ids: &[u32]) -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    if prog_ids.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            if !target.to_string_lossy().starts_with("anon_inode:bpf") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(p.path().join("fdinfo").join(fd.file_name())) else { continue };
            let id = text.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse::<u32>().ok());
            if let Some(id) = id
                && prog_ids.contains(&id)
            {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default().trim().to_string();
                out.push((id, pid, comm));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
