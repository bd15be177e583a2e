//! ASCII text between UTF-8 and UTF-16LE, the common case of every text column perfcopy moves
//! (server names, versions, wait types): [`narrow`] (TDS → Arrow) and [`widen`] (Arrow → TDS)
//! convert optimistically and say whether the text was ASCII; callers fall back to the general
//! conversion when it was not. On x86_64 both use SSE2 (part of the baseline, so always there),
//! 16 characters per step, writing straight into the output's spare capacity.

/// Appends the low byte of every UTF-16LE unit of `src` (even length) to `out`; whether every
/// unit was ASCII (if not, what was appended is meaningless).
#[inline]
pub(crate) fn narrow(src: &[u8], out: &mut Vec<u8>) -> bool {
    #[cfg(target_arch = "x86_64")]
    return sse2::narrow(src, out);
    #[cfg(not(target_arch = "x86_64"))]
    return portable::narrow(src, out);
}

/// Appends `s` as UTF-16LE (each byte followed by a zero byte) to `out`; whether `s` was ASCII
/// (if not, what was appended is meaningless).
#[inline]
pub(crate) fn widen(s: &[u8], out: &mut Vec<u8>) -> bool {
    #[cfg(target_arch = "x86_64")]
    return sse2::widen(s, out);
    #[cfg(not(target_arch = "x86_64"))]
    return portable::widen(s, out);
}

