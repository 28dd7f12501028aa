//! Tests of [`RecordFile`](super::RecordFile): batches, failures, and rotation.

use super::*;

fn line(n: usize) -> impl FnOnce(&mut Vec<u8>) -> io::Result<()> {
    move |b: &mut Vec<u8>| {
        b.extend_from_slice(format!("{{\"n\":{n}}}\n").as_bytes());
        Ok(())
    }
}

#[test]
fn records_are_batched_and_a_failed_build_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jsonl");
    let mut f = RecordFile::create(&path, OnFailure::Stop, 16).unwrap();
    f.push(line(1)).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "queued");
    f.push(|b| {
        b.extend_from_slice(b"{\"half");
        Err(io::Error::other("no"))
    })
    .unwrap_err();
    f.push(line(2)).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":1}\n{\"n\":2}\n", "written at 16 bytes");
    f.push(line(3)).unwrap();
    f.flush().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    assert_eq!((f.written(), f.lost()), (3, 0));
}

/// /dev/full takes nothing: the failure is an error (Stop) or counted (Count).
#[test]
fn a_full_device_stops_or_counts() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let mut f = RecordFile::create(full, OnFailure::Stop, 1 << 20).unwrap();
    f.push(line(1)).unwrap();
    let e = f.flush().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    let mut f = RecordFile::create(full, OnFailure::Count, 1 << 20).unwrap();
    for n in 0..5 {
        f.push(line(n)).unwrap();
        f.flush().unwrap();
    }
    assert_eq!((f.written(), f.lost()), (0, 5));
    assert!(f.first_failure().unwrap().starts_with("cannot write /dev/full: No space left"));
}

#[test]
fn a_deleted_file_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jsonl");
    let mut f = RecordFile::create(&path, OnFailure::Count, 1 << 20).unwrap();
    f.push(line(1)).unwrap();
    f.flush().unwrap();
    std::fs::remove_file(&path).unwrap();
    f.push(line(2)).unwrap();
    f.flush().unwrap();
    f.push(line(3)).unwrap();
    f.flush().unwrap();
    assert_eq!((f.written(), f.lost()), (1, 2), "the batch that found it deleted, then the next one");
    assert!(f.first_failure().unwrap().contains("deleted while being written"));
    let mut f = RecordFile::create(&path, OnFailure::Stop, 1 << 20).unwrap();
    std::fs::remove_file(&path).unwrap();
    f.push(line(1)).unwrap();
    assert!(f.flush().unwrap_err().to_string().contains("deleted"));
}

#[test]
fn whole_files_replace_atomically_and_leave_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.json");
    write_whole(&path, b"{}\n").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
    let missing = dir.path().join("gone/summary.json");
    assert!(write_whole(&missing, b"{}").is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

fn rotated(max_bytes: u64, keep: Option<usize>) -> RotationSettings {
    RotationSettings { max_bytes: Some(max_bytes), max_age: None, keep }
}

/// Lines of 10 bytes in parts of at most 35: three lines a part, never a line split, the
/// parts in order hold every line once.
#[test]
fn rotated_parts_are_bounded_and_hold_whole_lines_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // Batches of 64 bytes: a batch spans parts.
    let mut f = RecordFile::create_rotating(&path, OnFailure::Stop, 64, rotated(35, None)).unwrap();
    for n in 0..20 {
        f.push(|b| {
            b.extend_from_slice(format!("{{\"n\":{n:03}}}\n").as_bytes());
            Ok(())
        })
        .unwrap();
    }
    f.flush().unwrap();
    assert!(!path.exists(), "a rotated file is only its parts");
    let parts = crate::output::rotation::files_of(&path);
    assert_eq!(parts, f.paths());
    assert_eq!(parts.len(), 7, "{parts:?}");
    let mut all = String::new();
    for p in &parts {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.len() <= 35 && text.ends_with('\n'), "{p:?}: {text:?}");
        all.push_str(&text);
    }
    let expected: String = (0..20).map(|n| format!("{{\"n\":{n:03}}}\n")).collect();
    assert_eq!(all, expected);
    assert_eq!((f.written(), f.lost()), (20, 0));
    let s = f.rotation().unwrap().section(f.written());
    assert_eq!((s.parts_opened, s.deleted.parts), (7, 0));
}

