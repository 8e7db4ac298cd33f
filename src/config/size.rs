//! Byte sizes written with units, PostgreSQL style (`10000B`, `512kB`, `64MB`, `1GB`; powers of
//! 1024, `KiB`/`MiB`/`GiB` accepted too); a bare number is refused like a bare duration.

const UNITS: &[(&str, usize)] = &[
    ("B", 1),
    ("kB", 1 << 10),
    ("KB", 1 << 10),
    ("KiB", 1 << 10),
    ("MB", 1 << 20),
    ("MiB", 1 << 20),
    ("GB", 1 << 30),
    ("GiB", 1 << 30),
];

/// Parses a size such as `64MB`; the error explains what is accepted.
pub(super) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!("`{text}` is not a size; write e.g. `64MB`"));
    }
    if unit.is_empty() {
        return Err(format!("`{text}` has no unit; write e.g. `{text}B` or `{text}kB`"));
    }
    let Some(&(_, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("`{text}`: unknown unit `{unit}` (use B, kB, MB or GB)"));
    };
    number.parse::<usize>().ok().and_then(|n| n.checked_mul(factor)).ok_or_else(|| format!("`{text}` is too large"))
}

/// Writes `bytes` in the largest unit that divides it (`64MB`, `10000B`).
pub(super) fn format_size(bytes: usize) -> String {
    for (unit, factor) in [("GB", 1usize << 30), ("MB", 1 << 20), ("kB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_need_units_and_round_trip() {
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("512kB"), Ok(512 << 10));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10000B"), Ok(10_000));
        assert!(parse_size("64").unwrap_err().contains("no unit"));
        assert!(parse_size("64XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MB").is_err());
        assert!(parse_size("99999999999999999999GB").unwrap_err().contains("too large"));
        for n in [10_000, 1 << 10, 64 << 20, 1 << 30, 1_000_001] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }
}
