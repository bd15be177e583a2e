//! Collations of VARCHAR columns (MS-TDS 2.2.5.1.2: 5 bytes, the LCID with the comparison
//! flags and version in 4 bytes little endian, then the SQL sort ID) and the code pages their
//! bytes are in. The server knows a few collations by name (those a `COLLATE` clause may
//! give); text is converted with `encoding_rs`'s code page tables.

use std::fmt;

use encoding_rs::{Encoding, EncoderResult};

/// A collation: its 5 TDS bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Collation(pub [u8; 5]);

/// The collations the server knows: name, TDS bytes, Windows code page.
///
/// The bytes are SQL Server's: LCID (20 bits), then ColFlags `0xD0` for `_CI_AS` (fIgnoreCase,
/// fIgnoreKana, fIgnoreWidth; accent-sensitive), version 0, and the sort ID of a SQL collation
/// (52 = SQL_Latin1_General_CP1_CI_AS) or 0 for a Windows collation, whose code page follows
/// from its LCID.
const KNOWN: &[(&str, [u8; 5], u16)] = &[
    ("SQL_Latin1_General_CP1_CI_AS", [0x09, 0x04, 0xD0, 0x00, 0x34], 1252),
    ("Latin1_General_CI_AS", [0x09, 0x04, 0xD0, 0x00, 0x00], 1252),
    // Russian (LCID 0x0419): code page 1251.
    ("Cyrillic_General_CI_AS", [0x19, 0x04, 0xD0, 0x00, 0x00], 1251),
    // Greek (LCID 0x0408): code page 1253.
    ("Greek_CI_AS", [0x08, 0x04, 0xD0, 0x00, 0x00], 1253),
];

impl Collation {
    /// The server's default, SQL_Latin1_General_CP1_CI_AS (code page 1252).
    pub const DEFAULT: Collation = Collation([0x09, 0x04, 0xD0, 0x00, 0x34]);

    /// A collation by its SQL Server name (case-insensitive), if the server knows it.
    pub fn from_name(name: &str) -> Option<Collation> {
        KNOWN.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name)).map(|&(_, b, _)| Collation(b))
    }

    /// LCID (low 20 bits of the first 4 bytes).
    fn lcid(self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) & 0xF_FFFF
    }

    /// The known collation of the same LCID and sort ID (flags and version do not change the
    /// code page).
    fn known(self) -> Option<&'static (&'static str, [u8; 5], u16)> {
        KNOWN.iter().find(|(_, b, _)| {
            let k = Collation(*b);
            k.lcid() == self.lcid() && b[4] == self.0[4]
        })
    }

    /// SQL Server's name, or the bytes in hex for a collation the server does not know.
    pub fn name(self) -> String {
        match self.known() {
            Some((n, b, _)) if *b == self.0 => (*n).to_string(),
            _ => self.hex(),
        }
    }

    /// The 5 bytes as uppercase hex (no `0x`).
    pub fn hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The code page VARCHAR bytes of this collation are in; `Err` names a collation the server
    /// does not know.
    pub fn code_page(self) -> Result<&'static Encoding, String> {
        let (_, _, cp) = self.known().ok_or_else(|| format!("collation 0x{} (LCID 0x{:05X}, sort ID {}) is not one the test server knows", self.hex(), self.lcid(), self.0[4]))?;
        Ok(match cp {
            1251 => encoding_rs::WINDOWS_1251,
            1253 => encoding_rs::WINDOWS_1253,
            _ => encoding_rs::WINDOWS_1252,
        })
    }

    /// `text` in this collation's code page, each character the code page lacks replaced by
    /// `?` (as SQL Server converts Unicode to a VARCHAR column).
    pub fn encode_lossy(self, text: &str) -> Result<Vec<u8>, String> {
        let cp = self.code_page()?;
        let mut enc = cp.new_encoder();
        let mut out = Vec::with_capacity(text.len());
        let mut src = text;
        let mut chunk = [0u8; 1024];
        loop {
            let (res, read, written) = enc.encode_from_utf8_without_replacement(src, &mut chunk, true);
            out.extend_from_slice(&chunk[..written]);
            src = &src[read..];
            match res {
                EncoderResult::InputEmpty => return Ok(out),
                EncoderResult::OutputFull => {}
                EncoderResult::Unmappable(_) => out.push(b'?'),
            }
        }
    }

    /// `text` in this collation's code page; `Err` names the first character it lacks.
    pub fn encode_exact(self, text: &str) -> Result<Vec<u8>, String> {
        let cp = self.code_page()?;
        let (bytes, _, lossy) = cp.encode(text);
        if lossy {
            let c = text.chars().find(|c| {
                let mut b = [0u8; 4];
                cp.encode(c.encode_utf8(&mut b)).2
            });
            return Err(format!("'{}' has no byte in code page {} ({})", c.unwrap_or('?'), cp.name(), self.name()));
        }
        Ok(bytes.into_owned())
    }

    /// Bytes in this collation's code page as text; `Err` for a byte the code page does not
    /// define.
    pub fn decode(self, bytes: &[u8]) -> Result<String, String> {
        let cp = self.code_page()?;
        cp.decode_without_bom_handling_and_without_replacement(bytes).map(|s| s.into_owned()).ok_or_else(|| format!("bytes that are not text in code page {} ({})", cp.name(), self.name()))
    }
}

impl fmt::Display for Collation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_collations_convert_in_their_code_pages() {
        let cyr = Collation::from_name("cyrillic_general_ci_as").unwrap();
        assert_eq!(cyr.encode_exact("Жук").unwrap(), vec![0xC6, 0xF3, 0xEA]);
        assert_eq!(cyr.decode(&[0xC6, 0xF3, 0xEA]).unwrap(), "Жук");
        let greek = Collation::from_name("Greek_CI_AS").unwrap();
        assert_eq!(greek.decode(&greek.encode_exact("Ωμέγα").unwrap()).unwrap(), "Ωμέγα");
        // 0xD2 is not a character in code page 1253.
        assert!(greek.decode(&[0xD2]).is_err());
        assert_eq!(Collation::DEFAULT.encode_exact("€uro").unwrap(), vec![0x80, b'u', b'r', b'o']);
        // What the code page lacks: an error naming it, or '?' as SQL Server converts.
        assert!(Collation::DEFAULT.encode_exact("Жук").unwrap_err().contains('Ж'));
        assert_eq!(Collation::DEFAULT.encode_lossy("aЖb").unwrap(), b"a?b");
        assert_eq!(Collation::DEFAULT.name(), "SQL_Latin1_General_CP1_CI_AS");
        assert!(Collation([0x11, 0x04, 0xD0, 0x00, 0x00]).code_page().unwrap_err().contains("0x110"));
    }
}
