//! tcpviz: finds TCP trouble (retransmissions, loss, reordering, stalls, zero windows).
//!
//! Data flow (see DESIGN.md): sources in [`capture`] produce frames, [`capture::decode_frame`]
//! turns them into segments, [`flow`] keeps per-connection state, [`analysis`] applies the
//! rules and emits [`event::Event`]s, which the [`output`] sinks write.
pub mod alert;
pub mod analyse_captures;
pub mod analysis;
pub mod attribution;
pub mod capture;
pub mod config_file;
pub mod cross_check;
#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod error;
pub mod event;
pub mod flow;
pub mod follow;
#[cfg(target_os = "linux")]
pub mod live;
pub mod output;
pub mod pipeline;
pub mod report;
#[cfg(target_os = "linux")]
pub mod sd_notify;
pub mod time;
pub mod tui;
