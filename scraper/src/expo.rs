//! Reading the Prometheus text exposition format.
//!
//! The grammar is the `nom-openmetrics` crate's (MIT, nom 8): it reads metric names with colons,
//! label values with commas, escaped quotes, backslashes and `\n`, Go-style exponents
//! (`1.7556e+09`), `+Inf`, `-Inf` and `NaN`. It is strict where real servers are not, so this
//! module wraps it line by line:
//!
//! - comment lines (`# HELP`, `# TYPE`, any other `#`) are skipped: the vocabularies need no
//!   metadata, so odd HELP text can never cost a sample, and `_created` samples are just samples
//!   of another name that no vocabulary asks for;
//! - only sample lines whose metric name a vocabulary wants reach the parser (a vLLM exposition
//!   is mostly histogram buckets; parsing them 20 times a second per pod would be wasted CPU);
//! - a line the crate rejects as written (a trailing timestamp, several spaces, a CR before the
//!   newline, an infinite value, which the crate also traces to stderr) is normalised and parsed
//!   once more; a line still rejected is counted as malformed and skipped, never fatal.

use nom_openmetrics::parser::family;

/// One sample line: metric name, labels in exposition order, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The samples of one exposition that the caller asked for, and what could not be read.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Wanted sample lines the parser rejected even after normalising.
    pub malformed_lines: usize,
    /// The first rejected line (truncated), for the log.
    pub first_malformed: Option<String>,
    /// Non-comment, non-empty lines seen, wanted or not.
    pub sample_lines: usize,
    /// A sample named in the vocabulary's cold-start namespace was seen (set by
    /// `Vocabulary::parse`; see `vocab`).
    pub namespace_seen: bool,
}

/// How much of a rejected line goes into a log message.
const MAX_LOGGED_LINE_CHARS: usize = 160;

/// Parses `text`, keeping the samples whose metric name satisfies `wanted`.
pub fn parse(text: &str, wanted: impl Fn(&str) -> bool) -> Exposition {
    let mut out = Exposition::default();
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        // `line` keeps its '\n' when it has one: the crate's sample grammar ends in a newline.
        // Slicing at '\n' (ASCII) always lands on a char boundary.
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i + 1);
        let line = &text[start..end];
        start = end;
        let Some(first) = line.bytes().position(|b| b != b' ' && b != b'\t') else { continue };
        let trimmed = &line[first..];
        if matches!(trimmed.as_bytes()[0], b'#' | b'\n' | b'\r') {
            continue;
        }
        out.sample_lines += 1;
        if !wanted(metric_name_of(trimmed)) {
            continue;
        }
        match parse_line(trimmed) {
            Some(sample) => out.samples.push(sample),
            None => {
                out.malformed_lines += 1;
                if out.first_malformed.is_none() {
                    out.first_malformed = Some(trimmed.trim_end().chars().take(MAX_LOGGED_LINE_CHARS).collect());
                }
            }
        }
    }
    out
}

/// The metric name at the start of a sample line (up to `{` or whitespace).
pub fn metric_name_of(line: &str) -> &str {
    match memchr::memchr3(b'{', b' ', b'\t', line.as_bytes()) {
        Some(end) => &line[..end],
        None => line.trim_end(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    // The crate's infinity parser prints to stderr; route such lines through the normalised path.
    let fast = line.ends_with('\n') && !line.ends_with("\r\n") && !value_token_is_infinite(line);
    if fast && let Some(sample) = parse_with_crate(line) {
        return Some(sample);
    }
    let (normalised, infinite) = normalise(line)?;
    let mut sample = parse_with_crate(&normalised)?;
    if let Some(inf) = infinite {
        sample.value = inf;
    }
    Some(sample)
}

fn parse_with_crate(line: &str) -> Option<Sample> {
    let (rest, fam) = family(line).ok()?;
    if !rest.is_empty() || fam.samples.len() != 1 {
        return None;
    }
    let s = &fam.samples[0];
    Some(Sample {
        name: s.name().to_string(),
        labels: s.labels().iter().map(|l| (l.name.to_string(), l.value.clone())).collect(),
        value: s.number(),
    })
}

/// Splits a sample line into `name{labels}` and the tokens after it.
fn split_head(line: &str) -> (&str, &str) {
    let line = line.trim_end();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    if line[name_end..].starts_with('{') {
        // Label values may hold '}' inside quotes; find the closing brace outside quotes.
        let bytes = line.as_bytes();
        let mut in_quotes = false;
        let mut i = name_end + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b'}' if !in_quotes => return (&line[..=i], &line[i + 1..]),
                _ => {}
            }
            i += 1;
        }
        (line, "")
    } else {
        (&line[..name_end], &line[name_end..])
    }
}

