//! Wi-Fi link layers, unwrapped for `decode_frame` as tshark unwraps them by default:
//! radiotap, PPI, Prism and AVS capture headers; 802.11 data and QoS data frames (To-DS and
//! From-DS address layouts, HT control, A-MSDU); LLC/SNAP. WLAN controller tunnels (Aruba
//! GRE, CAPWAP data) hand their 802.11 frame to the same code.
//!
//! What tcpviz cannot read is skipped with a reason, never guessed at: protected
//! (encrypted) frames, and 802.11 fragments (tshark reassembles those; they are rare, as
//! access points fragment only when asked to). Of an A-MSDU, the first subframe is
//! analysed.

use super::decode::SkipReason;

/// Radiotap "flags" field bits.
const RADIOTAP_FLAG_FCS: u8 = 0x10;
const RADIOTAP_FLAG_DATA_PAD: u8 = 0x20;

/// Frame control, second byte.
const FC_TO_DS: u8 = 0x01;
const FC_FROM_DS: u8 = 0x02;
const FC_MORE_FRAGMENTS: u8 = 0x04;
const FC_PROTECTED: u8 = 0x40;
/// "+HTC/Order": in a QoS data frame, a 4-byte HT control field follows the QoS control.
const FC_ORDER: u8 = 0x80;

const IEEE80211_DATA: u8 = 2;
const FCS_LEN: usize = 4;

/// The 802.11 frame inside a capture header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// Where the 802.11 header starts.
    pub start: usize,
    /// Bytes at the end that are not part of the frame (a frame check sequence).
    pub trailer: usize,
    /// The 802.11 header is padded to a multiple of 4 bytes (radiotap's data-pad flag).
    pub padded: bool,
}

fn le16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// Radiotap (link type 127): a little-endian header whose length is in its 3rd and 4th
/// bytes; its optional "flags" field says whether a frame check sequence ends the frame and
/// whether the 802.11 header is padded.
pub fn radiotap(data: &[u8]) -> Result<Inner, SkipReason> {
    let len = le16(data, 2).ok_or(SkipReason::TruncatedHeader)? as usize;
    if data[0] != 0 || len < 8 {
        return Err(SkipReason::Malformed);
    }
    if len > data.len() {
        return Err(SkipReason::TruncatedHeader);
    }
    let present = le32(data, 4).ok_or(SkipReason::TruncatedHeader)?;
    // Further presence words follow while bit 31 is set; the fields come after them all.
    let mut fields = 8;
    let mut word = present;
    while word & 0x8000_0000 != 0 {
        word = le32(data, fields).ok_or(SkipReason::Malformed)?;
        fields += 4;
    }
    let mut flags = 0;
    if present & 0b10 != 0 {
        let mut at = fields;
        if present & 0b01 != 0 {
            // TSFT: 8 bytes, aligned to 8 from the start of the header.
            at = at.next_multiple_of(8) + 8;
        }
        flags = *data.get(at).filter(|_| at < len).ok_or(SkipReason::Malformed)?;
    }
    Ok(Inner {
        start: len,
        trailer: if flags & RADIOTAP_FLAG_FCS != 0 { FCS_LEN } else { 0 },
        padded: flags & RADIOTAP_FLAG_DATA_PAD != 0,
    })
}

/// PPI (link type 192): a little-endian header with its length and the link type of what
/// follows (802.11, usually), then fields; the 802.11-common field says whether a frame
/// check sequence ends the frame.
pub fn ppi(data: &[u8]) -> Result<(Inner, u32), SkipReason> {
    const FIELD_80211_COMMON: u16 = 2;
    let len = le16(data, 2).ok_or(SkipReason::TruncatedHeader)? as usize;
    let dlt = le32(data, 4).ok_or(SkipReason::TruncatedHeader)?;
    if data[0] != 0 || len < 8 {
        return Err(SkipReason::Malformed);
    }
    if len > data.len() {
        return Err(SkipReason::TruncatedHeader);
    }
    let mut trailer = 0;
    let mut at = 8;
    while at + 4 <= len {
        let (field, field_len) = (le16(data, at).unwrap_or(0), le16(data, at + 2).unwrap_or(0) as usize);
        // 802.11-common: TSF (8 bytes), then flags; bit 0 is "FCS present".
        if field == FIELD_80211_COMMON && field_len >= 10 && le16(data, at + 12).is_some_and(|f| f & 1 != 0) {
            trailer = FCS_LEN;
        }
        at += 4 + field_len;
    }
    Ok((Inner { start: len, trailer, padded: false }, dlt))
}

