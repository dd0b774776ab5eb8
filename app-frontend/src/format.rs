//! Turning API values into what the pages show: times, counts, safe links.

use reqwest::Url;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time as the pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    /// RFC 3339 (for `<time datetime>` and the countdown script).
    pub iso: String,
    /// `2026-11-28 15:00:00 UTC`.
    pub utc: String,
    /// Relative to now: `in 4m 10s`, `3 days ago`.
    pub relative: String,
}

/// Parses an RFC 3339 timestamp; `None` if absent or malformed.
pub fn when(raw: Option<&str>, now: OffsetDateTime, style: Relative) -> Option<When> {
    when_at(OffsetDateTime::parse(raw?, &Rfc3339).ok(), now, style)
}

/// [`when`] for a timestamp already parsed; `None` if absent.
pub fn when_at(t: Option<OffsetDateTime>, now: OffsetDateTime, style: Relative) -> Option<When> {
    let t = t?.to_offset(time::UtcOffset::UTC);
    Some(When {
        iso: t.format(&Rfc3339).ok()?,
        utc: format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        relative: match style {
            Relative::Countdown => countdown((t - now).whole_seconds()),
            Relative::Ago => ago((now - t).whole_seconds()),
        },
    })
}

/// How [`When::relative`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relative {
    /// A deadline: `in 4m 10s` / `expired 12s ago`.
    Countdown,
    /// A past event: `3 days ago`.
    Ago,
}

/// `in 1h 02m`, `in 4m 10s`, `in 12s`, `expired 3m 04s ago`. The same
/// wording as `static/app.js`, which keeps it ticking.
pub fn countdown(secs: i64) -> String {
    if secs <= 0 {
        return format!("expired {} ago", span(-secs));
    }
    format!("in {}", span(secs))
}

fn span(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h >= 24 {
        format!("{}d {:02}h", h / 24, h % 24)
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `just now`, `5 minutes ago`, `3 days ago`, `2 years ago`.
pub fn ago(secs: i64) -> String {
    let unit = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one} ago")
        } else {
            format!("{n} {one}s ago")
        }
    };
    match secs {
        s if s < 60 => "just now".to_string(),
        s if s < 3600 => unit(s / 60, "minute"),
        s if s < 86_400 => unit(s / 3600, "hour"),
        s if s < 30 * 86_400 => unit(s / 86_400, "day"),
        s if s < 365 * 86_400 => unit(s / (30 * 86_400), "month"),
        s => unit(s / (365 * 86_400), "year"),
    }
}

/// `1,234` (thousands separators).
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `raw` if it is an absolute `http(s)` URL — safe in `href`/`src`
/// (no `javascript:`, `data:` …). Templates escape it as well.
pub fn safe_link(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
    if raw.len() > 2048 {
        return None;
    }
    let u = Url::parse(raw).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn countdown_and_ago_read_naturally() {
        assert_eq!(countdown(12), "in 12s");
        assert_eq!(countdown(250), "in 4m 10s");
        assert_eq!(countdown(3720), "in 1h 02m");
        assert_eq!(countdown(90_000), "in 1d 01h");
        assert_eq!(countdown(0), "expired 0s ago");
        assert_eq!(countdown(-184), "expired 3m 04s ago");
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(7200), "2 hours ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(400 * 86_400), "1 year ago");
    }

    #[test]
    fn when_parses_rfc3339_and_refuses_garbage() {
        let now = datetime!(2026-11-28 14:00:00 UTC);
        let w = when(Some("2026-11-28T15:00:00+01:00"), now, Relative::Countdown).unwrap();
        assert_eq!(w.utc, "2026-11-28 14:00:00 UTC");
        assert_eq!(w.iso, "2026-11-28T14:00:00Z");
        assert_eq!(w.relative, "expired 0s ago");
        let w = when(Some("2026-11-25T14:00:00Z"), now, Relative::Ago).unwrap();
        assert_eq!(w.relative, "3 days ago");
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "<script>"] {
            assert_eq!(when(Some(bad), now, Relative::Ago), None, "{bad}");
        }
        assert_eq!(when(None, now, Relative::Ago), None);
    }

    #[test]
    fn counts_get_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-1234), "-1,234");
    }

    #[test]
    fn only_http_links_survive() {
        assert_eq!(
            safe_link(Some("https://github.com/octocat")).as_deref(),
            Some("https://github.com/octocat")
        );
        for bad in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>",
            "/relative",
            "vbscript:x",
            "",
        ] {
            assert_eq!(safe_link(Some(bad)), None, "{bad}");
        }
    }
}
