//! `tcpviz summary --format csv`: one row per flow, worst first, for spreadsheets and
//! scripts. The columns are those of the terminal table, each in its own unit.

use std::fmt::Write as _;

use crate::event::EventKind;
use crate::output::summary::{FlowSummary, Summary};

const HEADER: &str = "flow_id,src,sport,dst,dport,state,packets,payload_bytes,duration_s,retransmitted_pct,\
retransmissions,out_of_order,lost_segments,zero_windows,rtt_median_ms,handshake_rtt_ms,trouble_score,\
kernel_retransmissions,kernel_matched,kernel_retransmitted_segments,kernel_matched_segments,\
out_of_order_resent_per_kernel,limited_by,receiver_window_share,congestion_window_share,loss_recovery_share,\
application_share";

/// The header and the first `top` flows of the summary (flows are stored worst first).
pub fn render_csv(summary: &Summary, top: usize) -> String {
    let mut s = String::with_capacity(128 * (1 + summary.flows.len().min(top)));
    s.push_str(HEADER);
    s.push('\n');
    for f in summary.flows.iter().take(top) {
        row(&mut s, f);
    }
    s
}

/// The data direction's limits: the dominant one, then each share (empty when unknown).
fn limits(f: &FlowSummary) -> String {
    use crate::flow::limits::Limit;
    match f.directions[f.data_direction()].limited_by {
        Some(l) => {
            let shares: Vec<String> = Limit::ALL.iter().map(|k| format!("{:.4}", l.share(*k))).collect();
            format!("{},{}", l.dominant().short(), shares.join(","))
        }
        None => ",,,,".into(),
    }
}

fn row(s: &mut String, f: &FlowSummary) {
    let d = &f.directions[0];
    let retx = f.retransmissions();
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    let kernel: [String; 5] = match &f.kernel {
        Some(k) => {
            [k.kernel_retransmissions, k.matched, k.kernel_retransmitted_segments, k.matched_segments, k.reclassified]
                .map(|n| n.to_string())
        }
        None => Default::default(),
    };
    let _ = writeln!(
        s,
        "{},{},{},{},{},{},{},{},{:.6},{:.4},{},{},{},{},{},{},{},{},{}",
        f.flow_id,
        d.src,
        d.sport,
        d.dst,
        d.dport,
        field(&f.state),
        f.packets,
        f.bytes,
        f.duration_s,
        f.retransmission_rate * 100.0,
        retx,
        f.count(EventKind::OutOfOrder),
        f.count(EventKind::LostSegment),
        f.count(EventKind::ZeroWindow),
        opt(f.data_rtt().median_ms),
        opt(f.handshake_rtt_ms),
        f.trouble_score,
        kernel.join(","),
        limits(f)
    );
}

/// A text field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(field("closed"), "closed");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
