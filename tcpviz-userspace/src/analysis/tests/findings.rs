//! tcpviz's findings: timeouts, stalls, tail-loss probes, handshake and teardown.

use super::*;

#[test]
fn timer_retransmission_is_inferred_loss_but_recovery_is_not() {
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(20.1, From::Client, 1001, 1, 1000, PA, 60000);
    c.send(28.0, From::Server, 1, 1001, 0, A, 60000);
    // 1001..2001 lost, no duplicate ACK (it was the last segment): the timer fires. The
    // first repeat of a lone segment is the sender's tail-loss probe, the next its timeout.
    let probe = c.send(240.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&probe), vec![EventKind::Retransmission, EventKind::TailLossProbe]);
    let rto = c.send(630.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&rto), vec![EventKind::Retransmission, EventKind::LossInfer]);
    assert_eq!(rto[1].extra.reason, Some(Reason::RetransmissionTimeout));
    assert_eq!(rto[1].severity, Severity::Warning);
    // Backed off: the second attempt is critical.
    let again = c.send(1430.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(again[1].extra.attempt, Some(2));
    assert_eq!(again[1].severity, Severity::Critical);
    // A retransmission right after a partial ACK (recovery in progress) is not a timeout.
    let mut c = Conv::new();
    c.handshake();
    for i in 0..4u32 {
        c.send(20.0, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    c.send(300.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(301.0, From::Server, 1, 2001, 0, A, 60000);
    let partial = c.send(301.05, From::Client, 2001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&partial), vec![EventKind::Retransmission]);
}

#[test]
fn ack_stall_and_not_when_the_window_was_closed() {
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    let late = c.send(2520.0, From::Server, 1, 1001, 0, A, 60000);
    assert_eq!(Conv::kinds(&late), vec![EventKind::LossInfer]);
    assert_eq!(late[0].extra.reason, Some(Reason::AckStall));
    assert_eq!(late[0].extra.stall_ms, Some(2500.0));
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(21.0, From::Server, 1, 1, 0, A, 0);
    c.send(2520.0, From::Server, 1, 1001, 0, A, 60000);
    assert!(!c.reasons().contains(&Reason::AckStall), "{:?}", c.reasons());
}

#[test]
fn handshake_and_teardown_findings() {
    // Refused: RST-ACK answers the SYN.
    let mut c = Conv::new();
    c.send(0.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    let rst = c.send(0.1, From::Server, 0, 1, 0, TcpFlags::RST | A, 0);
    assert_eq!(rst[0].extra.reason, Some(Reason::ConnectionRefused));
    c.finish();
    assert_eq!(c.reasons(), vec![Reason::ConnectionRefused]);

    // SYNs never answered: two retransmissions, then nothing.
    let mut c = Conv::new();
    c.send(0.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.send(1000.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.send(3000.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.finish();
    assert_eq!(c.reasons(), vec![Reason::SynRetransmitted, Reason::SynRetransmitted, Reason::NoSynAck]);
    let last = c.events.last().unwrap();
    assert_eq!((last.severity, last.frame, last.extra.attempt), (Severity::Critical, Some(3), Some(3)));

    // Too early to tell: the capture ends 0.5 s after the only SYN.
    let mut c = Conv::new();
    c.send(0.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.finish();
    assert!(c.events.is_empty());

    // RST after FIN is informational; RST with data in flight is a warning.
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 0, TcpFlags::FIN | A, 60000);
    let r = c.send(21.0, From::Server, 1, 2, 0, TcpFlags::RST, 0);
    assert_eq!((r[0].extra.reason, r[0].severity), (Some(Reason::ResetAfterFin), Severity::Info));
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 500, PA, 60000);
    let r = c.send(21.0, From::Server, 1, 1, 0, TcpFlags::RST, 0);
    assert_eq!((r[0].extra.reason, r[0].severity), (Some(Reason::ResetWithDataInFlight), Severity::Warning));
}

/// A flight of four segments of which the server acknowledges two (RTT 8 ms), then silence.
fn silent_tail() -> Conv {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..4u32 {
        c.send(20.0, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    c.send(28.0, From::Server, 1, 2001, 0, A, 60000);
    c
}

#[test]
fn tail_loss_probes_repeat_the_last_segment_or_send_new_data() {
    let mut c = silent_tail();
    let probe = c.send(60.0, From::Client, 3001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&probe), vec![EventKind::Retransmission, EventKind::TailLossProbe]);
    assert_eq!(probe[1].extra.reason, Some(Reason::ProbeLastSegment));
    assert_eq!(probe[1].extra.stall_ms, Some(32.0));
    // One probe per flight: the next silence ends in the retransmission timeout.
    let rto = c.send(300.0, From::Client, 2001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&rto), vec![EventKind::Retransmission, EventKind::LossInfer]);
    // Once the ACK moves, the next flight may be probed again.
    c.send(310.0, From::Server, 1, 4001, 0, A, 60000);
    c.send(311.0, From::Client, 4001, 1, 1000, PA, 60000);
    c.send(311.0, From::Client, 5001, 1, 1000, PA, 60000);
    let new_data = c.send(330.0, From::Client, 6001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&new_data), vec![EventKind::TailLossProbe]);
    assert_eq!(new_data[0].extra.reason, Some(Reason::ProbeNewData));
}

#[test]
fn no_tail_loss_probe_without_a_silent_tail() {
    // Too soon: less than 2 x SRTT after the last ACK.
    let mut c = silent_tail();
    let soon = c.send(35.0, From::Client, 3001, 1, 1000, PA, 60000);
    assert!(!Conv::kinds(&soon).contains(&EventKind::TailLossProbe), "{:?}", Conv::kinds(&soon));
    // Duplicate ACKs came first: the sender is recovering, not probing.
    let mut c = silent_tail();
    let mut sack = SackBlocks::default();
    sack.blocks[0] = (C + 3001, C + 4001);
    sack.len = 1;
    c.send_opts(29.0, From::Server, 1, 2001, 0, A, 60000, TcpOptions { sack, ..Default::default() });
    let recovery = c.send(60.0, From::Client, 3001, 1, 1000, PA, 60000);
    assert!(!Conv::kinds(&recovery).contains(&EventKind::TailLossProbe), "{:?}", Conv::kinds(&recovery));
    // The middle of the flight repeated: not the tail.
    let mut c = silent_tail();
    let middle = c.send(60.0, From::Client, 2001, 1, 1000, PA, 60000);
    assert!(!Conv::kinds(&middle).contains(&EventKind::TailLossProbe), "{:?}", Conv::kinds(&middle));
    // A lone request whose answer the receiver delays (40 ms): the next request is no probe.
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 100, PA, 60000);
    c.send(28.0, From::Server, 1, 101, 0, A, 60000);
    c.send(30.0, From::Client, 101, 1, 100, PA, 60000);
    let next = c.send(60.0, From::Client, 201, 1, 100, PA, 60000);
    assert!(next.is_empty(), "{:?}", Conv::kinds(&next));
    // New data long after the probe time: paced, or timed by the application.
    let mut c = silent_tail();
    let paced = c.send(200.0, From::Client, 4001, 1, 1000, PA, 60000);
    assert!(paced.is_empty(), "{:?}", Conv::kinds(&paced));
    // Nothing outstanding: new data after an idle time is just new data.
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(28.0, From::Server, 1, 1001, 0, A, 60000);
    assert!(c.send(500.0, From::Client, 1001, 1, 1000, PA, 60000).is_empty());
}

#[test]
fn a_timeout_after_a_failed_fast_retransmission_is_a_timeout() {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..6u32 {
        c.send(20.0, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    // 1..1001 lost: three duplicate ACKs, a fast retransmission, which is lost too.
    let mut sack = SackBlocks { len: 1, ..Default::default() };
    for (t, right) in [(28.0, 2001), (28.1, 3001), (28.2, 4001)] {
        sack.blocks[0] = (C + 1001, C + right);
        c.send_opts(t, From::Server, 1, 1, 0, A, 60000, TcpOptions { sack, ..Default::default() });
    }
    let fast = c.send(28.3, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&fast), vec![EventKind::FastRetransmission]);
    let rto = c.send(300.0, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&rto), vec![EventKind::Retransmission, EventKind::LossInfer]);
    assert_eq!(rto[1].extra.reason, Some(Reason::RetransmissionTimeout));
}
