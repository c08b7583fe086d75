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
