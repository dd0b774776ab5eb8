//! Kubernetes resource quantities (`500m`, `128Mi`, `1.5`, `2e3`), parsed
//! at the edge so a bad value is refused with the annotation's name instead
//! of the API server's generic message, and requests can be compared with
//! limits.

use std::fmt;

/// Longest accepted quantity text.
pub const MAX_LEN: usize = 32;

/// A positive quantity, kept as written (that is what goes into the pod
/// spec) with its value for comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    text: String,
    value: f64,
}

impl Quantity {
    /// Parses `text` with Kubernetes' grammar: a decimal number, then
    /// optionally a binary suffix (`Ki` … `Ei`), a decimal suffix (`n`, `u`,
    /// `m`, `k`, `M`, `G`, `T`, `P`, `E`) or an exponent (`e3`). It must be
    /// greater than zero.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a quantity like 500m, 1, 128Mi or 1Gi");
        if text.is_empty() || text.len() > MAX_LEN || !text.is_ascii() {
            return Err(bad());
        }
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let n: f64 = number.parse().map_err(|_| bad())?;
        let factor = match suffix {
            "" => 1.0,
            "Ki" => 1024f64,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                let e: i32 = exp.parse().map_err(|_| bad())?;
                if !(-18..=18).contains(&e) {
                    return Err(bad());
                }
                10f64.powi(e)
            }
            _ => return Err(bad()),
        };
        let value = n * factor;
        if value.is_nan() || value <= 0.0 {
            return Err(format!("`{text}` must be greater than zero"));
        }
        Ok(Self {
            text: text.to_string(),
            value,
        })
    }

    /// The value in base units (cores, bytes).
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_quantities_parse_to_their_value() {
        for (text, value) in [
            ("500m", 0.5),
            ("1", 1.0),
            ("1.5", 1.5),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("1Gi", 1024f64.powi(3)),
            ("2k", 2000.0),
            ("1e3", 1000.0),
            ("1E+2", 100.0),
            (".5", 0.5),
            ("100u", 1e-4),
        ] {
            let q = Quantity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!((q.value() - value).abs() < value * 1e-9, "{text}");
            assert_eq!(q.to_string(), text);
        }
    }

    #[test]
    fn garbage_zero_and_negative_quantities_are_refused() {
        for text in [
            "", "m", ".", "1.2.3", "-1", "+1", "1mi", "1 Mi", "1MiB", "one", "0", "0m", "1e",
            "1e99", "1e+", "½", "1Mi\n",
        ] {
            assert!(Quantity::parse(text).is_err(), "{text:?} accepted");
        }
        let long = "1".repeat(MAX_LEN + 1);
        assert!(Quantity::parse(&long).is_err());
        assert_eq!(
            Quantity::parse("0").unwrap_err(),
            "`0` must be greater than zero"
        );
        assert_eq!(
            Quantity::parse("lots").unwrap_err(),
            "`lots` is not a quantity like 500m, 1, 128Mi or 1Gi"
        );
    }
}
