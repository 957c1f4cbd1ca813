//! Go-style durations (`30s`, `1h0m0s`, `500ms`, `1.5h`), as upstream's flags
//! (`time.ParseDuration`) and config file (`metav1.Duration`) spell them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A signed duration in nanoseconds, like Go's `time.Duration`.
///
/// Signed because upstream accepts negative values when parsing and rejects them in
/// validation, naming the field; keeping the sign lets us do the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct GoDuration(pub(crate) i64);

impl GoDuration {
    /// Whole seconds.
    pub(crate) const fn from_secs(secs: i64) -> Self {
        Self(secs * 1_000_000_000)
    }

    /// Whether the duration is below zero.
    pub(crate) const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The duration as a [`Duration`], or `None` when it is negative.
    pub(crate) fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }
}

/// Why a duration string could not be parsed; the texts follow Go's `time.ParseDuration`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseDurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`.
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit, such as `5`.
    #[error("missing unit in duration {0:?} (e.g. '5s', '1m', '2h22m')")]
    MissingUnit(String),
    /// A unit Go does not know.
    #[error("unknown unit {unit:?} in duration {input:?} (valid units: ns, us, ms, s, m, h)")]
    UnknownUnit {
        /// The unit.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// More than about 292 years.
    #[error("duration {0:?} is out of range")]
    Overflow(String),
}

impl std::str::FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map(GoDuration)
    }
}

/// Parses like Go's `time.ParseDuration`.
fn parse(input: &str) -> Result<i64, ParseDurationError> {
    let invalid = || ParseDurationError::Invalid(input.to_owned());
    let overflow = || ParseDurationError::Overflow(input.to_owned());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // Total in nanoseconds, kept in u128 so that only the final value can overflow.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "" => return Err(ParseDurationError::MissingUnit(input.to_owned())),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => {
                return Err(ParseDurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    input: input.to_owned(),
                });
            }
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(overflow)?;
        // The fraction, digit by digit; digits beyond nanosecond precision are dropped, as Go
        // does.
        let mut place = scale;
        for digit in frac_part.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            value += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        rest = after;
    }
    let limit = if negative {
        u128::from(i64::MIN.unsigned_abs())
    } else {
        u128::from(i64::MAX.unsigned_abs())
    };
    if total > limit {
        return Err(overflow());
    }
    let magnitude = i128::try_from(total).map_err(|_| overflow())?;
    let signed = if negative { -magnitude } else { magnitude };
    i64::try_from(signed).map_err(|_| overflow())
}

/// `whole.fraction` with the fraction's trailing zeros (and a bare dot) removed.
fn with_fraction(value: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String`: `0s`, `500ms`, `1.5s`, `1m30s`, `1h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 0 {
            f.write_str("-")?;
        }
        let nanos = self.0.unsigned_abs();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000 {
            return write!(f, "{nanos}ns");
        }
        if nanos < 1_000_000 {
            return write!(f, "{}\u{b5}s", with_fraction(nanos, 3));
        }
        if nanos < 1_000_000_000 {
            return write!(f, "{}ms", with_fraction(nanos, 6));
        }
        let secs = nanos / 1_000_000_000;
        let seconds = with_fraction(nanos % 60_000_000_000, 9);
        let minutes = (secs / 60) % 60;
        let hours = secs / 3600;
        if hours > 0 {
            write!(f, "{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            write!(f, "{minutes}m{seconds}s")
        } else {
            write!(f, "{seconds}s")
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    /// A string only, as `metav1.Duration` takes: `syncPeriod: 30` is an error, not 30 ns.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"1h0m0s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Upstream's `logging.flushFrequency` (`TimeOrMetaDuration`): a duration string, or a
/// number of nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeOrDuration(pub(crate) GoDuration);

impl Serialize for TimeOrDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TimeOrDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeOrDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"5s\" or a number of nanoseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeOrDuration, E> {
                v.parse().map(TimeOrDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeOrDuration, E> {
                Ok(TimeOrDuration(GoDuration(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeOrDuration, E> {
                i64::try_from(v)
                    .map(|v| TimeOrDuration(GoDuration(v)))
                    .map_err(|_| E::custom("duration out of range"))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ok = [
            ("0", 0),
            ("30s", 30_000_000_000),
            ("1h0m0s", 3_600_000_000_000),
            ("500ms", 500_000_000),
            ("1.5h", 5_400_000_000_000),
            ("2h22m", 8_520_000_000_000),
            ("-1s", -1_000_000_000),
            ("+5m", 300_000_000_000),
            ("100ns", 100),
            ("3us", 3_000),
            ("3\u{b5}s", 3_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
        ];
        for (text, nanos) in ok {
            assert_eq!(text.parse::<GoDuration>(), Ok(GoDuration(nanos)), "{text}");
        }
        for bad in [
            "",
            "5",
            "s",
            "1x",
            "1.2.3s",
            "-",
            ".s",
            "9999999999h",
            "1 s",
        ] {
            assert!(
                bad.parse::<GoDuration>().is_err(),
                "{bad:?} should not parse"
            );
        }
        assert!(matches!(
            "5".parse::<GoDuration>(),
            Err(ParseDurationError::MissingUnit(_))
        ));
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (30_000_000_000, "30s"),
            (3_600_000_000_000, "1h0m0s"),
            (500_000_000, "500ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (86_400_000_000_000, "24h0m0s"),
            (100, "100ns"),
            (1_500, "1.5\u{b5}s"),
            (-1_000_000_000, "-1s"),
            (900_000_000_000, "15m0s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(GoDuration(nanos).to_string(), text);
            assert_eq!(text.parse::<GoDuration>(), Ok(GoDuration(nanos)));
        }
    }
}
