//! The page every dashboard is built on: one embedded copy of plotly.js, a
//! Content-Security-Policy that forbids every network request, a recorder of JavaScript
//! errors and CSP violations that tests read back from the DOM, and the escaping of
//! everything that comes from captures and inputs.
//!
//! Text from a capture or a session file (file names, interface names, free-text details)
//! reaches a page in three places, each with its own escaping:
//! - HTML text and attributes: [`escape_html`];
//! - strings inside a plot (hover text, tick labels): plotly.js reads them as pseudo-HTML
//!   (`<b>`, `<a href>`, entities), so [`escape_plot_text`] turns `&`, `<`, `>` into the
//!   entities plotly decodes back into plain characters;
//! - JSON inside a `<script>`: [`script_json`] writes `<`, `>`, `&`, U+2028 and U+2029 as
//!   `\uXXXX`, so no string can close the script element or break the JavaScript parser.

use std::fmt::Write as _;
use std::sync::OnceLock;

use plotly::Plot;
use serde::Serialize;

/// Forbids every network request (fetch, images, fonts, frames, forms): the pages are
/// self-contained, and a crafted input must not be able to make them call out.
/// Inline scripts and styles are what the pages are made of; `data:`/`blob:` images are
/// what plotly's "download as PNG" uses.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'";

/// Id of the hidden element holding recorded JavaScript errors and CSP violations, one per
/// line (empty when the page rendered cleanly).
pub const ERRORS_ELEMENT_ID: &str = "tcpviz-errors";
/// Id of the hidden element whose `data-rendered` attribute counts the plots drawn, and
/// whose text says how long the drawing took.
pub const STATUS_ELEMENT_ID: &str = "tcpviz-status";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a string plotly.js draws (hover text, labels): its pseudo-HTML tags
/// become literal text. plotly decodes `&amp;`, `&lt;` and `&gt;` back.
pub fn escape_plot_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Serialises `value` as JSON that is safe inside a `<script>` element.
pub fn script_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    Ok(escape_json_for_script(&serde_json::to_string(value)?))
}

/// Outside strings JSON has none of these characters, so escaping them everywhere keeps
/// the JSON valid and equal in meaning.
pub fn escape_json_for_script(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 64);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis when cut: keeps hover text and
/// table cells (and so the page size) bounded whatever a file name or detail holds.
pub fn truncate_chars(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// plotly.js alone, out of the plotly crate's embedded scripts (which also carry MathJax,
/// 2 MB the pages do not need). Falls back to all of them if their layout ever changes.
pub fn plotly_js() -> &'static str {
    static JS: OnceLock<String> = OnceLock::new();
    JS.get_or_init(|| {
        let all = Plot::offline_js_sources();
        let bodies = script_bodies(&all);
        match bodies.iter().find(|js| js.contains("plotly.js v")) {
            Some(js) => js.to_string(),
            None => {
                tracing::warn!("unexpected layout of the plotly crate's scripts: embedding all of them");
                bodies.join(";\n")
            }
        }
    })
}

/// The contents of the `<script>` elements of an HTML fragment.
fn script_bodies(html: &str) -> Vec<&str> {
    let mut bodies = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find("<script") {
        let Some(gt) = rest[open..].find('>') else { break };
        let body = &rest[open + gt + 1..];
        let Some(end) = body.find("</script>") else { break };
        bodies.push(&body[..end]);
        rest = &body[end + "</script>".len()..];
    }
    bodies
}

/// Which dashboard a page is (for the navigation bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Report,
    Timeline,
    Summary,
}

impl PageKind {
    pub fn file_name(self) -> &'static str {
        match self {
            PageKind::Report => super::REPORT_FILE,
            PageKind::Timeline => super::TIMELINE_FILE,
            PageKind::Summary => super::SUMMARY_PAGE_FILE,
        }
    }

    fn nav_label(self) -> &'static str {
        match self {
            PageKind::Report => "Report",
            PageKind::Timeline => "Timeline",
            PageKind::Summary => "Flows",
        }
    }
}

/// A page being assembled. Everything pushed with `push_html` must already be escaped;
/// the helpers that take text escape it themselves.
pub struct Page {
    kind: PageKind,
    title: String,
    subtitle: String,
    body: String,
    plots: usize,
}

