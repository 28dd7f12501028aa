//! One convention for error text in tcpviz.
//!
//! An error's message says its own layer only — what was being done, to which file or
//! address, with which flag — and its cause is its `source()`. An error never does both
//! (a message that shows a cause it also returns as its source is printed twice by
//! anyhow's `{:#}`: "Address already in use (os error 98): Address already in use (os
//! error 98)"). Text for people always shows the whole chain, joined by ": ": anyhow's
//! `{:#}` at the binary's edge, [`chain`] wherever an error becomes text inside the
//! library (summary.json, benchmark.log, pages, warnings).

use std::error::Error;
use std::fmt;

/// Displays an error and its causes: `cannot write x/events.jsonl: No space left on device`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// The text of an error and its causes.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    Chain(e).to_string()
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::chain;

    fn io_error() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    /// Each error type that wraps a cause shows it exactly once in its chain.
    #[test]
    fn no_message_repeats_its_cause() {
        let cause = io_error().to_string();
        let path = PathBuf::from("/s/events.jsonl");
        let errors: Vec<Box<dyn std::error::Error + Send + Sync + 'static>> = vec![
            Box::new(crate::capture::reader::CaptureError::Io { source_name: "x.pcap".into(), source: io_error() }),
            Box::new(crate::capture::tail::TailError::Io { path: path.clone(), source: io_error() }),
            Box::new(crate::output::session::SessionError::Write { path: path.clone(), source: io_error() }),
            Box::new(crate::output::session::SessionError::Read { path: path.clone(), source: io_error() }),
            Box::new(crate::output::session::SessionError::Create { path: path.clone(), source: io_error() }),
            Box::new(crate::report::ReportError::Read { path: path.clone(), source: io_error() }),
            Box::new(crate::live::LiveError::Session(crate::output::session::SessionError::Write {
                path: path.clone(),
                source: io_error(),
            })),
            Box::new(crate::live::LiveError::Io(io_error())),
            Box::new(crate::live::LiveError::Metrics { addr: "127.0.0.1:9464".parse().unwrap(), source: io_error() }),
            Box::new(crate::live::LiveError::Netns { name: "ns".into(), source: io_error() }),
            Box::new(crate::live::LiveError::NoInterface {
                iface: "eth9".into(),
                netns: Some("ns".into()),
                source: io_error(),
            }),
            Box::new(crate::live::tracefs::TracefsError::Read { path: path.clone(), source: io_error() }),
        ];
        for e in errors {
            let text = chain(e.as_ref());
            assert_eq!(text.matches(&cause).count(), 1, "{text}");
            // And through anyhow, as the binary prints it.
            let printed = format!("{:#}", anyhow::Error::from_boxed(e));
            assert_eq!(printed, text);
        }
    }
}
