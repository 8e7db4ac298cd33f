//! Durations written with units (`250ms`, `5s`, `2m`, `1h`, `1d`, or combined as `1h30m`); a bare
//! number is refused because nobody can tell whether `timeout: 5000` meant seconds or millis.

use std::time::Duration;

const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parses a duration such as `5s`, `250ms` or `1h30m`; the error explains what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. `5s`".to_owned());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` has no unit; write e.g. `{text}s` or `{text}ms`"));
    }
    let mut millis: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (amount, after) = split_number(rest).ok_or_else(|| invalid(text))?;
        let (unit_millis, after) = split_unit(after).ok_or_else(|| invalid(text))?;
        millis = amount
            .checked_mul(unit_millis)
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        rest = after;
    }
    Ok(Duration::from_millis(millis))
}

/// Writes `duration` the way it would be configured (`1h30m`, `250ms`, `0s`), to the millisecond.
pub(super) fn format_duration(duration: Duration) -> String {
    let mut millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for &(unit, unit_millis) in UNITS.iter().rev() {
        if millis >= unit_millis {
            text.push_str(&format!("{}{unit}", millis / unit_millis));
            millis %= unit_millis;
        }
    }
    text
}

fn invalid(text: &str) -> String {
    format!(
        "`{text}` is not a duration; write a whole number with a unit: ms, s, m, h or d (e.g. `250ms`, `5s`, `1h30m`)"
    )
}

/// Splits leading ASCII digits off `text` as a number.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let amount = text[..end].parse().ok()?;
    Some((amount, &text[end..]))
}

/// Splits a unit off `text`; `ms` is tried before `m` so `250ms` is not read as minutes.
fn split_unit(text: &str) -> Option<(u64, &str)> {
    UNITS.iter().find_map(|&(unit, millis)| {
        let rest = text.strip_prefix(unit)?;
        // The unit must end here or be followed by the next number.
        let boundary = rest.chars().next().is_none_or(|c| c.is_ascii_digit());
        boundary.then_some((millis, rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_durations() {
        let table: &[(&str, Duration)] = &[
            ("5s", Duration::from_secs(5)),
            ("250ms", Duration::from_millis(250)),
            ("2m", Duration::from_secs(120)),
            ("30m", Duration::from_secs(1800)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("0s", Duration::ZERO),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s", Duration::from_secs(90)),
            ("1s500ms", Duration::from_millis(1500)),
            (" 120s ", Duration::from_secs(120)),
        ];
        for (text, expected) in table {
            assert_eq!(parse_duration(text).as_ref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        let table = [("0s", 0), ("250ms", 250), ("5s", 5_000), ("1h30m", 5_400_000), ("1d1s500ms", 86_401_500)];
        for (text, millis) in table {
            let duration = Duration::from_millis(millis);
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
    }

    #[test]
    fn refused_durations() {
        let table = [
            "",
            "5",
            "5000",
            "s",
            "5 s",
            "5sec",
            "1.5s",
            "-5s",
            "5S",
            "5x",
            "ms5",
            "5s5",
            "99999999999999999999d",
            "18446744073709551615d",
        ];
        for text in table {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn bare_number_message_suggests_a_unit() {
        let message = parse_duration("5000").expect_err("no unit");
        assert!(message.contains("no unit") && message.contains("5000s"), "{message}");
    }
}