impl Page {
    /// `title` and `subtitle` are plain text (escaped here).
    pub fn new(kind: PageKind, title: &str, subtitle: &str) -> Page {
        Page { kind, title: title.to_string(), subtitle: subtitle.to_string(), body: String::new(), plots: 0 }
    }

    pub fn push_html(&mut self, html: &str) {
        self.body.push_str(html);
    }

    pub fn heading(&mut self, level: u8, id: &str, text: &str) {
        let _ = writeln!(self.body, "<h{level} id=\"{}\">{}</h{level}>", escape_html(id), escape_html(text));
    }

    /// A paragraph of plain text.
    pub fn paragraph(&mut self, class: &str, text: &str) {
        let _ = writeln!(self.body, "<p class=\"{}\">{}</p>", escape_html(class), escape_html(text));
    }

    /// A plot in a `div` with id `div_id` ([a-z0-9-] only: ids are made by the report,
    /// never taken from input).
    pub fn plot(&mut self, div_id: &str, plot: &Plot) {
        debug_assert!(div_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{div_id}");
        let id = escape_html(div_id);
        let figure = escape_json_for_script(&plot.to_json());
        let _ = write!(
            self.body,
            "<div class=\"plot\" id=\"{id}\"></div>\n<script>tcpvizPlot(\"{id}\", {figure});</script>\n"
        );
        self.plots += 1;
    }

    /// The finished HTML document.
    pub fn finish(self) -> String {
        let js = plotly_js();
        let mut html = String::with_capacity(js.len() + self.body.len() + 16 * 1024);
        let _ = write!(
            html,
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"generator\" content=\"tcpviz {version}\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n<script>{RECORDER}</script>\n",
            csp = CONTENT_SECURITY_POLICY,
            version = env!("CARGO_PKG_VERSION"),
            title = escape_html(&self.title),
        );
        // plotly.js once per page; every plot on the page uses it.
        html.push_str("<script>");
        html.push_str(js);
        html.push_str("</script>\n</head>\n<body>\n");
        let _ = write!(
            html,
            "<pre id=\"{ERRORS_ELEMENT_ID}\" hidden></pre>\n\
             <div id=\"{STATUS_ELEMENT_ID}\" hidden data-expected=\"{plots}\" data-rendered=\"0\"></div>\n<nav>",
            plots = self.plots
        );
        for kind in [PageKind::Report, PageKind::Timeline, PageKind::Summary] {
            if kind == self.kind {
                let _ = write!(html, "<span class=\"current\">{}</span>", kind.nav_label());
            } else {
                let _ = write!(html, "<a href=\"{}\">{}</a>", kind.file_name(), kind.nav_label());
            }
        }
        let _ = write!(
            html,
            "<span class=\"brand\">tcpviz {}</span></nav>\n<header><h1>{}</h1><p class=\"subtitle\">{}</p></header>\n<main>\n",
            env!("CARGO_PKG_VERSION"),
            escape_html(&self.title),
            escape_html(&self.subtitle)
        );
        html.push_str(&self.body);
        html.push_str("</main>\n<script>tcpvizPageDone();</script>\n</body>\n</html>\n");
        html
    }
}

const STYLE: &str = r#"
:root { --fg: #1f2933; --muted: #616e7c; --line: #d9dee4; --bg: #ffffff; --head: #f3f5f7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
nav { display: flex; gap: 18px; align-items: center; padding: 8px 24px; background: #243447; color: #fff; }
nav a { color: #cfe3ff; text-decoration: none; }
nav a:hover { text-decoration: underline; }
nav .current { font-weight: 600; }
nav .brand { margin-left: auto; color: #9fb3c8; font-size: 12px; }
header { padding: 14px 24px 0; }
h1 { font-size: 22px; margin: 0; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-top: 10px; border-top: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.subtitle { color: var(--muted); margin: 4px 0 0; word-break: break-all; }
main { padding: 0 24px 40px; }
.note { color: var(--muted); margin: 6px 0; }
.warn { color: #8a4b00; background: #fff4e0; border-left: 4px solid #f08c00; padding: 6px 10px; margin: 8px 0; }
.plot { width: 100%; min-height: 120px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 220px; }
table.kv table.kv { margin: 0; font-size: 12px; }
table.kv table.kv th { width: auto; font-weight: 500; }
table.flows { font-size: 13px; }
.table-wrap { overflow: auto; max-height: 85vh; max-width: 100%; border: 1px solid var(--line); margin: 6px 0 12px; }
.table-wrap table { margin: 0; }
table.flows th { position: sticky; top: 0; z-index: 1; cursor: pointer; user-select: none; vertical-align: bottom; min-width: 3.5em; }
table.flows th:hover { background: #e4e9ef; }
table.flows th[aria-sort="ascending"]::after { content: " \25B2"; }
table.flows th[aria-sort="descending"]::after { content: " \25BC"; }
table.flows td { white-space: nowrap; }
table.flows td.conn { white-space: normal; overflow-wrap: anywhere; min-width: 25em; }
.sev-INFO { color: #5b7fa6; } .sev-WARNING { color: #b35c00; font-weight: 600; } .sev-CRITICAL { color: #d62728; font-weight: 700; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
"#;

/// Records errors into the hidden `<pre>`, counts rendered plots, and draws each plot.
/// Runs before plotly.js, so errors while loading it are recorded too.
const RECORDER: &str = r#"
(function () {
  var errors = [];
  var started = (window.performance && performance.now) ? performance.now() : 0;
  var expected = -1, rendered = 0, failed = 0, done = false;
  function show() {
    var box = document.getElementById('tcpviz-errors');
    if (box) box.textContent = errors.join('\n');
  }
  function record(text) { errors.push(String(text)); show(); }
  function status() {
    var el = document.getElementById('tcpviz-status');
    if (!el) return;
    el.setAttribute('data-rendered', String(rendered));
    if (expected >= 0 && rendered + failed >= expected && !done) {
      done = true;
      var ms = ((window.performance && performance.now) ? performance.now() : 0) - started;
      el.setAttribute('data-render-ms', String(Math.round(ms)));
      el.textContent = 'rendered ' + rendered + ' of ' + expected + ' plots in ' + Math.round(ms) + ' ms';
    }
  }
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && t.nodeType === 1) {
      record('resource failed: <' + t.nodeName.toLowerCase() + '> ' + (t.src || t.href || ''));
    } else {
      record('error: ' + e.message + ' (' + e.filename + ':' + e.lineno + ':' + e.colno + ')');
    }
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    var r = e.reason;
    record('unhandled rejection: ' + (r && r.stack ? r.stack : r));
  });
  document.addEventListener('securitypolicyviolation', function (e) {
    record('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || '(inline)') +
      (e.sourceFile ? ' from ' + e.sourceFile + ':' + e.lineNumber : ''));
  });
  document.addEventListener('DOMContentLoaded', show);
  window.tcpvizRecordError = record;
  window.tcpvizPlot = function (id, figure) {
    try {
      if (typeof Plotly === 'undefined') throw new Error('plotly.js is not loaded');
      Plotly.newPlot(id, figure).then(function () { rendered++; status(); },
        function (err) { failed++; record('plot ' + id + ': ' + (err && err.stack ? err.stack : err)); status(); });
    } catch (err) {
      failed++;
      record('plot ' + id + ': ' + (err && err.stack ? err.stack : err));
    }
  };
  window.tcpvizPageDone = function () {
    var el = document.getElementById('tcpviz-status');
    expected = el ? Number(el.getAttribute('data-expected')) : 0;
    status();
  };
})();
"#;

/// `1234567` as `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units (as network engineers count throughput).
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Seconds, with a precision that suits their size.
pub fn fmt_seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 120.0 {
        format!("{s:.2} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

pub fn fmt_ms(ms: Option<f64>) -> String {
    match ms {
        Some(v) if v < 10.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.1}"),
        None => "–".to_string(),
    }
}

/// A UTC date and time with microseconds, from epoch seconds.
pub fn fmt_utc(ts_secs: f64) -> String {
    let whole = ts_secs.floor();
    let nanos = ((ts_secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    match chrono::DateTime::from_timestamp(whole as i64, nanos) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string(),
        None => format!("{ts_secs:.6}"),
    }
}

/// A UTC time of day with microseconds.
pub fn fmt_utc_time(ts_secs: f64) -> String {
    let whole = ts_secs.floor();
    let nanos = ((ts_secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    match chrono::DateTime::from_timestamp(whole as i64, nanos) {
        Some(t) => t.format("%H:%M:%S%.6f").to_string(),
        None => format!("{ts_secs:.6}"),
    }
}

/// The span from `first` to `last` (epoch seconds): the second end without its date when
/// both are on the same day.
pub fn fmt_utc_span(first: f64, last: f64) -> String {
    let (a, b) = (fmt_utc(first), fmt_utc(last));
    if a.get(..10) == b.get(..10) { format!("{a} – {}", fmt_utc_time(last)) } else { format!("{a} – {b}") }
}

/// What started the watch of a flow (`FlowSummary::watch_reason`), in words.
pub fn watch_reason_words(reason: Option<&str>) -> String {
    match reason {
        Some("sack_sent") => "an ACK with SACK blocks this host sent".into(),
        Some("zero_window_sent") => "a zero window this host sent".into(),
        Some(tracepoint) => format!("tracepoint {tracepoint}"),
        None => "trouble".into(),
    }
}

/// A plotly date-axis value: milliseconds since the epoch.
pub fn epoch_ms(ts_secs: f64) -> f64 {
    ts_secs * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = "x</script><script>alert(1)</script>.pcap \"q\" 'a' & \u{2028}\u{2029}";

    #[test]
    fn html_escaping_leaves_no_markup() {
        let e = escape_html(NASTY);
        assert!(!e.contains('<') && !e.contains('>') && !e.contains('"') && !e.contains('\''), "{e}");
        assert!(e.starts_with(
            "x&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;.pcap &quot;q&quot; &#39;a&#39; &amp; "
        ));
    }

    #[test]
    fn plot_text_escaping_hides_plotly_pseudo_html() {
        let e = escape_plot_text("<a href=\"javascript:alert(1)\">x</a> &lt; <br>");
        assert_eq!(e, "&lt;a href=\"javascript:alert(1)\"&gt;x&lt;/a&gt; &amp;lt; &lt;br&gt;");
    }

    #[test]
    fn json_in_script_cannot_close_the_script_and_round_trips() {
        let value = serde_json::json!({ "name": NASTY, "n": [1, 2.5] });
        let s = script_json(&value).unwrap();
        for bad in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
            assert!(!s.contains(bad), "{bad:?} in {s}");
        }
        assert!(s.contains("\\u003c/script\\u003e") && s.contains("\\u2028") && s.contains("\\u2029"), "{s}");
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("ééééé", 2), "éé…");
    }

    #[test]
    fn plotly_js_is_embedded_once_and_alone() {
        let js = plotly_js();
        assert!(js.trim_start().starts_with("/**") && js.contains("plotly.js v"), "not plotly.js");
        // plotly.min.js alone is 4.65 MB; with MathJax it would be 6.7 MB.
        assert!(js.len() < 5_000_000, "{} bytes: MathJax is not needed", js.len());
        assert!(!js.contains("</script"));
        let mut page = Page::new(PageKind::Report, NASTY, NASTY);
        page.plot("a", &Plot::new());
        page.plot("b", &Plot::new());
        let html = page.finish();
        assert_eq!(html.matches("plotly.js v").count(), 1);
        assert_eq!(html.matches("tcpvizPlot(\"").count(), 2);
        assert!(!html.contains("<script>alert(1)"));
        assert!(html.contains(CONTENT_SECURITY_POLICY));
        assert!(html.len() < js.len() + 64 * 1024);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(1_000_000), "1,000,000");
        assert_eq!(fmt_count(12_345), "12,345");
        assert_eq!(fmt_bytes(999), "999 B");
        assert_eq!(fmt_bytes(1_500_000), "1.5 MB");
        assert_eq!(fmt_seconds(0.0123), "12.3 ms");
        assert_eq!(fmt_seconds(35_161.8 * 3600.0), "1465.1 days");
        assert_eq!(fmt_utc(1_700_000_000.25), "2023-11-14 22:13:20.250000 UTC");
    }
}
