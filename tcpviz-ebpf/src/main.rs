//! tcpviz kernel side: a TC classifier that copies the headers of every TCP packet into a
//! ring buffer. It only observes: every path returns `TC_ACT_PIPE`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_PIPE,
    helpers::bpf_ktime_get_boot_ns,
    macros::{classifier, map},
    maps::{PerCpuArray, RingBuf},
    programs::TcContext,
};
use tcpviz_common::{DIR_EGRESS, DIR_INGRESS, PacketRecord, RECORD_PACKET, SNAP_LEN};

#[map]
static PACKETS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU count of records that found no room in the ring buffer.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn tcpviz_ingress(ctx: TcContext) -> i32 {
    snapshot(&ctx, DIR_INGRESS);
    TC_ACT_PIPE
}

#[classifier]
pub fn tcpviz_egress(ctx: TcContext) -> i32 {
    snapshot(&ctx, DIR_EGRESS);
    TC_ACT_PIPE
}

#[inline(always)]
fn snapshot(ctx: &TcContext, direction: u8) {
    let Some(mut entry) = PACKETS.reserve::<PacketRecord>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *lost += 1 };
        }
        return;
    };
    let len = ctx.len();
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved ring-buffer slot that only this program owns
    // until it is submitted.
    let rec = unsafe { &mut *rec };
    rec.kind = RECORD_PACKET;
    rec.direction = direction;
    // SAFETY: the context's skb pointer is valid for the duration of the program.
    rec.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: helper without preconditions.
    rec.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    rec.orig_len = len;
    rec._pad = 0;
    // load_bytes copies min(len, SNAP_LEN) bytes.
    rec.snap_len = match ctx.load_bytes(0, &mut rec.data) {
        Ok(n) if n <= SNAP_LEN => n as u16,
        _ => 0,
    };
    entry.submit(0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
