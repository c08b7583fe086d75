//! GSM 03.38 and UCS-2 text handling for SMS bodies.
//!
//! Data flow: `ingest` calls [`analyse`] to pick the cheapest alphabet for a body and to
//! count its segments (recorded on `MessageAccepted`); the `dispatcher` calls [`encode`]
//! to turn the body into the octets carried in `short_message` / `message_payload`, with
//! the matching SMPP `data_coding`. The carrier simulator and receipt parsing use
//! [`decode`] for inbound (MO) text.
//!
//! GSM-7 text is carried *unpacked* (one septet per octet), which is what SMPP
//! `data_coding = 0` means on almost every SMSC. Characters of the extension table
//! cost two septets (`ESC` + code) and a segment boundary never splits such a pair;
//! UCS-2 boundaries never split a surrogate pair.

use thiserror::Error;

/// Septets in a single-part GSM-7 message.
pub const GSM7_SINGLE: usize = 160;
/// Septets per part of a concatenated GSM-7 message (6-octet UDH).
pub const GSM7_MULTI: usize = 153;
/// UTF-16 code units in a single-part UCS-2 message.
pub const UCS2_SINGLE: usize = 70;
/// UTF-16 code units per part of a concatenated UCS-2 message.
pub const UCS2_MULTI: usize = 67;

const ESC: u8 = 0x1B;

/// The GSM 03.38 default alphabet, indexed by septet value. `ESC` (0x1B) maps to NUL here
/// and is never produced from text.
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\0', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (septet after `ESC`, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{000C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The alphabet a body is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GSM 03.38 default alphabet with the extension table (`data_coding = 0`).
    Gsm7,
    /// UCS-2 / UTF-16BE (`data_coding = 8`).
    Ucs2,
}

impl Encoding {
    /// The SMPP `data_coding` value for this alphabet.
    pub fn data_coding(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x00,
            Encoding::Ucs2 => 0x08,
        }
    }

    /// Stable name used in events (`GSM7` / `UCS2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM7",
            Encoding::Ucs2 => "UCS2",
        }
    }
}

/// Result of [`analyse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analysis {
    /// Cheapest alphabet that can carry the text.
    pub encoding: Encoding,
    /// Length in the alphabet's units: septets for GSM-7, UTF-16 code units for UCS-2.
    pub units: usize,
    /// Number of SMS parts needed.
    pub segments: usize,
}

/// Errors from [`decode`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GsmError {
    /// A septet above 0x7F was found in GSM-7 data: the input is not GSM-7. Dead-letter.
    #[error("octet 0x{0:02X} is not a GSM-7 septet")]
    InvalidSeptet(u8),
    /// UCS-2 data with an odd number of octets. Dead-letter.
    #[error("UCS-2 data has an odd length ({0} octets)")]
    OddUcs2Length(usize),
}

fn basic_code(c: char) -> Option<u8> {
    if c == '\0' {
        return None;
    }
    BASIC.iter().position(|&b| b == c).map(|p| p as u8)
}

fn extension_code(c: char) -> Option<u8> {
    EXTENSION
        .iter()
        .find(|(_, ch)| *ch == c)
        .map(|(code, _)| *code)
}

/// Septets a character costs in GSM-7, or `None` if it is outside the alphabet.
fn gsm7_cost(c: char) -> Option<usize> {
    if basic_code(c).is_some() {
        Some(1)
    } else if extension_code(c).is_some() {
        Some(2)
    } else {
        None
    }
}

/// Picks the alphabet and counts the segments of `text`.
pub fn analyse(text: &str) -> Analysis {
    let septets: Option<usize> = text.chars().map(gsm7_cost).sum();
    match septets {
        Some(units) => Analysis {
            encoding: Encoding::Gsm7,
            units,
            segments: gsm7_parts(text).len().max(1),
        },
        None => {
            let units = text.encode_utf16().count();
            Analysis {
                encoding: Encoding::Ucs2,
                units,
                segments: ucs2_parts(text).len().max(1),
            }
        }
    }
}