/// Each part starts with the header; `--keep` leaves the last parts, and what it deleted
/// plus what is left is what was written.
#[test]
fn every_part_starts_with_the_header_and_keep_counts_what_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.rec");
    let mut f = RecordFile::create_rotating(&path, OnFailure::Stop, 1, rotated(40, Some(2))).unwrap();
    f.add_to_header(b"HEAD\n").unwrap();
    for n in 0..30 {
        f.push(|b| {
            b.extend_from_slice(format!("r{n:04}\n").as_bytes());
            Ok(())
        })
        .unwrap();
        if n == 10 {
            // Added mid-part: written there, and at the start of every later part.
            f.add_to_header(b"MORE\n").unwrap();
        }
    }
    f.flush().unwrap();
    let parts = crate::output::rotation::parts_of(&path);
    assert_eq!(parts.len(), 2);
    let mut records_left = 0;
    for p in &parts {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.starts_with("HEAD\nMORE\nr"), "{p:?}: {text:?}");
        assert!(text.len() <= 40);
        records_left += text.lines().filter(|l| l.starts_with('r')).count() as u64;
    }
    let s = f.rotation().unwrap().section(f.written());
    assert_eq!(s.deleted.records + records_left, 30, "{s:?}");
    assert_eq!(s.parts_opened, s.deleted.parts + 2);
    assert_eq!(
        s.parts,
        parts.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>()
    );
}

/// The next part cannot be created (a folder in the way of its name): the records are
/// counted, and writing goes on in a new part once it can.
#[test]
fn a_part_that_cannot_be_created_is_counted_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.jsonl");
    let mut f = RecordFile::create_rotating(&path, OnFailure::Count, 1, rotated(20, None)).unwrap();
    f.push(line(1)).unwrap();
    f.push(line(2)).unwrap();
    // Part 2's name for this second and the next few.
    let now = chrono::Utc::now();
    let blockers: Vec<PathBuf> = (0..5)
        .map(|s| dir.path().join(crate::output::rotation::part_name("e.jsonl", 2, now + chrono::Duration::seconds(s))))
        .collect();
    for b in &blockers {
        std::fs::create_dir(b).unwrap();
    }
    f.push(line(3)).unwrap();
    f.push(line(4)).unwrap();
    for b in &blockers {
        std::fs::remove_dir(b).unwrap();
    }
    f.push(line(5)).unwrap();
    assert_eq!((f.written(), f.lost()), (3, 2));
    assert!(f.first_failure().unwrap().contains("cannot create its next part"), "{:?}", f.first_failure());
    let parts = crate::output::rotation::parts_of(&path);
    let texts: Vec<String> = parts.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert_eq!(texts, ["{\"n\":1}\n{\"n\":2}\n", "{\"n\":5}\n"]);
}

/// `--rotate-secs`: a part that has been open long enough is closed at the next write; an
/// idle file gets no empty parts.
#[test]
fn a_part_open_long_enough_is_closed_at_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.jsonl");
    let age = RotationSettings { max_age: Some(std::time::Duration::from_millis(50)), ..Default::default() };
    let mut f = RecordFile::create_rotating(&path, OnFailure::Stop, 1 << 20, age).unwrap();
    f.push(line(1)).unwrap();
    f.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(120));
    f.flush().unwrap();
    assert_eq!(crate::output::rotation::parts_of(&path).len(), 1, "nothing written: no new part");
    f.push(line(2)).unwrap();
    f.push(line(3)).unwrap();
    f.flush().unwrap();
    let parts = crate::output::rotation::parts_of(&path);
    let texts: Vec<String> = parts.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert_eq!(texts, ["{\"n\":1}\n", "{\"n\":2}\n{\"n\":3}\n"]);
}
