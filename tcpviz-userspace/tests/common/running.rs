//! A tcpviz process run by a test, its output collected as it comes (so a full pipe never
//! blocks it). Shared by the CLI tests and, through a `#[path]` module, the privileged ones.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let collect = |mut from: Box<dyn Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let to = text.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    to.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Running { child, stdout, stderr }
    }

    /// Waits until standard error holds `needle`; panics after 60 s, or at once when the
    /// process ended without printing it.
    pub fn wait_stderr(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.stderr.lock().unwrap().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("ended ({status}) without {needle:?}: {}", self.stderr.lock().unwrap());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no {needle:?} in: {}", self.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the process has read `file` to its end (the offset of its descriptor, in
    /// /proc), then a little longer for what it read to be analysed; panics after 60 s.
    #[allow(dead_code)]
    pub fn wait_read_to_end(&mut self, file: &std::path::Path) {
        let start = Instant::now();
        let len = std::fs::metadata(file).unwrap().len();
        let fd_dir = format!("/proc/{}/fd", self.child.id());
        let read_to_end = || -> bool {
            let Ok(fds) = std::fs::read_dir(&fd_dir) else { return false };
            fds.filter_map(|e| e.ok()).any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| target == file) && {
                    let info = format!("/proc/{}/fdinfo/{}", self.child.id(), fd.file_name().to_string_lossy());
                    let pos = std::fs::read_to_string(info).ok().and_then(|t| {
                        t.lines().find_map(|l| l.strip_prefix("pos:").and_then(|v| v.trim().parse::<u64>().ok()))
                    });
                    pos.is_some_and(|p| p >= len)
                }
            })
        };
        while !read_to_end() {
            assert!(start.elapsed() < Duration::from_secs(60), "{} not read to its end", file.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Frames read into the reader's buffer are analysed at once: a few polls' time.
        std::thread::sleep(Duration::from_millis(500));
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (as Ctrl-C) and waits: exit status, standard output, standard error. A
    /// panic is never a way to end.
    pub fn interrupt(mut self) -> (Option<i32>, String, String) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let (code, out, err) = self.finish();
        assert!(!err.contains("panicked"), "{err}");
        (code, out, err)
    }

    /// Waits for the end: exit status, standard output, standard error.
    pub fn finish(&mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.stdout.lock().unwrap().clone(), self.stderr.lock().unwrap().clone())
    }
}

/// A test that fails half way does not leave its tcpviz running.
impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
