//! Check me against tshark, on your own capture (`parse-pcap --cross-check`): tshark reads
//! the same files, and its per-packet analysis flags are compared with tcpviz's events, flag
//! by flag (matches, extra, missing, with frame numbers). The corpus agreement test uses the
//! same comparison on tshark's recorded flags.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::event::{Event, EventKind};
use crate::output::sections::{CrossCheckSection, FlagAgreement};
use crate::output::sink::EventSink;

/// The flags compared, each with the tshark field it is read from.
pub const FLAGS: [(&str, &str); 7] = [
    ("retransmission", "tcp.analysis.retransmission"),
    ("fast_retransmission", "tcp.analysis.fast_retransmission"),
    ("spurious_retransmission", "tcp.analysis.spurious_retransmission"),
    ("out_of_order", "tcp.analysis.out_of_order"),
    ("lost_segment", "tcp.analysis.lost_segment"),
    ("duplicate_ack", "tcp.analysis.duplicate_ack"),
    ("zero_window", "tcp.analysis.zero_window"),
];

/// Frames carrying each flag (frame numbers as tshark counts them, 1-based in their file).
pub type FlaggedFrames = BTreeMap<&'static str, BTreeSet<u64>>;

fn empty_flags() -> FlaggedFrames {
    FLAGS.iter().map(|(f, _)| (*f, BTreeSet::new())).collect()
}

/// Records the flags of tcpviz's wire events as they go to `inner`, per file.
pub struct FlagRecorder<'a> {
    inner: &'a mut dyn EventSink,
    /// File names in the order the pipeline registered them; events of a run over one file
    /// carry no file name.
    files: Vec<String>,
    flagged: Vec<FlaggedFrames>,
}

impl<'a> FlagRecorder<'a> {
    /// Records the flags of events of these files; with none, passes events on and keeps
    /// nothing.
    pub fn new(inner: &'a mut dyn EventSink, files: Vec<String>) -> FlagRecorder<'a> {
        let flagged = files.iter().map(|_| empty_flags()).collect();
        FlagRecorder { inner, files, flagged }
    }

    pub fn into_flagged(self) -> Vec<FlaggedFrames> {
        self.flagged
    }
}

impl EventSink for FlagRecorder<'_> {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        let recording = !self.flagged.is_empty();
        for e in events.iter().filter(|_| recording) {
            let index = match &e.file {
                Some(name) => self.files.iter().position(|f| **f == **name),
                None => Some(0),
            };
            if let Some(flags) = index.and_then(|i| self.flagged.get_mut(i)) {
                add_flags(flags, e);
            }
        }
        self.inner.on_events(events)
    }
}

/// Adds an event's flags as tshark sets them: every kind of retransmission is also a
/// `retransmission`.
pub fn add_flags(out: &mut FlaggedFrames, e: &Event) {
    let Some(frame) = e.frame else { return };
    let kind = e.event;
    if kind.is_retransmission() {
        out.entry("retransmission").or_default().insert(frame);
        if kind == EventKind::Retransmission {
            return;
        }
    }
    let flag = kind.as_str();
    if let Some(set) = out.iter_mut().find(|(f, _)| **f == flag).map(|(_, s)| s) {
        set.insert(frame);
    }
}

/// The flags of a list of events (one file).
pub fn flags_of_events(events: &[Event]) -> FlaggedFrames {
    let mut out = empty_flags();
    for e in events {
        add_flags(&mut out, e);
    }
    out
}

/// tshark's flags from its CSV (`-T fields -E header=y -E separator=, -E quote=d` with
/// `frame.number` and the flag fields, in any order and with any other columns).
pub fn parse_tshark_csv(text: &str) -> Result<FlaggedFrames, String> {
    let mut out = empty_flags();
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return Ok(out) };
    let cols: Vec<&str> = header.split(',').map(|c| c.trim_matches('"')).collect();
    let idx = |name: &str| cols.iter().position(|c| *c == name).ok_or_else(|| format!("no column {name}"));
    let frame_col = idx("frame.number")?;
    let flag_cols: Vec<(&'static str, usize)> =
        FLAGS.iter().map(|(f, c)| idx(c).map(|i| (*f, i))).collect::<Result<_, _>>()?;
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        let frame: u64 =
            fields.get(frame_col).and_then(|f| f.parse().ok()).ok_or_else(|| format!("no frame number in {line:?}"))?;
        for (flag, col) in &flag_cols {
            if fields.get(*col).is_some_and(|v| !v.is_empty()) {
                out.entry(flag).or_default().insert(frame);
            }
        }
    }
    Ok(out)
}

/// Frames listed per flag in the section.
const LISTED: usize = 20;

/// Compares, flag by flag, over every file (`names` label the frames when there are several).
pub fn compare(ours: &[FlaggedFrames], theirs: &[FlaggedFrames], names: &[String]) -> BTreeMap<String, FlagAgreement> {
    let mut out = BTreeMap::new();
    for (flag, _) in FLAGS {
        let mut a = FlagAgreement::default();
        for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
            let empty = BTreeSet::new();
            let (o, t) = (o.get(flag).unwrap_or(&empty), t.get(flag).unwrap_or(&empty));
            let label = |frame: &u64| {
                if names.len() > 1 { format!("{}:{frame}", names[i]) } else { frame.to_string() }
            };
            a.matches += o.intersection(t).count() as u64;
            a.extra += o.difference(t).count() as u64;
            a.missing += t.difference(o).count() as u64;
            let room = LISTED.saturating_sub(a.extra_frames.len());
            a.extra_frames.extend(o.difference(t).take(room).map(label));
            let room = LISTED.saturating_sub(a.missing_frames.len());
            a.missing_frames.extend(t.difference(o).take(room).map(label));
        }
        out.insert(flag.to_string(), a);
    }
    out
}

