//! What the kernel holds after a test: loaded BPF programs, TC filters, clsact markers,
//! and a foreign TC program to share a hook with.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::{Lab, NEXT, run};

/// Ids of the BPF programs a process holds open (from /proc/PID/fdinfo).
pub fn programs_held_by(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return ids };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()));
        if let Some(id) = info
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse::<u32>().ok()))
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Which of these programs are still loaded in the kernel.
pub fn still_loaded(ids: &[u32]) -> Vec<u32> {
    ids.iter()
        .copied()
        .filter(|id| {
            Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

/// Which of these programs are still loaded after up to `timeout`: the kernel frees a
/// program a moment after its last user lets go (RCU).
pub fn loaded_after(ids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = still_loaded(ids);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The clsact markers (`/run/tcpviz/`) that name an interface.
pub fn clsact_markers_for(iface: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/tcpviz") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|t| t.contains(&format!("\"iface\":\"{iface}\"")))
        .collect()
}

/// Lines of `tc filter show` on one clsact hook of an interface that name a program.
pub fn tc_filters(lab: &Lab, ns: &str, dev: &str, hook: &str) -> Vec<String> {
    let o = lab.sh(ns, &format!("tc filter show dev {dev} {hook}"));
    String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("handle")).map(str::to_string).collect()
}

/// A classifier program that is not tcpviz's (`foreign_tc`, two instructions: "next
/// program"), attached with `tc` on a clsact hook through a pin in a private bpffs mount.
/// The filter keeps it loaded after this returns.
pub fn attach_foreign_ebpf_filter(lab: &Lab, ns: &str, dev: &str, hook: &str, pref: u16) {
    // mov64 r0, -1 (TC_ACT_UNSPEC); exit
    let insns: [u64; 2] = [0xffff_ffff_0000_00b7u64, 0x0000_0000_0000_0095u64];
    let license = c"GPL";
    let mut attr = [0u8; 72];
    attr[0..4].copy_from_slice(&3u32.to_ne_bytes()); // BPF_PROG_TYPE_SCHED_CLS
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..58].copy_from_slice(b"foreign_tc");
    // SAFETY: BPF_PROG_LOAD (5) with a valid attribute buffer whose pointers outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len() as u32) };
    assert!(fd >= 0, "loading a foreign program: {}", std::io::Error::last_os_error());
    let mount = tempfile_dir();
    run(&["mount", "-t", "bpf", "bpf", mount.to_str().unwrap()]);
    let pin = mount.join("foreign_tc");
    let pin_c = std::ffi::CString::new(pin.to_str().unwrap()).unwrap();
    let mut attr = [0u8; 16];
    attr[0..8].copy_from_slice(&(pin_c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    // SAFETY: BPF_OBJ_PIN (6) with a valid path and program descriptor.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_mut_ptr(), attr.len() as u32) };
    let pinned = std::io::Error::last_os_error();
    // SAFETY: our descriptor; the pin (then the filter) holds the program.
    unsafe { libc::close(fd as i32) };
    let attached = (r == 0).then(|| {
        lab.sh(ns, &format!("tc filter add dev {dev} {hook} pref {pref} bpf da object-pinned {}", pin.display()))
    });
    let _ = std::fs::remove_file(&pin);
    let _ = Command::new("umount").arg(&mount).status();
    let _ = std::fs::remove_dir(&mount);
    assert!(r == 0, "pinning the foreign program: {pinned}");
    let o = attached.unwrap();
    assert!(o.status.success(), "tc filter add: {}", String::from_utf8_lossy(&o.stderr));
}

fn tempfile_dir() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tvz-bpffs-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
