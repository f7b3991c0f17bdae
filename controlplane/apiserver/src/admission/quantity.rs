//! Resource quantities (`100m`, `1.5`, `512Mi`, `1e3`, `2G`) as exact milli-units, for the
//! admission arithmetic of LimitRanger and ResourceQuota.

use std::fmt;

/// A quantity in thousandths of its unit (cores → millicores, bytes → millibytes), exact for
/// every suffix Kubernetes accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Milli(pub i128);

/// A string that is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {0:?})")]
pub struct QuantityError(pub String);

fn suffix_factor(s: &str) -> Option<(i128, i128)> {
    // (numerator, denominator) of the multiplier, in milli-units.
    Some(match s {
        "" => (1000, 1),
        "n" => (1, 1_000_000),
        "u" => (1, 1000),
        "m" => (1, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000_000, 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000 << 40, 1),
        "Pi" => (1000 << 50, 1),
        "Ei" => (1000 << 60, 1),
        _ => return None,
    })
}

impl Milli {
    /// Parses a quantity; fractions below a milli-unit round up (as upstream's `MilliValue`).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let bad = || QuantityError(s.to_string());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(t.len());
        let (num, suffix) = t.split_at(split);
        if num.is_empty() || num == "+" || num == "-" {
            return Err(bad());
        }
        let (neg, digits) = match num.as_bytes()[0] {
            b'-' => (true, &num[1..]),
            b'+' => (false, &num[1..]),
            _ => (false, num),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 18
        {
            return Err(bad());
        }
        // mantissa = int.frac as an integer over 10^frac.len()
        let mantissa: i128 = format!("{int}{frac}").parse().map_err(|_| bad())?;
        let mut den: i128 = 10i128.pow(frac.len() as u32);
        let exponent = suffix.strip_prefix(['e', 'E']).filter(|e| !e.is_empty());
        let (mut numer, extra_den) = if let Some(exp) = exponent {
            let e: i32 = exp.parse().map_err(|_| bad())?;
            if e.abs() > 18 {
                return Err(bad());
            }
            if e >= 0 {
                (1000 * 10i128.pow(e as u32), 1)
            } else {
                (1000, 10i128.pow((-e) as u32))
            }
        } else {
            suffix_factor(suffix).ok_or_else(bad)?
        };
        den *= extra_den;
        numer = numer.checked_mul(mantissa).ok_or_else(bad)?;
        let v = (numer + den - 1) / den;
        Ok(Milli(if neg { -v } else { v }))
    }
}

impl std::ops::Add for Milli {
    type Output = Milli;

    fn add(self, o: Milli) -> Milli {
        Milli(self.0 + o.0)
    }
}

impl fmt::Display for Milli {
    /// A canonical-looking form: whole units when exact, else `m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            let units = self.0 / 1000;
            for (suffix, factor) in [("Gi", 1i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
                if units != 0 && units % factor == 0 && units.abs() >= factor {
                    return write!(f, "{}{suffix}", units / factor);
                }
            }
            write!(f, "{units}")
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix() {
        for (s, milli) in [
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("2k", 2_000_000),
            ("1Ki", 1024 * 1000),
            ("512Mi", 512 * 1024 * 1024 * 1000),
            ("1Gi", (1i128 << 30) * 1000),
            ("1G", 1_000_000_000_000),
            ("1e3", 1_000_000),
            ("5E-1", 500),
            ("1u", 1),
            ("-2", -2000),
            ("1E", 1_000_000_000_000_000_000_000),
        ] {
            assert_eq!(Milli::parse(s), Ok(Milli(milli)), "{s}");
        }
        for bad in ["", "abc", "1Zi", "1.2.3", "--1", "m"] {
            assert!(Milli::parse(bad).is_err(), "{bad}");
        }
        assert!(Milli::parse("1Gi").unwrap() > Milli::parse("1000Mi").unwrap());
        assert_eq!(Milli::parse("1Gi").unwrap().to_string(), "1Gi");
        assert_eq!(Milli::parse("1536Mi").unwrap().to_string(), "1536Mi");
        assert_eq!(Milli::parse("250m").unwrap().to_string(), "250m");
        assert_eq!(Milli::parse("2").unwrap().to_string(), "2");
    }
}
