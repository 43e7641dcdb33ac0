//! Just enough of Kubernetes quantities to compare storage sizes (`10Gi` against `12Gi`).

/// Bytes a storage quantity stands for, or `None` when it is not a plain storage quantity.
/// Handles the binary (`Ki`..`Ei`) and decimal (`k`, `M`..`E`) suffixes and plain integers;
/// fractional and exponent forms, which storage requests practically never use, yield `None`.
pub fn to_bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u128 = digits.parse().ok()?;
    let mult: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::to_bytes;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(to_bytes("1Gi"), Some(1 << 30));
        assert_eq!(to_bytes("10G"), Some(10_000_000_000));
        assert_eq!(to_bytes("512"), Some(512));
        assert!(to_bytes("2Gi") > to_bytes("1500Mi"));
    }

    #[test]
    fn refuses_what_it_cannot_compare() {
        assert_eq!(to_bytes("1.5Gi"), None);
        assert_eq!(to_bytes("Gi"), None);
        assert_eq!(to_bytes("10Xi"), None);
    }
}
