//! The sink of the long-running modes: events to `events.jsonl` and the alert engine,
//! alerts to `alerts.jsonl` and the terminal.

use crate::alert::{Alert, AlertConfig, AlertEngine};
use crate::event::Event;
use crate::output::console::Console;
use crate::output::jsonl::JsonlWriter;
use crate::output::session::{ALERTS_FILE, EVENTS_FILE, Session};
use crate::output::sink::EventSink;

/// Events to the file and the alert engine; alerts to the file and the terminal.
pub struct AlertingSink {
    pub events: JsonlWriter,
    pub alerts: JsonlWriter,
    pub engine: AlertEngine,
    pub console: Console,
    /// The terminal view (`--tui`): it shows the alerts instead of the console lines.
    pub view: Option<crate::tui::feed::ViewFeed>,
    fresh: Vec<Alert>,
}

impl AlertingSink {
    pub fn create(session: &Session, config: AlertConfig) -> std::io::Result<AlertingSink> {
        Ok(AlertingSink {
            // The long-running modes go on when a write fails, and count what was lost.
            events: JsonlWriter::create_lasting(&session.path(EVENTS_FILE))?,
            alerts: JsonlWriter::create_lasting(&session.path(ALERTS_FILE))?,
            engine: AlertEngine::new(config),
            console: Console::default(),
            view: None,
            fresh: Vec::new(),
        })
    }

    fn publish(&mut self) -> std::io::Result<()> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        for a in &self.fresh {
            self.alerts.write(a)?;
        }
        // An alert is news: make it and the events behind it visible at once.
        self.alerts.flush()?;
        self.events.flush()?;
        crate::output::json_stream::alerts(&self.fresh);
        match self.view.as_mut() {
            Some(view) => view.note_alerts(&self.fresh),
            None => self.console.print(&self.fresh),
        }
        self.fresh.clear();
        Ok(())
    }

    /// Lets alert levels decay while no packets arrive.
    pub fn tick(&mut self, now: crate::time::TimestampNs) -> std::io::Result<()> {
        self.engine.tick(now, &mut self.fresh);
        self.publish()
    }

    /// Publishes a snapshot to the terminal view when one is due (about once a second).
    pub fn publish_view(&mut self, pipeline: &crate::pipeline::Pipeline, records_lost: u64) {
        if let Some(view) = self.view.as_mut()
            && view.due()
        {
            view.publish(pipeline, &self.engine, records_lost);
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.events.flush()?;
        self.alerts.flush()
    }
}

impl EventSink for AlertingSink {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        self.events.write_events(events)?;
        crate::output::json_stream::events(events);
        if let Some(view) = self.view.as_mut() {
            view.note_events(events);
        }
        for e in events {
            self.engine.on_event(e, &mut self.fresh);
        }
        self.publish()
    }
}
