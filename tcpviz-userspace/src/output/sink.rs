//! Where a pipeline's events go.

use crate::event::Event;

/// Receives events as they are found.
pub trait EventSink {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()>;
}

impl EventSink for crate::output::jsonl::JsonlWriter {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        self.write_events(events)
    }
}

impl EventSink for Vec<Event> {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        self.extend_from_slice(events);
        Ok(())
    }
}