/// Whether the line's last token (the value, when there is no timestamp) is an infinity; a
/// line with a timestamp fails the fast path anyway and is normalised.
fn value_token_is_infinite(line: &str) -> bool {
    let last = line.trim_end().rsplit([' ', '\t']).next().unwrap_or("");
    let unsigned = last.strip_prefix(['+', '-']).unwrap_or(last);
    unsigned.len() >= 3 && unsigned.as_bytes()[..3].eq_ignore_ascii_case(b"inf")
}

/// Rewrites a line into the crate's strict form: `head SP value LF`, dropping a timestamp.
/// Returns the rewritten line and the infinite value the crate should not see, if any.
fn normalise(line: &str) -> Option<(String, Option<f64>)> {
    let (head, tail) = split_head(line);
    let mut tokens = tail.split_whitespace();
    let value = tokens.next()?;
    // At most one more token (a timestamp); more is not the text format.
    let _timestamp = tokens.next();
    if tokens.next().is_some() {
        return None;
    }
    let lower = value.to_ascii_lowercase();
    let infinite = match lower.as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    };
    let value = if infinite.is_some() { "0" } else { value };
    Some((format!("{head} {value}\n"), infinite))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Exposition {
        parse(text, |_| true)
    }

    #[test]
    fn reads_names_with_colons_and_sorted_labels() {
        let e = all("vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0\n");
        assert_eq!(e.samples.len(), 1);
        assert_eq!(e.samples[0].name, "vllm:num_requests_waiting");
        assert_eq!(e.samples[0].label("engine"), Some("0"));
        assert_eq!(e.samples[0].value, 3.0);
    }

    #[test]
    fn label_values_keep_commas_escapes_and_braces() {
        let e = all("x{a=\"sql-lora,chat-lora\",b=\"q\\\"uo}te\\\\n\\n\"} 1\n");
        assert_eq!(e.malformed_lines, 0, "{:?}", e.first_malformed);
        assert_eq!(e.samples[0].label("a"), Some("sql-lora,chat-lora"));
        assert_eq!(e.samples[0].label("b"), Some("q\"uo}te\\n\n"));
    }

    #[test]
    fn reads_go_exponents_inf_and_nan() {
        let e = all("a 1.7556101234567e+09\nb +Inf\nc -Inf\nd NaN\ne 1e-3\n");
        let v: Vec<f64> = e.samples.iter().map(|s| s.value).collect();
        assert_eq!(v[0], 1.7556101234567e9);
        assert_eq!(v[1], f64::INFINITY);
        assert_eq!(v[2], f64::NEG_INFINITY);
        assert!(v[3].is_nan());
        assert_eq!(v[4], 0.001);
    }

    #[test]
    fn skips_comments_and_odd_help_text() {
        let text = "# HELP x Odd \\\\ help: 'a' = \"b\"; {c} \\n äö\n# TYPE x gauge\n# free comment\n\nx 2\n";
        let e = all(text);
        assert_eq!(e.samples.len(), 1);
        assert_eq!(e.malformed_lines, 0);
    }

    #[test]
    fn tolerates_timestamps_crlf_extra_spaces_and_missing_final_newline() {
        let e = all("a 1 1700000000000\r\nb{x=\"y\"}   2\nc 3");
        let v: Vec<f64> = e.samples.iter().map(|s| s.value).collect();
        assert_eq!(v, vec![1.0, 2.0, 3.0]);
        assert_eq!(e.malformed_lines, 0);
    }

    #[test]
    fn counts_malformed_lines_without_failing_the_rest() {
        let e = all("good 1\nbad{a=\"unterminated} 2\nworse 1 2 3\n<html><body>502</body></html>\nalso_good 4\n");
        assert_eq!(e.samples.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["good", "also_good"]);
        assert_eq!(e.malformed_lines, 3);
        assert!(e.first_malformed.unwrap().starts_with("bad{"));
    }

    #[test]
    fn only_wanted_names_reach_the_parser() {
        let e = parse("a 1\nb{garbage 2\nc 3\n", |n| n == "a" || n == "c");
        assert_eq!(e.samples.len(), 2);
        assert_eq!(e.malformed_lines, 0);
        assert_eq!(e.sample_lines, 3);
    }
}
