//! The broker's log lines: one line per event, leveled, filtered like `RUST_LOG`
//! (`RUST_LOG=info,odradek::storage=debug`), in logfmt by default or JSON with
//! `ODRADEK_LOG_FORMAT=json` (for log shippers):
//! ```text
//! ts=2026-12-03T11:02:03.123Z level=info shard=0 target=odradek::shard msg="broker ready: ..."
//! {"ts":"2026-12-03T11:02:03.123Z","level":"info","shard":0,"target":"odradek::shard","msg":"..."}
//! ```
//! `shard` is the shard whose executor thread logged (threads are named `shard-N`); lines from
//! other threads (start-up, signals) carry `thread=<name>` instead.
//!
//! Nothing is logged per record. Errors a client can trigger repeatedly go through
//! [`log_limited!`](crate::log_limited), which lets a burst through per call site and shard,
//! then one line per window with the count of what it held back.

use std::cell::Cell;
use std::io::Write;
use std::time::Instant;

/// Installs the logger (once, from `main`).
pub fn init() {
    let json = std::env::var("ODRADEK_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            let ts = buf.timestamp_millis().to_string();
            let thread = std::thread::current();
            let line = format_line(
                json,
                &ts,
                record.level(),
                thread.name().unwrap_or("main"),
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        })
        .init();
}

/// One log line (without the newline).
pub fn format_line(
    json: bool,
    ts: &str,
    level: log::Level,
    thread: &str,
    target: &str,
    msg: &str,
) -> String {
    let level = level.as_str().to_ascii_lowercase();
    let shard = thread
        .strip_prefix("shard-")
        .and_then(|n| n.parse::<u32>().ok());
    if json {
        let mut fields = serde_json::Map::new();
        fields.insert("ts".into(), ts.into());
        fields.insert("level".into(), level.into());
        match shard {
            Some(n) => fields.insert("shard".into(), n.into()),
            None => fields.insert("thread".into(), thread.into()),
        };
        fields.insert("target".into(), target.into());
        fields.insert("msg".into(), msg.into());
        return serde_json::Value::Object(fields).to_string();
    }
    let origin = match shard {
        Some(n) => format!("shard={n}"),
        None => format!("thread={}", logfmt_value(thread)),
    };
    format!(
        "ts={ts} level={level} {origin} target={} msg={}",
        logfmt_value(target),
        logfmt_value(msg)
    )
}

/// A logfmt value: bare when it has no space, quote, `=` or control character, else quoted
/// with `\"`, `\\`, `\n`, `\t` escaped (a message never spans lines).
fn logfmt_value(v: &str) -> String {
    let bare = !v.is_empty()
        && !v
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A per-call-site, per-thread budget for a repeated log line: `burst` lines per `window_ms`,
/// then silence until the window ends; the first line after it reports how many were held
/// back. Cells only: each shard thread has its own (see [`log_limited!`](crate::log_limited)).
pub struct RateLimit {
    burst: u32,
    window_ms: u64,
    window_start_ms: Cell<u64>,
    in_window: Cell<u32>,
    suppressed: Cell<u64>,
}

impl RateLimit {
    pub const fn new(burst: u32, window_ms: u64) -> RateLimit {
        RateLimit {
            burst,
            window_ms,
            window_start_ms: Cell::new(0),
            in_window: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }

    /// `Some(held back since the last line)` if a line may go out at `now_ms`.
    pub fn admit(&self, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(self.window_start_ms.get()) >= self.window_ms {
            self.window_start_ms.set(now_ms);
            self.in_window.set(0);
        }
        if self.in_window.get() >= self.burst {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.in_window.set(self.in_window.get() + 1);
        Some(self.suppressed.replace(0))
    }
}

/// Milliseconds on a process-wide monotonic clock, for [`RateLimit`].
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// `log::log!` with a budget of 10 lines per second per call site and shard; a line after a
/// quiet spell says how many were held back.
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {{
        thread_local! {
            static LIMIT: $crate::logging::RateLimit = $crate::logging::RateLimit::new(10, 1000);
        }
        LIMIT.with(|limit| match limit.admit($crate::logging::monotonic_ms()) {
            None => {}
            Some(0) => log::log!($level, $($arg)+),
            Some(held) => log::log!(
                $level,
                "{} ({held} similar line(s) held back)",
                format_args!($($arg)+)
            ),
        })
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_lines_name_the_shard_and_escape_the_message() {
        let line = format_line(
            false,
            "2026-12-03T11:02:03.123Z",
            log::Level::Warn,
            "shard-3",
            "odradek::server::connection",
            "closing connection from 1.2.3.4: bad \"frame\"\nnext",
        );
        assert_eq!(
            line,
            "ts=2026-12-03T11:02:03.123Z level=warn shard=3 target=odradek::server::connection \
             msg=\"closing connection from 1.2.3.4: bad \\\"frame\\\"\\nnext\""
        );
        let line = format_line(false, "t", log::Level::Info, "signals", "odradek", "ok");
        assert_eq!(line, "ts=t level=info thread=signals target=odradek msg=ok");
    }

    #[test]
    fn json_lines_parse_back() {
        let line = format_line(true, "t", log::Level::Error, "shard-0", "x", "a \"b\"\n");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["shard"], 0);
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "a \"b\"\n");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn rate_limit_lets_a_burst_through_then_reports_what_it_held_back() {
        let limit = RateLimit::new(3, 1000);
        assert_eq!(limit.admit(10_000), Some(0));
        assert_eq!(limit.admit(10_001), Some(0));
        assert_eq!(limit.admit(10_002), Some(0));
        for t in 0..50 {
            assert_eq!(limit.admit(10_003 + t), None);
        }
        // The next window: the first line carries the count.
        assert_eq!(limit.admit(11_000), Some(50));
        assert_eq!(limit.admit(11_001), Some(0));
    }
}
