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
    /// Socket owners (live sessions): events and alerts name the processes of their
    /// connection. Empty elsewhere.
    pub owners: crate::attribution::Owners,
    /// Live sessions: events and alerts are annotated with `owners` and tallied per service.
    pub attributing: bool,
    /// Retransmissions and alerts per service (live sessions).
    pub services: crate::attribution::ServiceCounts,
    /// The terminal view (`--tui`): it shows the alerts instead of the console lines.
    pub view: Option<crate::tui::feed::ViewFeed>,
    fresh: Vec<Alert>,
    annotated: Vec<Event>,
}

impl AlertingSink {
    pub fn create(session: &Session, config: AlertConfig) -> std::io::Result<AlertingSink> {
        Ok(AlertingSink {
            // The long-running modes go on when a write fails, and count what was lost.
            events: JsonlWriter::create_lasting(session, EVENTS_FILE)?,
            alerts: JsonlWriter::create_lasting(session, ALERTS_FILE)?,
            engine: AlertEngine::new(config),
            console: Console::default(),
            owners: Default::default(),
            attributing: false,
            services: Default::default(),
            view: None,
            fresh: Vec::new(),
            annotated: Vec::new(),
        })
    }

    fn publish(&mut self) -> std::io::Result<()> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        for a in &mut self.fresh {
            if let Some(p) = self.owners.either((a.src, a.sport), (a.dst, a.dport)) {
                a.service = Some(p.service().to_string());
                a.message.push_str(&format!(" [{}]", p.label()));
            }
            if self.attributing {
                self.services.alert(a.service.as_deref());
            }
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
    pub fn publish_view(
        &mut self,
        pipeline: &crate::pipeline::Pipeline,
        interface_of: &crate::tui::feed::InterfaceOf<'_>,
        records_lost: u64,
    ) {
        if let Some(view) = self.view.as_mut()
            && view.due()
        {
            view.publish(pipeline, &self.engine, &self.owners, interface_of, records_lost);
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.events.flush()?;
        self.alerts.flush()
    }
}

impl EventSink for AlertingSink {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        let events = if !self.attributing {
            events
        } else {
            self.annotated.clear();
            self.annotated.extend_from_slice(events);
            for e in &mut self.annotated {
                self.owners.annotate(e);
                // The kernel's report, not the wire's: it counts every retransmission of this
                // host's sockets, also those of connections not watched on the wire.
                if e.event == crate::event::EventKind::KernelRetransmit {
                    self.services.retransmission(e.extra.src_process.as_deref());
                }
            }
            &self.annotated[..]
        };
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