/// Splits into per-part character runs, each costing at most `limit` units, without
/// splitting a character (an escape pair or a surrogate pair is one character here).
fn split_by_cost(
    text: &str,
    single: usize,
    multi: usize,
    cost: impl Fn(char) -> usize,
) -> Vec<&str> {
    let total: usize = text.chars().map(&cost).sum();
    if total <= single {
        return if text.is_empty() { vec![] } else { vec![text] };
    }
    let mut parts = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let k = cost(c);
        if used + k > multi {
            parts.push(&text[start..i]);
            start = i;
            used = 0;
        }
        used += k;
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

fn gsm7_parts(text: &str) -> Vec<&str> {
    split_by_cost(text, GSM7_SINGLE, GSM7_MULTI, |c| gsm7_cost(c).unwrap_or(1))
}

fn ucs2_parts(text: &str) -> Vec<&str> {
    split_by_cost(text, UCS2_SINGLE, UCS2_MULTI, char::len_utf16)
}

/// Splits `text` into the character runs of each SMS part for `encoding`.
pub fn split(text: &str, encoding: Encoding) -> Vec<&str> {
    match encoding {
        Encoding::Gsm7 => gsm7_parts(text),
        Encoding::Ucs2 => ucs2_parts(text),
    }
}

/// Encodes `text` as octets for `encoding`: unpacked septets for GSM-7 (characters
/// outside the alphabet become `?`), UTF-16BE for UCS-2.
pub fn encode(text: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Gsm7 => {
            let mut out = Vec::with_capacity(text.len());
            for c in text.chars() {
                if let Some(b) = basic_code(c) {
                    out.push(b);
                } else if let Some(e) = extension_code(c) {
                    out.push(ESC);
                    out.push(e);
                } else {
                    out.push(b'?');
                }
            }
            out
        }
        Encoding::Ucs2 => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
    }
}

