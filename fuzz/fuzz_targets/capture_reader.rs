//! The pcap/pcapng reader (`CaptureReader`) on any bytes: it must never panic, and reading
//! the same bytes in one go, in short reads of random sizes, or as a file that grows in
//! random steps (the follow mode) must give the same frames and end the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpviz::capture::reader::CaptureReader;
use tcpviz_fuzz::{Chunked, Steps, read_capture, read_growing, read_to_end};

fuzz_target!(|data: &[u8]| {
    let (frames, outcome) = read_capture(data);

    let mut chunked_frames = Vec::new();
    let mut chunked = CaptureReader::new(Chunked::new(data, Steps::new(data)), "fuzz");
    let chunked_outcome = read_to_end(&mut chunked, &mut chunked_frames);
    assert_eq!(frames, chunked_frames, "short reads changed the frames");
    assert_eq!(outcome, chunked_outcome, "short reads changed how reading ended");

    let (grown_frames, grown_outcome) = read_growing(data, &mut Steps::new(data));
    assert_eq!(frames, grown_frames, "reading a growing file changed the frames");
    assert_eq!(outcome, grown_outcome, "reading a growing file changed how reading ended");

    // Frames are numbered 1, 2, 3… in file order.
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.number, i as u64 + 1);
    }
});
