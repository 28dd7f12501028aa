//! Colours, marker symbols and plot settings shared by the dashboards, so that a kind or a
//! severity looks the same on every page.

use plotly::Configuration;
use plotly::common::MarkerSymbol;

use crate::event::{EventKind, Severity};

/// Severity colours, the same on every page: INFO steel blue, WARNING orange, CRITICAL red.
pub const COLOR_INFO: &str = "#5b7fa6";
pub const COLOR_WARNING: &str = "#f08c00";
pub const COLOR_CRITICAL: &str = "#d62728";

pub fn severity_color(s: Severity) -> &'static str {
    match s {
        Severity::Info => COLOR_INFO,
        Severity::Warning => COLOR_WARNING,
        Severity::Critical => COLOR_CRITICAL,
    }
}

/// One colour per kind, the retransmission family in reds, reordering purple, duplicate
/// ACKs blue, window trouble in cyans, findings dark.
pub fn kind_color(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Retransmission => "#d62728",
        EventKind::FastRetransmission => "#ff7f0e",
        EventKind::SpuriousRetransmission => "#e377c2",
        EventKind::OutOfOrder => "#9467bd",
        EventKind::LostSegment => "#8c564b",
        EventKind::AckLostSegment => "#c49c94",
        EventKind::DuplicateAck => "#1f77b4",
        EventKind::ZeroWindow => "#17becf",
        EventKind::ZeroWindowProbe => "#6fc7d3",
        EventKind::ZeroWindowProbeAck => "#aec7e8",
        EventKind::KeepAlive => "#b5b5b5",
        EventKind::KeepAliveAck => "#7f7f7f",
        EventKind::WindowFull => "#bcbd22",
        EventKind::WindowUpdate => "#dbdb8d",
        EventKind::ReusedPorts => "#98df8a",
        EventKind::LossInfer => "#7f0000",
        EventKind::HandshakeAnomaly => "#393b79",
        EventKind::TeardownAnomaly => "#637939",
        EventKind::TailLossProbe => "#e377c2",
        // What the kernel reported, in greens and olives (live sessions).
        EventKind::KernelRetransmit => "#2ca02c",
        EventKind::KernelRetransmitSynack => "#98df8a",
        EventKind::KernelRto => "#005a00",
        EventKind::KernelRecovery => "#74c476",
        EventKind::KernelResetSent => "#8c6d31",
        EventKind::KernelResetReceived => "#bd9e39",
        EventKind::KernelStateChange => "#c7c7c7",
    }
}

/// One symbol per kind, so kinds stay apart where colours (severities) coincide.
pub fn kind_symbol(kind: EventKind) -> MarkerSymbol {
    match kind {
        EventKind::Retransmission => MarkerSymbol::Circle,
        EventKind::FastRetransmission => MarkerSymbol::Diamond,
        EventKind::SpuriousRetransmission => MarkerSymbol::CircleOpen,
        EventKind::OutOfOrder => MarkerSymbol::TriangleRight,
        EventKind::LostSegment => MarkerSymbol::X,
        EventKind::AckLostSegment => MarkerSymbol::XOpen,
        EventKind::DuplicateAck => MarkerSymbol::TriangleDown,
        EventKind::ZeroWindow => MarkerSymbol::Square,
        EventKind::ZeroWindowProbe => MarkerSymbol::SquareOpen,
        EventKind::ZeroWindowProbeAck => MarkerSymbol::SquareX,
        EventKind::KeepAlive => MarkerSymbol::HexagonOpen,
        EventKind::KeepAliveAck => MarkerSymbol::Hexagon,
        EventKind::WindowFull => MarkerSymbol::Pentagon,
        EventKind::WindowUpdate => MarkerSymbol::TriangleUpOpen,
        EventKind::ReusedPorts => MarkerSymbol::StarOpen,
        EventKind::LossInfer => MarkerSymbol::Star,
        EventKind::HandshakeAnomaly => MarkerSymbol::Hourglass,
        EventKind::TeardownAnomaly => MarkerSymbol::BowTie,
        EventKind::TailLossProbe => MarkerSymbol::StarDiamond,
        // Filled shapes only: the line-only symbols (cross-thin, y-up, line-ns, …) are drawn
        // by the marker's outline alone, which the plots leave at width 0: invisible.
        EventKind::KernelRetransmit => MarkerSymbol::TriangleUp,
        EventKind::KernelRetransmitSynack => MarkerSymbol::TriangleLeft,
        EventKind::KernelRto => MarkerSymbol::Cross,
        EventKind::KernelRecovery => MarkerSymbol::CrossOpen,
        EventKind::KernelResetSent => MarkerSymbol::TriangleNE,
        EventKind::KernelResetReceived => MarkerSymbol::TriangleSW,
        EventKind::KernelStateChange => MarkerSymbol::Octagon,
    }
}

/// The plotly configuration of every plot: responsive, no plotly logo or cloud links, no
/// LaTeX typesetting (a `$` in a file name must stay text).
pub fn plot_config() -> Configuration {
    Configuration::new()
        .responsive(true)
        .display_logo(false)
        .typeset_math(false)
        .show_send_to_cloud(false)
        .show_link(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind has its own symbol, and none is drawn by a line alone (cross-thin, line-ns,
    /// y-up, asterisk, hash): those vanish with the plots' outline width of 0.
    #[test]
    fn every_kind_has_its_own_visible_symbol() {
        let names: Vec<String> = EventKind::ALL
            .iter()
            .map(|k| serde_json::to_value(kind_symbol(*k)).unwrap().as_str().unwrap().to_string())
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for n in &names {
            let line_only = n.contains("thin")
                || n.starts_with("line")
                || n.starts_with("y-")
                || n == "asterisk"
                || n.starts_with("hash");
            assert!(!line_only, "{n} is drawn by its outline only");
        }
    }
}