/// Decodes octets received with SMPP `data_coding`. 0 is unpacked GSM-7, 8 is UCS-2,
/// 1 (IA5/ASCII) and 3 (Latin-1) are decoded as Latin-1; anything else is read as
/// Latin-1 too, which never fails and keeps every octet visible.
pub fn decode(data: &[u8], data_coding: u8) -> Result<String, GsmError> {
    match data_coding {
        0x00 => {
            let mut out = String::with_capacity(data.len());
            let mut it = data.iter();
            while let Some(&b) = it.next() {
                if b > 0x7F {
                    return Err(GsmError::InvalidSeptet(b));
                }
                if b == ESC {
                    match it.next() {
                        Some(&e) => match EXTENSION.iter().find(|(code, _)| *code == e) {
                            Some((_, c)) => out.push(*c),
                            None => out.push(' '),
                        },
                        None => out.push(' '),
                    }
                } else {
                    out.push(BASIC[b as usize]);
                }
            }
            Ok(out)
        }
        0x08 => {
            if !data.len().is_multiple_of(2) {
                return Err(GsmError::OddUcs2Length(data.len()));
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Ok(String::from_utf16_lossy(&units))
        }
        _ => Ok(data.iter().map(|&b| b as char).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_ascii_is_gsm7_single_segment() {
        let a = analyse("Hello world");
        assert_eq!(
            a,
            Analysis {
                encoding: Encoding::Gsm7,
                units: 11,
                segments: 1
            }
        );
    }

    #[test]
    fn extension_chars_cost_two_septets() {
        let a = analyse("€[]");
        assert_eq!(a.encoding, Encoding::Gsm7);
        assert_eq!(a.units, 6);
    }

    #[test]
    fn boundaries_160_and_161() {
        assert_eq!(analyse(&"a".repeat(160)).segments, 1);
        assert_eq!(analyse(&"a".repeat(161)).segments, 2);
        assert_eq!(analyse(&"a".repeat(306)).segments, 2);
        assert_eq!(analyse(&"a".repeat(307)).segments, 3);
    }

    #[test]
    fn escape_pair_is_never_split() {
        // 152 plain septets then a two-septet '€': the euro cannot fit in part one.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(20));
        let parts = split(&text, Encoding::Gsm7);
        assert_eq!(parts[0].chars().count(), 152);
        assert!(parts[1].starts_with('€'));
    }

    #[test]
    fn emoji_forces_ucs2_and_surrogates_stay_whole() {
        let a = analyse("hi 😀");
        assert_eq!(a.encoding, Encoding::Ucs2);
        assert_eq!(a.units, 5);
        let text = format!("{}😀", "x".repeat(66));
        let parts = split(&text, Encoding::Ucs2);
        assert_eq!(parts.len(), 1, "68 units fit one 70-unit part");
        let text = format!("{}😀{}", "x".repeat(66), "y".repeat(10));
        let parts = split(&text, Encoding::Ucs2);
        assert_eq!(parts[0], "x".repeat(66));
        assert!(parts[1].starts_with('😀'));
    }

    #[test]
    fn decode_rejects_high_septet() {
        assert_eq!(decode(&[0x41, 0x80], 0), Err(GsmError::InvalidSeptet(0x80)));
        assert_eq!(decode(&[0x00], 8), Err(GsmError::OddUcs2Length(1)));
    }

    proptest! {
        #[test]
        fn gsm7_round_trips(s in "[A-Za-z0-9 @£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!#%&()*+,./:;<=>?¡ÄÖÑÜ§¿äöñüà€\\[\\]{}|~^\\\\]{0,400}") {
            let a = analyse(&s);
            prop_assert_eq!(a.encoding, Encoding::Gsm7);
            let bytes = encode(&s, Encoding::Gsm7);
            prop_assert_eq!(bytes.len(), a.units);
            prop_assert_eq!(decode(&bytes, 0).unwrap(), s.clone());
            let joined: String = split(&s, Encoding::Gsm7).concat();
            prop_assert_eq!(joined, s);
        }

        #[test]
        fn any_text_round_trips_in_ucs2_and_parts_fit(s in "\\PC{0,300}") {
            let bytes = encode(&s, Encoding::Ucs2);
            prop_assert_eq!(decode(&bytes, 8).unwrap(), s.clone());
            let parts = split(&s, Encoding::Ucs2);
            let joined: String = parts.concat();
            prop_assert_eq!(&joined, &s);
            if parts.len() > 1 {
                for p in &parts {
                    prop_assert!(p.encode_utf16().count() <= UCS2_MULTI);
                }
            }
            if analyse(&s).encoding == Encoding::Ucs2 {
                prop_assert_eq!(analyse(&s).segments, parts.len().max(1));
            }
        }
    }
}

/// How a message longer than one SMS goes to the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LongMode {
    /// Concatenated parts, each with a 6-octet UDH (8-bit reference). The common default.
    Udh8,
    /// Concatenated parts, each with a 7-octet UDH (16-bit reference).
    Udh16,
    /// Concatenated parts described by the `sar_*` TLVs; the carrier builds the UDH.
    Sar,
    /// One PDU with the whole text in the `message_payload` TLV.
    Payload,
}

/// One PDU's worth of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Octets for `short_message` (UDH first, when there is one) or `message_payload`.
    pub octets: Vec<u8>,
    /// The octets start with a UDH: set `esm_class` UDHI (0x40).
    pub udhi: bool,
    /// `(reference, total, sequence)` for the `sar_*` TLVs.
    pub sar: Option<(u16, u8, u8)>,
    /// Goes in `message_payload` rather than `short_message`.
    pub payload: bool,
}

/// Most parts a concatenated message can have (the UDH counts them in one octet).
pub const MAX_PARTS: usize = 255;

/// Splits and encodes `text` into the PDUs `mode` needs. A text that fits one SMS is one
/// plain part in every mode. `reference` identifies the concatenated message (use the
/// same one when an attempt is retried on the same carrier). Escape pairs and surrogate
/// pairs are never split. Texts needing more than [`MAX_PARTS`] parts are an error.
pub fn parts(
    text: &str,
    encoding: Encoding,
    mode: LongMode,
    reference: u16,
) -> Result<Vec<Part>, String> {
    let (single, multi_udh8, multi_udh16) = match encoding {
        // GSM-7 counts septets: a 6-octet UDH takes 7 septets, a 7-octet one 8.
        Encoding::Gsm7 => (GSM7_SINGLE, GSM7_MULTI, GSM7_SINGLE - 8),
        // UCS-2 counts UTF-16 units of two octets: 140 - 6 = 134 octets, 140 - 7 → 132.
        Encoding::Ucs2 => (UCS2_SINGLE, UCS2_MULTI, UCS2_SINGLE - 4),
    };
    let cost = |c: char| match encoding {
        Encoding::Gsm7 => gsm7_cost(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16(),
    };
    let total: usize = text.chars().map(cost).sum();
    let plain = |octets: Vec<u8>, payload: bool| Part {
        octets,
        udhi: false,
        sar: None,
        payload,
    };
    if total <= single {
        return Ok(vec![plain(encode(text, encoding), false)]);
    }
    if mode == LongMode::Payload {
        return Ok(vec![plain(encode(text, encoding), true)]);
    }
    let per_part = if mode == LongMode::Udh16 {
        multi_udh16
    } else {
        multi_udh8
    };
    let chunks = split_by_cost(text, per_part, per_part, cost);
    if chunks.len() > MAX_PARTS {
        return Err(format!(
            "{} parts exceed the limit of {MAX_PARTS}",
            chunks.len()
        ));
    }
    let n = chunks.len() as u8;
    Ok(chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let seq = i as u8 + 1;
            let body = encode(chunk, encoding);
            match mode {
                LongMode::Udh8 => {
                    let mut o = vec![0x05, 0x00, 0x03, reference as u8, n, seq];
                    o.extend(body);
                    Part {
                        octets: o,
                        udhi: true,
                        sar: None,
                        payload: false,
                    }
                }
                LongMode::Udh16 => {
                    let [hi, lo] = reference.to_be_bytes();
                    let mut o = vec![0x06, 0x08, 0x04, hi, lo, n, seq];
                    o.extend(body);
                    Part {
                        octets: o,
                        udhi: true,
                        sar: None,
                        payload: false,
                    }
                }
                LongMode::Sar | LongMode::Payload => Part {
                    octets: body,
                    udhi: false,
                    sar: Some((reference, n, seq)),
                    payload: false,
                },
            }
        })
        .collect())
}