/// Without SIMD intrinsics (other architectures, and the reference in tests).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod portable {
    pub(crate) fn narrow(src: &[u8], out: &mut Vec<u8>) -> bool {
        let mut high = 0u16;
        out.extend(src.chunks_exact(2).map(|s| {
            let w = u16::from_le_bytes([s[0], s[1]]);
            high |= w;
            w as u8
        }));
        high & 0xFF80 == 0
    }

    pub(crate) fn widen(s: &[u8], out: &mut Vec<u8>) -> bool {
        out.extend(s.iter().flat_map(|&b| [b, 0]));
        s.is_ascii()
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    /// The OR of `block(i)` for i = 0, 16, 32, … and finally n - 16 (overlapping) when n >= 16,
    /// or of `half(0)` and `half(n - 8)` when 8 <= n < 16; `None` when n < 8 (nothing called).
    #[inline(always)]
    fn cover(n: usize, mut block: impl FnMut(usize) -> __m128i, mut half: impl FnMut(usize) -> __m128i) -> Option<__m128i> {
        // SAFETY: SSE2 is part of the x86_64 baseline; no memory is touched.
        let or = |a, b| unsafe { _mm_or_si128(a, b) };
        if n >= 16 {
            let mut acc = block(0);
            let mut i = 16;
            while i + 16 <= n {
                acc = or(acc, block(i));
                i += 16;
            }
            if i < n {
                acc = or(acc, block(n - 16));
            }
            Some(acc)
        } else if n >= 8 {
            Some(or(half(0), half(n - 8)))
        } else {
            None
        }
    }

    /// Whether no 16-bit lane of `acc` has bits above 0x7F.
    #[inline(always)]
    fn ascii_units(acc: __m128i) -> bool {
        // SAFETY: SSE2 is part of the x86_64 baseline; no memory is touched.
        unsafe {
            let over = _mm_and_si128(acc, _mm_set1_epi16(0xFF80u16 as i16));
            _mm_movemask_epi8(_mm_cmpeq_epi16(over, _mm_setzero_si128())) == 0xFFFF
        }
    }

    #[inline]
    pub(crate) fn narrow(src: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let n = src.len() / 2;
        out.reserve(n);
        let (sp, dp) = (src.as_ptr(), out.spare_capacity_mut()[..n].as_mut_ptr().cast::<u8>());
        let mut high = 0u16;
        // SAFETY: SSE2 is part of the x86_64 baseline. `src` has 2n bytes and `dp` room for n.
        // `cover` calls block(i) only with i + 16 <= n (reads bytes 2i..2i+32, writes i..i+16)
        // and half(i) only with i + 8 <= n (reads 2i..2i+16, writes i..i+8); unaligned access
        // is what loadu/storeu are for. Those writes, or the scalar loop when n < 8, cover
        // dp[..n], so the length can be set.
        let acc = unsafe {
            let load = |i: usize| _mm_loadu_si128(sp.add(2 * i).cast());
            let acc = cover(
                n,
                |i| {
                    let (a, b) = (load(i), load(i + 8));
                    _mm_storeu_si128(dp.add(i).cast(), _mm_packus_epi16(a, b));
                    _mm_or_si128(a, b)
                },
                |i| {
                    let a = load(i);
                    _mm_storel_epi64(dp.add(i).cast(), _mm_packus_epi16(a, a));
                    a
                },
            );
            if acc.is_none() {
                for i in 0..n {
                    let w = u16::from_le_bytes([*sp.add(2 * i), *sp.add(2 * i + 1)]);
                    high |= w;
                    *dp.add(i) = w as u8;
                }
            }
            out.set_len(start + n);
            acc.unwrap_or(_mm_setzero_si128())
        };
        ascii_units(acc) && high & 0xFF80 == 0
    }

    #[inline]
    pub(crate) fn widen(s: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let n = s.len();
        out.reserve(2 * n);
        let (sp, dp) = (s.as_ptr(), out.spare_capacity_mut()[..2 * n].as_mut_ptr().cast::<u8>());
        let mut high = 0u8;
        // SAFETY: SSE2 is part of the x86_64 baseline. `s` has n bytes and `dp` room for 2n. `cover` calls block(i) only with
        // i + 16 <= n (reads i..i+16, writes 2i..2i+32) and half(i) only with i + 8 <= n (reads
        // i..i+8, writes 2i..2i+16); unaligned access is what loadu/storeu are for. Those
        // writes, or the scalar loop when n < 8, cover dp[..2n], so the length can be set.
        unsafe {
            let zero = _mm_setzero_si128();
            let acc = cover(
                n,
                |i| {
                    let v = _mm_loadu_si128(sp.add(i).cast());
                    _mm_storeu_si128(dp.add(2 * i).cast(), _mm_unpacklo_epi8(v, zero));
                    _mm_storeu_si128(dp.add(2 * i + 16).cast(), _mm_unpackhi_epi8(v, zero));
                    v
                },
                |i| {
                    let v = _mm_loadl_epi64(sp.add(i).cast());
                    _mm_storeu_si128(dp.add(2 * i).cast(), _mm_unpacklo_epi8(v, zero));
                    v
                },
            );
            if acc.is_none() {
                for i in 0..n {
                    let b = *sp.add(i);
                    high |= b;
                    *dp.add(2 * i) = b;
                    *dp.add(2 * i + 1) = 0;
                }
            }
            out.set_len(start + 2 * n);
            _mm_movemask_epi8(acc.unwrap_or(zero)) == 0 && high < 0x80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ASCII of every length around the 8- and 16-character blocks, with one character that is
    /// not ASCII (inside a block or in the tail) or none: both implementations against the
    /// standard library, appending after earlier bytes.
    #[test]
    fn narrow_and_widen_agree_with_the_standard_library() {
        let ascii: String = (0..70u8).map(|i| (b' ' + i % 90) as char).collect();
        for len in 0..ascii.len() {
            for odd in [None, Some('é'), Some('\u{7F}'), Some('\u{80}'), Some('\u{100}'), Some('\u{FF7F}'), Some('😀')] {
                let mut text = ascii[..len].to_string();
                if let Some(c) = odd {
                    text.insert(len / 2, c);
                }
                let expect = text.is_ascii();
                let utf16: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
                type Conv = fn(&[u8], &mut Vec<u8>) -> bool;
                let narrows: [Conv; 2] = [narrow, portable::narrow];
                let widens: [Conv; 2] = [widen, portable::widen];
                for (f, g) in narrows.into_iter().zip(widens) {
                    let (mut n, mut w) = (b"pre".to_vec(), b"pre".to_vec());
                    assert_eq!(f(&utf16, &mut n), expect, "narrow {text:?}");
                    assert_eq!(g(text.as_bytes(), &mut w), expect, "widen {text:?}");
                    if expect {
                        assert_eq!(n, format!("pre{text}").into_bytes());
                        assert_eq!(&w[3..], &utf16[..]);
                    }
                }
            }
        }
    }
}