/// Prism (link type 119) or AVS (163) header: the length of the header before the 802.11
/// frame. Link type 119 may carry an AVS header too; its first word says which.
pub fn prism_or_avs(data: &[u8]) -> Result<usize, SkipReason> {
    let first = be32(data, 0).ok_or(SkipReason::TruncatedHeader)?;
    let len = if first & 0xffff_fff0 == 0x8021_1000 {
        // AVS: version word, then the header length, big-endian.
        be32(data, 4).ok_or(SkipReason::TruncatedHeader)? as usize
    } else {
        // Prism: message code, then the message length in the capturing host's byte order
        // (144 bytes as written by every driver).
        let le = le32(data, 4).ok_or(SkipReason::TruncatedHeader)?;
        if le < 0x1_0000 { le as usize } else { le.swap_bytes() as usize }
    };
    if len < 8 {
        return Err(SkipReason::Malformed);
    }
    if len > data.len() {
        return Err(SkipReason::TruncatedHeader);
    }
    Ok(len)
}

/// The 802.11 frame at `data[at..]`: where the LLC header of its (first) MSDU starts.
pub fn ieee80211_payload(data: &[u8], at: usize, padded: bool) -> Result<usize, SkipReason> {
    let fc0 = *data.get(at).ok_or(SkipReason::TruncatedHeader)?;
    let fc1 = *data.get(at + 1).ok_or(SkipReason::TruncatedHeader)?;
    if fc0 & 0x03 != 0 {
        // Only protocol version 0 is defined.
        return Err(SkipReason::Malformed);
    }
    let (frame_type, subtype) = ((fc0 >> 2) & 0x03, fc0 >> 4);
    // Management and control frames, and data frames without data (null function).
    if frame_type != IEEE80211_DATA || subtype & 0x04 != 0 {
        return Err(SkipReason::NotIp);
    }
    if fc1 & FC_PROTECTED != 0 {
        return Err(SkipReason::Encrypted);
    }
    let sequence_control = le16(data, at + 22).ok_or(SkipReason::TruncatedHeader)?;
    if fc1 & FC_MORE_FRAGMENTS != 0 || sequence_control & 0x000f != 0 {
        return Err(SkipReason::LinkFragment);
    }
    let mut header = 24;
    if fc1 & (FC_TO_DS | FC_FROM_DS) == FC_TO_DS | FC_FROM_DS {
        // Wireless distribution system: a fourth address.
        header += 6;
    }
    let mut amsdu = false;
    if subtype & 0x08 != 0 {
        let qos = *data.get(at + header).ok_or(SkipReason::TruncatedHeader)?;
        amsdu = qos & 0x80 != 0;
        header += 2;
        if fc1 & FC_ORDER != 0 {
            header += 4;
        }
    }
    if padded {
        header = header.next_multiple_of(4);
    }
    let payload = at + header;
    if amsdu {
        // Subframe: destination, source, length (big-endian), then the MSDU.
        if data.len() < payload + 14 {
            return Err(SkipReason::TruncatedHeader);
        }
        return Ok(payload + 14);
    }
    Ok(payload)
}

/// LLC with a SNAP header (AA AA 03, an Ethernet OUI, an EtherType): the EtherType and
/// where its payload starts.
pub fn llc_snap(data: &[u8], at: usize) -> Result<(u16, usize), SkipReason> {
    let llc = data.get(at..at + 8).ok_or(SkipReason::TruncatedHeader)?;
    // OUI 00-00-00 (RFC 1042) or 00-00-F8 (bridge tunnel): both carry an EtherType.
    if llc[..3] != [0xaa, 0xaa, 0x03] || llc[3..5] != [0, 0] || (llc[5] != 0 && llc[5] != 0xf8) {
        return Err(SkipReason::NotIp);
    }
    Ok((u16::from_be_bytes([llc[6], llc[7]]), at + 8))
}

