//! The TDS wire formats perfcopy reads and writes itself, where tiberius' per-value API would
//! be the bottleneck: the reply token stream of a `SELECT` decoded straight into Arrow
//! builders ([`decode`]), and bulk-load ROW tokens encoded straight from Arrow arrays
//! ([`encode`]). Both follow MS-TDS 2.2.5 (data types) and 2.2.7 (tokens); tiberius still
//! does everything else (login, TLS, packets, RPC requests, bulk-load metadata).

mod ascii;
pub mod variant;
pub mod arrow;
pub mod decode;
pub mod encode;

/// Days from 0001-01-01 (the TDS DATE epoch) to 1970-01-01.
pub const DAYS_TO_UNIX_EPOCH: i64 = 719_162;

const MS_PER_DAY: i64 = 86_400_000;

/// A DATETIME2 (days since 0001-01-01, time in units of 10^-`scale` s) as units of
/// 10^-`digits` s since the Unix epoch, when that is exact.
#[inline]
pub fn datetime2_units(days: i64, increments: i64, scale: u32, digits: u32) -> Option<i64> {
    let frac = if scale == digits {
        // The common case (DATETIME2(3) read as milliseconds): no division.
        increments
    } else if scale > digits {
        let div = 10i64.checked_pow(scale - digits)?;
        if increments % div != 0 {
            return None;
        }
        increments / div
    } else {
        increments.checked_mul(10i64.checked_pow(digits - scale)?)?
    };
    (days - DAYS_TO_UNIX_EPOCH).checked_mul(86_400 * 10i64.pow(digits))?.checked_add(frac)
}

/// Unix milliseconds as a DATETIME2(3): (days since 0001-01-01, milliseconds in the day).
pub fn unix_ms_to_datetime2(ms: i64) -> (i64, i64) {
    (ms.div_euclid(MS_PER_DAY) + DAYS_TO_UNIX_EPOCH, ms.rem_euclid(MS_PER_DAY))
}

/// A DATETIME (days since 1900-01-01, 1/300 s ticks) as Unix milliseconds (rounded as SQL
/// Server rounds DATETIME to milliseconds).
pub fn datetime_ms(days: i64, ticks: i64) -> i64 {
    (days - 25_567) * MS_PER_DAY + (ticks * 10 + 1) / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime2_to_unix_units() {
        // 1970-01-01T00:00:01.234 as DATETIME2(3) and DATETIME2(7).
        assert_eq!(datetime2_units(719_162, 1_234, 3, 3), Some(1_234));
        assert_eq!(datetime2_units(719_162, 12_340_000, 7, 3), Some(1_234));
        assert_eq!(datetime2_units(719_162, 12_340_001, 7, 3), None);
        assert_eq!(datetime2_units(719_162, 12_340_001, 7, 6), None);
        assert_eq!(datetime2_units(719_162, 1_234, 3, 6), Some(1_234_000));
        // 2020-01-01 is day 737424 since 0001-01-01.
        assert_eq!(datetime2_units(737_424, 0, 3, 3), Some(1_577_836_800_000));
    }

    #[test]
    fn unix_ms_round_trips_through_datetime2() {
        for ms in [1_577_836_800_123, -1, 0, 86_399_999, -86_400_001] {
            let (days, in_day) = unix_ms_to_datetime2(ms);
            assert!((0..MS_PER_DAY).contains(&in_day));
            assert_eq!(datetime2_units(days, in_day, 3, 3), Some(ms));
        }
        assert_eq!(unix_ms_to_datetime2(-1), (DAYS_TO_UNIX_EPOCH - 1, MS_PER_DAY - 1));
    }

    #[test]
    fn datetime_ticks_to_ms() {
        // 1970-01-01 is day 25567 since 1900-01-01; 300 ticks are one second.
        assert_eq!(datetime_ms(25_567, 300), 1_000);
        assert_eq!(datetime_ms(25_567, 1), 3);
    }
}

#[cfg(test)]
mod child_types_tests;