/// Runs tshark on each file and compares its flags with `ours` (one entry per file).
pub fn cross_check(paths: &[impl AsRef<Path>], ours: &[FlaggedFrames]) -> CrossCheckSection {
    let version = match Command::new("tshark").arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string(),
        Ok(o) => return failed("", format!("tshark --version failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => {
            return failed("", format!("tshark is not installed ({e}): install Wireshark's tshark to cross-check"));
        }
    };
    let filter = FLAGS.iter().map(|(_, c)| *c).collect::<Vec<_>>().join(" || ");
    let mut theirs = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let mut cmd = Command::new("tshark");
        cmd.args(["-n", "-r"]).arg(p).args(["-Y", &filter, "-T", "fields", "-E", "header=y"]);
        cmd.args(["-E", "separator=,", "-E", "quote=d", "-E", "occurrence=l", "-e", "frame.number"]);
        for (_, field) in FLAGS {
            cmd.args(["-e", field]);
        }
        let parsed = match cmd.output() {
            Ok(o) if o.status.success() => parse_tshark_csv(&String::from_utf8_lossy(&o.stdout)),
            Ok(o) => Err(format!("tshark failed on {}: {}", p.display(), String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => Err(format!("cannot run tshark: {e}")),
        };
        match parsed {
            Ok(flags) => theirs.push(flags),
            Err(e) => return failed(&version, e),
        }
    }
    let names: Vec<String> = paths.iter().map(|p| p.as_ref().display().to_string()).collect();
    let flags = compare(ours, &theirs, &names);
    let agree = flags.values().all(|a| a.extra == 0 && a.missing == 0);
    CrossCheckSection { tshark: version, error: None, flags, agree }
}

/// One line for the terminal and the report.
pub fn describe(check: &CrossCheckSection) -> String {
    if let Some(e) = &check.error {
        return format!("cross-check with tshark: not made: {e}");
    }
    if check.agree {
        let n: u64 = check.flags.values().map(|a| a.matches).sum();
        return format!("cross-check with tshark: every flag agrees, packet for packet ({n} flags; {})", check.tshark);
    }
    let differing: Vec<String> = check
        .flags
        .iter()
        .filter(|(_, a)| a.extra + a.missing > 0)
        .map(|(f, a)| format!("{f} {} extra, {} missing (first: {})", a.extra, a.missing, first_frames(a)))
        .collect();
    format!("cross-check with tshark: differs on {} ({})", differing.join("; "), check.tshark)
}

fn first_frames(a: &FlagAgreement) -> String {
    a.extra_frames
        .iter()
        .map(|f| format!("+{f}"))
        .chain(a.missing_frames.iter().map(|f| format!("-{f}")))
        .take(5)
        .collect::<Vec<_>>()
        .join(" ")
}

fn failed(version: &str, error: String) -> CrossCheckSection {
    CrossCheckSection { tshark: version.to_string(), error: Some(error), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tshark_csv_in_any_column_order() {
        let csv = "\"tcp.analysis.duplicate_ack\",frame.number,tcp.analysis.retransmission,tcp.analysis.fast_retransmission,\
                   tcp.analysis.spurious_retransmission,tcp.analysis.out_of_order,tcp.analysis.lost_segment,tcp.analysis.zero_window\n\
                   \"1\",\"7\",,,,,,\n,\"9\",\"1\",\"1\",,,,\n";
        let f = parse_tshark_csv(csv).unwrap();
        assert_eq!(f["duplicate_ack"], BTreeSet::from([7]));
        assert_eq!(f["retransmission"], BTreeSet::from([9]));
        assert_eq!(f["fast_retransmission"], BTreeSet::from([9]));
        assert!(parse_tshark_csv("frame.number\n1\n").unwrap_err().contains("no column"));
    }

    #[test]
    fn agreement_counts_and_lists_frames() {
        let mut ours = empty_flags();
        let mut theirs = empty_flags();
        ours.get_mut("out_of_order").unwrap().extend([3, 5, 8]);
        theirs.get_mut("out_of_order").unwrap().extend([3, 8, 13]);
        let r = compare(&[ours.clone()], &[theirs.clone()], &["a.pcap".into()]);
        let a = &r["out_of_order"];
        assert_eq!((a.matches, a.extra, a.missing), (2, 1, 1));
        assert_eq!((a.extra_frames.clone(), a.missing_frames.clone()), (vec!["5".to_string()], vec!["13".to_string()]));
        // Several files: frames are named by their file.
        let r = compare(&[ours.clone(), ours], &[theirs.clone(), theirs], &["a".into(), "b".into()]);
        assert_eq!(r["out_of_order"].extra_frames, ["a:5", "b:5"]);
        assert_eq!(r["retransmission"], FlagAgreement::default());
    }
}
