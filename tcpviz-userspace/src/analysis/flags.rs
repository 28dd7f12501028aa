//! Per-packet analysis flags (Wireshark's `TCP_A_*`).

use crate::event::EventKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnalysisFlags(pub u32);

impl AnalysisFlags {
    pub const RETRANSMISSION: u32 = 0x0001;
    pub const LOST_PACKET: u32 = 0x0002;
    pub const ACK_LOST_PACKET: u32 = 0x0004;
    pub const KEEP_ALIVE: u32 = 0x0008;
    pub const DUPLICATE_ACK: u32 = 0x0010;
    pub const ZERO_WINDOW: u32 = 0x0020;
    pub const ZERO_WINDOW_PROBE: u32 = 0x0040;
    pub const ZERO_WINDOW_PROBE_ACK: u32 = 0x0080;
    pub const KEEP_ALIVE_ACK: u32 = 0x0100;
    pub const OUT_OF_ORDER: u32 = 0x0200;
    pub const FAST_RETRANSMISSION: u32 = 0x0400;
    pub const WINDOW_UPDATE: u32 = 0x0800;
    pub const WINDOW_FULL: u32 = 0x1000;
    pub const REUSED_PORTS: u32 = 0x2000;
    pub const SPURIOUS_RETRANSMISSION: u32 = 0x4000;

    /// Flags in the order events are emitted, with their event kinds.
    pub const EVENTS: [(u32, EventKind); 15] = [
        (Self::REUSED_PORTS, EventKind::ReusedPorts),
        (Self::RETRANSMISSION, EventKind::Retransmission),
        (Self::FAST_RETRANSMISSION, EventKind::FastRetransmission),
        (Self::SPURIOUS_RETRANSMISSION, EventKind::SpuriousRetransmission),
        (Self::OUT_OF_ORDER, EventKind::OutOfOrder),
        (Self::LOST_PACKET, EventKind::LostSegment),
        (Self::ACK_LOST_PACKET, EventKind::AckLostSegment),
        (Self::KEEP_ALIVE, EventKind::KeepAlive),
        (Self::WINDOW_UPDATE, EventKind::WindowUpdate),
        (Self::WINDOW_FULL, EventKind::WindowFull),
        (Self::KEEP_ALIVE_ACK, EventKind::KeepAliveAck),
        (Self::DUPLICATE_ACK, EventKind::DuplicateAck),
        (Self::ZERO_WINDOW_PROBE, EventKind::ZeroWindowProbe),
        (Self::ZERO_WINDOW_PROBE_ACK, EventKind::ZeroWindowProbeAck),
        (Self::ZERO_WINDOW, EventKind::ZeroWindow),
    ];

    #[inline]
    pub fn has(self, f: u32) -> bool {
        self.0 & f != 0
    }

    #[inline]
    pub fn set(&mut self, f: u32) {
        self.0 |= f;
    }

    #[inline]
    pub fn clear(&mut self, f: u32) {
        self.0 &= !f;
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}