/// A concatenation header found at the start of a `short_message` with UDHI set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat {
    /// Reference shared by the parts.
    pub reference: u16,
    /// Number of parts.
    pub total: u8,
    /// This part, from 1.
    pub seq: u8,
}

/// Reads a UDH: returns the concatenation element (8- or 16-bit reference), if any, and
/// the text octets after the header. Malformed headers are an error, never a panic.
pub fn read_udh(octets: &[u8]) -> Result<(Option<Concat>, &[u8]), String> {
    let udhl = *octets.first().ok_or("empty short_message with UDHI set")? as usize;
    if octets.len() < 1 + udhl {
        return Err(format!(
            "UDH length {udhl} exceeds the {} octets present",
            octets.len()
        ));
    }
    let (mut ies, rest) = (&octets[1..1 + udhl], &octets[1 + udhl..]);
    let mut concat = None;
    while ies.len() >= 2 {
        let (iei, len) = (ies[0], ies[1] as usize);
        let data = ies
            .get(2..2 + len)
            .ok_or("truncated UDH information element")?;
        match (iei, len) {
            (0x00, 3) => {
                concat = Some(Concat {
                    reference: data[0] as u16,
                    total: data[1],
                    seq: data[2],
                })
            }
            (0x08, 4) => {
                concat = Some(Concat {
                    reference: u16::from_be_bytes([data[0], data[1]]),
                    total: data[2],
                    seq: data[3],
                })
            }
            _ => {}
        }
        ies = &ies[2 + len..];
    }
    Ok((
        concat.filter(|c| c.total > 0 && c.seq > 0 && c.seq <= c.total),
        rest,
    ))
}

