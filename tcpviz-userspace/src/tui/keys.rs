//! What the keys do to the view (the analysis is never touched, except by `q`).

use std::sync::Arc;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::snapshot::{FlowRow, Snapshot, SortColumn};

#[derive(Default)]
pub struct ViewState {
    pub sort: SortColumn,
    pub reversed: bool,
    pub filter: String,
    /// The filter is being typed (after `/`).
    pub editing: bool,
    /// Index of the selected row among the rows shown.
    pub selected: usize,
    /// The connection whose detail is open.
    pub detail: Option<u64>,
    /// The snapshot shown while paused (`p`).
    pub paused: Option<Arc<Snapshot>>,
    /// `q` was pressed: the session is being finished.
    pub quitting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// End the session as Ctrl-C does.
    Quit,
}

impl ViewState {
    /// The snapshot to draw: the paused one, or the latest.
    pub fn shown(&self, latest: Arc<Snapshot>) -> Arc<Snapshot> {
        self.paused.clone().unwrap_or(latest)
    }

    /// Applies a key. `rows`: the rows shown now (filtered and sorted), `current`: the
    /// snapshot shown now (what `p` freezes).
    pub fn on_key(&mut self, key: KeyEvent, rows: &[&FlowRow], current: &Arc<Snapshot>) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        // Raw mode turns Ctrl-C into a key: it stops the session as the signal would.
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return self.quit();
        }
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => _ = self.filter.pop(),
                KeyCode::Char(c) if self.filter.len() < 80 => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return Action::None;
        }
        let last = rows.len().saturating_sub(1);
        match key.code {
            KeyCode::Char('q') => return self.quit(),
            KeyCode::Char('p') => {
                self.paused = match self.paused {
                    Some(_) => None,
                    None => Some(Arc::clone(current)),
                }
            }
            KeyCode::Esc if self.detail.is_some() => self.detail = None,
            KeyCode::Esc => self.filter.clear(),
            _ if self.detail.is_some() => {}
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.reversed = false;
            }
            KeyCode::Char('r') => self.reversed = !self.reversed,
            KeyCode::Char(c @ '0'..='9') => {
                let i = (c as usize - '0' as usize + 9) % 10;
                let column = SortColumn::ALL[i];
                self.reversed = self.sort == column && !self.reversed;
                self.sort = column;
            }
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected = (self.selected + 10).min(last),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::Home => self.selected = 0,
            KeyCode::End => self.selected = last,
            KeyCode::Enter => self.detail = rows.get(self.selected.min(last)).map(|r| r.flow_id),
            _ => {}
        }
        Action::None
    }

    fn quit(&mut self) -> Action {
        self.quitting = true;
        Action::Quit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::snapshot::visible_rows;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn rows() -> Vec<FlowRow> {
        let mut v = Vec::new();
        for (id, port) in [(1u64, 80u16), (2, 443), (3, 8080)] {
            let mut r = crate::tui::snapshot::tests_row(id, port);
            r.retx_window = id;
            v.push(r);
        }
        v
    }

    #[test]
    fn keys_on_an_empty_table_do_not_panic() {
        let mut s = ViewState::default();
        let snap = Arc::new(Snapshot::default());
        for code in [KeyCode::End, KeyCode::Down, KeyCode::PageDown, KeyCode::Up, KeyCode::Enter, KeyCode::Home] {
            assert_eq!(s.on_key(key(code), &[], &snap), Action::None);
        }
        assert_eq!((s.selected, s.detail), (0, None));
    }

    #[test]
    fn filter_typing_sort_keys_detail_and_quit() {
        let all = rows();
        let snap = Arc::new(Snapshot::default());
        let mut s = ViewState::default();
        for c in ['/', '4', '4', '3'] {
            s.on_key(key(KeyCode::Char(c)), &[], &snap);
        }
        assert!(s.editing);
        s.on_key(key(KeyCode::Enter), &[], &snap);
        assert_eq!((s.filter.as_str(), s.editing), ("443", false));
        let shown = visible_rows(&all, &s.filter, s.sort, s.reversed);
        assert_eq!(shown.len(), 1);
        s.on_key(key(KeyCode::Esc), &shown, &snap);
        assert!(s.filter.is_empty());

        // `5` picks retransmissions in the window; again reverses it; `s` moves on.
        s.on_key(key(KeyCode::Char('5')), &[], &snap);
        assert_eq!((s.sort, s.reversed), (SortColumn::RetxWindow, false));
        s.on_key(key(KeyCode::Char('5')), &[], &snap);
        assert!(s.reversed);
        let shown = visible_rows(&all, &s.filter, s.sort, s.reversed);
        assert_eq!(shown[0].flow_id, 1);
        s.on_key(key(KeyCode::Char('s')), &[], &snap);
        assert_eq!((s.sort, s.reversed), (SortColumn::OooWindow, false));
        s.on_key(key(KeyCode::Char('0')), &[], &snap);
        assert_eq!(s.sort, SortColumn::State);

        let shown = visible_rows(&all, "", SortColumn::RetxWindow, false);
        s.on_key(key(KeyCode::End), &shown, &snap);
        s.on_key(key(KeyCode::Down), &shown, &snap);
        assert_eq!(s.selected, 2);
        s.on_key(key(KeyCode::Enter), &shown, &snap);
        assert_eq!(s.detail, Some(1));
        // In the detail, sort keys do nothing and Esc goes back.
        s.on_key(key(KeyCode::Char('s')), &shown, &snap);
        assert_eq!(s.sort, SortColumn::State);
        s.on_key(key(KeyCode::Esc), &shown, &snap);
        assert_eq!(s.detail, None);

        s.on_key(key(KeyCode::Char('p')), &shown, &snap);
        assert!(s.paused.is_some());
        s.on_key(key(KeyCode::Char('p')), &shown, &snap);
        assert!(s.paused.is_none());
        assert_eq!(s.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &shown, &snap), Action::Quit);
        assert_eq!(s.on_key(key(KeyCode::Char('q')), &shown, &snap), Action::Quit);
    }
}