/// Aruba WLAN controller GRE protocol types (as tshark registers them): each carries one
/// 802.11 frame.
pub fn is_aruba_gre(proto: u16) -> bool {
    ((0x8200..=0x83f0).contains(&proto) && proto & 0x000f == 0)
        || ((0x8400..=0x9000).contains(&proto) && proto & 0x00ff == 0)
}

/// What a CAPWAP data packet (UDP 5247) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapwapPayload {
    /// A native 802.11 frame at this offset.
    Ieee80211(usize),
    /// An Ethernet frame at this offset.
    Ethernet(usize),
}

/// The CAPWAP data header at `data[at..]` (RFC 5415, section 4.3).
pub fn capwap_data(data: &[u8], at: usize) -> Result<CapwapPayload, SkipReason> {
    let word = be32(data, at).ok_or(SkipReason::TruncatedHeader)?;
    if word >> 24 != 0 {
        // Version 0, type 0 (a plain header; type 1 is a DTLS-encrypted packet).
        return Err(SkipReason::Encrypted);
    }
    let header_len = ((word >> 19) & 0x1f) as usize * 4;
    let wireless_binding = (word >> 9) & 0x1f;
    let native = (word >> 8) & 1 == 1;
    let fragment = (word >> 7) & 1 == 1;
    if header_len < 8 {
        return Err(SkipReason::Malformed);
    }
    if fragment {
        return Err(SkipReason::LinkFragment);
    }
    let start = at + header_len;
    match (native, wireless_binding) {
        (false, _) => Ok(CapwapPayload::Ethernet(start)),
        (true, 1) => Ok(CapwapPayload::Ieee80211(start)),
        (true, _) => Err(SkipReason::UnsupportedLinkType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QoS data frame From-DS with the given flags and an LLC/SNAP IPv4 payload marker.
    fn qos_data(fc1: u8, qos0: u8) -> Vec<u8> {
        let mut f = vec![0x88, fc1];
        f.extend_from_slice(&[0; 22]); // duration, 3 addresses, sequence control
        f.extend_from_slice(&[qos0, 0]);
        if fc1 & FC_ORDER != 0 {
            f.extend_from_slice(&[0; 4]);
        }
        f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        f
    }

    #[test]
    fn qos_data_with_and_without_ht_control() {
        for fc1 in [FC_FROM_DS, FC_FROM_DS | FC_ORDER, FC_TO_DS] {
            let f = qos_data(fc1, 0);
            let llc = ieee80211_payload(&f, 0, false).unwrap();
            assert_eq!(llc_snap(&f, llc), Ok((0x0800, f.len())), "fc1 {fc1:#x}");
        }
    }

    #[test]
    fn four_address_frames_and_padding() {
        let mut f = vec![0x88, FC_TO_DS | FC_FROM_DS];
        f.extend_from_slice(&[0; 28]); // ... plus the fourth address
        f.extend_from_slice(&[0, 0]); // QoS: header is 32 bytes, already a multiple of 4
        assert_eq!(ieee80211_payload(&f, 0, true), Ok(32));
        // A plain QoS frame (26 bytes) padded to 28.
        let f = qos_data(FC_FROM_DS, 0);
        assert_eq!(ieee80211_payload(&f, 0, true), Ok(28));
    }

    #[test]
    fn protected_fragmented_and_non_data_frames_are_skipped_with_their_reason() {
        assert_eq!(ieee80211_payload(&qos_data(FC_PROTECTED, 0), 0, false), Err(SkipReason::Encrypted));
        assert_eq!(ieee80211_payload(&qos_data(FC_MORE_FRAGMENTS, 0), 0, false), Err(SkipReason::LinkFragment));
        let mut beacon = qos_data(0, 0);
        beacon[0] = 0x80;
        assert_eq!(ieee80211_payload(&beacon, 0, false), Err(SkipReason::NotIp));
        let mut null = qos_data(0, 0);
        null[0] = 0xc8; // QoS null
        assert_eq!(ieee80211_payload(&null, 0, false), Err(SkipReason::NotIp));
        assert_eq!(ieee80211_payload(&[0x88], 0, false), Err(SkipReason::TruncatedHeader));
    }

    #[test]
    fn amsdu_first_subframe() {
        let mut f = qos_data(FC_FROM_DS, 0x80);
        let llc = f.split_off(26);
        f.extend_from_slice(&[0; 12]);
        f.extend_from_slice(&(llc.len() as u16).to_be_bytes());
        f.extend_from_slice(&llc);
        let at = ieee80211_payload(&f, 0, false).unwrap();
        assert_eq!(llc_snap(&f, at), Ok((0x0800, f.len())));
    }

    #[test]
    fn radiotap_flags_after_tsft() {
        // present: TSFT | Flags; fields at 8: TSFT (8 bytes), flags = FCS | pad.
        let mut h = vec![0, 0, 18, 0, 0b11, 0, 0, 0];
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&[RADIOTAP_FLAG_FCS | RADIOTAP_FLAG_DATA_PAD, 0]);
        assert_eq!(radiotap(&h), Ok(Inner { start: 18, trailer: 4, padded: true }));
        // An extended presence bitmap moves the fields (and TSFT's alignment) along.
        let mut h = vec![0, 0, 26, 0, 0b11, 0, 0, 0x80, 0, 0, 0, 0];
        h.extend_from_slice(&[0; 4]); // padding to 8
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&[RADIOTAP_FLAG_FCS, 0]);
        assert_eq!(radiotap(&h), Ok(Inner { start: 26, trailer: 4, padded: false }));
        // A flags field the header length leaves out.
        h[2] = 24;
        assert_eq!(radiotap(&h), Err(SkipReason::Malformed));
        assert_eq!(radiotap(&[0, 0, 40, 0, 0, 0, 0, 0]), Err(SkipReason::TruncatedHeader));
        assert_eq!(radiotap(&[1, 0, 8, 0, 0, 0, 0, 0]), Err(SkipReason::Malformed));
    }

    #[test]
    fn prism_and_avs_lengths() {
        let mut prism = vec![0, 0, 0, 0x44, 144, 0, 0, 0];
        prism.resize(150, 0);
        assert_eq!(prism_or_avs(&prism), Ok(144));
        let mut avs = vec![0x80, 0x21, 0x10, 0x01, 0, 0, 0, 64];
        avs.resize(70, 0);
        assert_eq!(prism_or_avs(&avs), Ok(64));
        assert_eq!(prism_or_avs(&avs[..40]), Err(SkipReason::TruncatedHeader));
    }

    #[test]
    fn capwap_headers() {
        // HLEN 2 words, WBID 1, T set.
        let word: u32 = (2 << 19) | (1 << 9) | (1 << 8);
        let mut h = word.to_be_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        assert_eq!(capwap_data(&h, 0), Ok(CapwapPayload::Ieee80211(8)));
        let word: u32 = (2 << 19) | (1 << 9);
        assert_eq!(capwap_data(&[word.to_be_bytes(), [0; 4]].concat(), 0), Ok(CapwapPayload::Ethernet(8)));
        let fragment: u32 = (2 << 19) | (1 << 9) | (1 << 8) | (1 << 7);
        assert_eq!(capwap_data(&fragment.to_be_bytes(), 0), Err(SkipReason::LinkFragment));
        assert_eq!(capwap_data(&[1, 0, 0, 0], 0), Err(SkipReason::Encrypted));
    }

    #[test]
    fn aruba_protocol_types() {
        assert!(is_aruba_gre(0x8240) && is_aruba_gre(0x8200) && is_aruba_gre(0x8300) && is_aruba_gre(0x9000));
        assert!(!is_aruba_gre(0x8847) && !is_aruba_gre(0x88be) && !is_aruba_gre(0x8241) && !is_aruba_gre(0x0800));
    }
}
