//! Resource quantities as the HPA reads and writes them: parsing to milli-units (rounded up,
//! as apimachinery's `Quantity.MilliValue()`), printing milli-units in canonical DecimalSI
//! form (`resource.NewMilliQuantity(v, DecimalSI)`), and Go duration strings (`30s`, `1m0s`).

use k8s_openapi::jiff::SignedDuration;

/// Why a quantity or duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a Kubernetes quantity.
    #[error("invalid quantity {0:?}")]
    Quantity(String),
    /// Not a Go duration.
    #[error("invalid duration {0:?}")]
    Duration(String),
}

/// The value of `s` in milli-units, rounded up (`"100m"` → 100, `"1"` → 1000, `"5Mi"` →
/// 5·2²⁰·1000, `"12345n"` → 1).
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    let err = || QuantityError::Quantity(s.to_string());
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(num_end);
    if num.is_empty() {
        return Err(err());
    }
    let (neg, num) = match num.as_bytes()[0] {
        b'-' => (true, &num[1..]),
        b'+' => (false, &num[1..]),
        _ => (false, num),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    // value = digits × 10^exp10 × 2^exp2
    let digits: i128 = format!("{int}{frac}").parse().map_err(|_| err())?;
    let mut exp10: i32 = -(frac.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().map_err(|_| err())?,
        _ => return Err(err()),
    }
    exp10 += 3; // milli-units
    let mut v = digits.checked_mul(1i128 << exp2).ok_or_else(err)?;
    if exp10 >= 0 {
        for _ in 0..exp10 {
            v = v.checked_mul(10).ok_or_else(err)?;
        }
    } else {
        let div = 10i128.checked_pow(exp10.unsigned_abs()).ok_or_else(err)?;
        v = (v + div - 1) / div;
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).map_err(|_| err())
}

/// `milli` milli-units as a canonical DecimalSI quantity (`500m`, `1`, `12k`, `5242880`).
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut v = milli / 1000;
    let mut i = 0;
    const SUFFIX: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while v != 0 && v % 1000 == 0 && i < SUFFIX.len() - 1 {
        v /= 1000;
        i += 1;
    }
    format!("{v}{}", SUFFIX[i])
}

/// A Go duration string (`metav1.Duration`): `30s`, `1m0s`, `1.5s`, `100ms`, `0s`.
pub fn parse_go_duration(s: &str) -> Result<SignedDuration, QuantityError> {
    let err = || QuantityError::Duration(s.to_string());
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(SignedDuration::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let value: f64 = rest[..n].parse().map_err(|_| err())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        nanos += value * unit;
        rest = &rest[u..];
    }
    Ok(SignedDuration::from_nanos(nanos.round() as i64))
}

/// A quantity as a float (`"0.05"` → 0.05), for the per-direction `tolerance`.
pub fn parse_f64(s: &str) -> Result<f64, QuantityError> {
    parse_milli(s).map(|m| m as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_table() {
        let cases = [
            ("100m", 100),
            ("1", 1000),
            ("0.5", 500),
            ("2", 2000),
            ("12345n", 1),
            ("12345678n", 13),
            ("1n", 1),
            ("5Mi", 5 * 1024 * 1024 * 1000),
            ("1k", 1_000_000),
            ("1e3", 1_000_000),
            ("1.5Gi", 1_610_612_736_000),
            ("0", 0),
        ];
        for (s, want) in cases {
            assert_eq!(parse_milli(s), Ok(want), "{s}");
        }
        assert!(parse_milli("abc").is_err());
        assert!(parse_milli("1Q").is_err());
        assert!(parse_milli("").is_err());
    }

    #[test]
    fn format_table() {
        let cases = [
            (500, "500m"),
            (1000, "1"),
            (1500, "1500m"),
            (12_000_000, "12k"),
            (5_242_880_000, "5242880"),
            (0, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(format_milli(v), want, "{v}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s"), Ok(SignedDuration::from_secs(30)));
        assert_eq!(parse_go_duration("1m0s"), Ok(SignedDuration::from_secs(60)));
        assert_eq!(
            parse_go_duration("1.5s"),
            Ok(SignedDuration::from_millis(1500))
        );
        assert_eq!(
            parse_go_duration("100ms"),
            Ok(SignedDuration::from_millis(100))
        );
        assert!(parse_go_duration("10x").is_err());
    }
}