#[cfg(test)]
mod concat_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_one_plain_part_in_every_mode() {
        for mode in [
            LongMode::Udh8,
            LongMode::Udh16,
            LongMode::Sar,
            LongMode::Payload,
        ] {
            let p = parts("hi", Encoding::Gsm7, mode, 7).unwrap();
            assert_eq!(
                p,
                vec![Part {
                    octets: b"hi".to_vec(),
                    udhi: false,
                    sar: None,
                    payload: false
                }]
            );
        }
    }

    #[test]
    fn udh8_parts_carry_reference_total_and_sequence() {
        let p = parts(&"a".repeat(200), Encoding::Gsm7, LongMode::Udh8, 0x1234).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(&p[0].octets[..6], &[0x05, 0x00, 0x03, 0x34, 2, 1]);
        assert_eq!(p[0].octets.len(), 6 + 153);
        assert_eq!(&p[1].octets[..6], &[0x05, 0x00, 0x03, 0x34, 2, 2]);
        assert!(p.iter().all(|x| x.udhi));
    }

    #[test]
    fn udh16_leaves_room_for_the_longer_header() {
        let p = parts(&"a".repeat(200), Encoding::Gsm7, LongMode::Udh16, 0x1234).unwrap();
        assert_eq!(&p[0].octets[..7], &[0x06, 0x08, 0x04, 0x12, 0x34, 2, 1]);
        assert_eq!(p[0].octets.len(), 7 + 152);
    }

    #[test]
    fn sar_and_payload() {
        let p = parts(&"😀".repeat(40), Encoding::Ucs2, LongMode::Sar, 9).unwrap();
        assert_eq!(
            p.iter().map(|x| x.sar).collect::<Vec<_>>(),
            vec![Some((9, 2, 1)), Some((9, 2, 2))]
        );
        assert_eq!(
            p[0].octets.len(),
            132,
            "33 emoji: 66 units, a pair is never split"
        );
        let p = parts(&"x".repeat(500), Encoding::Gsm7, LongMode::Payload, 9).unwrap();
        assert_eq!((p.len(), p[0].payload, p[0].octets.len()), (1, true, 500));
    }

    #[test]
    fn malformed_udh_is_an_error() {
        assert!(read_udh(&[]).is_err());
        assert!(read_udh(&[0x05, 0x00, 0x03]).is_err());
        assert!(read_udh(&[0x03, 0x00, 0x05, 0x01]).is_err());
    }

    proptest! {
        #[test]
        fn parts_reassemble_to_the_text(s in "\\PC{1,600}", mode in 0..3u8, r in any::<u16>()) {
            let mode = [LongMode::Udh8, LongMode::Udh16, LongMode::Sar][mode as usize];
            let enc = analyse(&s).encoding;
            let ps = parts(&s, enc, mode, r).unwrap();
            let mut text = String::new();
            for p in &ps {
                let body = if p.udhi {
                    let (c, rest) = read_udh(&p.octets).unwrap();
                    let c = c.unwrap();
                    prop_assert_eq!(c.total as usize, ps.len());
                    rest.to_vec()
                } else {
                    p.octets.clone()
                };
                prop_assert!(body.len() <= 140 || enc == Encoding::Gsm7 && body.len() <= 160);
                text.push_str(&decode(&body, enc.data_coding()).unwrap());
            }
            if enc == Encoding::Gsm7 {
                prop_assert_eq!(text, s.chars().map(|c| if gsm7_cost(c).is_some() { c } else { '?' }).collect::<String>());
            } else {
                prop_assert_eq!(text, s);
            }
        }

        #[test]
        fn read_udh_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = read_udh(&bytes);
        }
    }
}
