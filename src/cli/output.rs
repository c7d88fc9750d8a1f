//! Printing results: aligned tables for people (a bold header on a terminal, plain text in a
//! pipe) and JSON for scripts.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use super::{CliError, OutputFormat};

/// Rows to print, with named columns. The same rows give the table and the JSON (a list of
/// objects keyed by `json_keys`).
pub struct Table {
    pub headers: Vec<&'static str>,
    pub json_keys: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

/// One value: text in a table, typed in JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    Bool(bool),
    /// Printed as "-" in a table, null in JSON.
    Missing,
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Missing => "-".into(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Int(n) => Value::from(*n),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Missing => Value::Null,
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Cell {
        Cell::Int(n)
    }
}

impl From<i32> for Cell {
    fn from(n: i32) -> Cell {
        Cell::Int(n as i64)
    }
}

impl From<bool> for Cell {
    fn from(b: bool) -> Cell {
        Cell::Bool(b)
    }
}

impl From<i16> for Cell {
    fn from(n: i16) -> Cell {
        Cell::Int(n as i64)
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Cell {
        v.map_or(Cell::Missing, Into::into)
    }
}

impl Table {
    /// A table with these column headers; `json_keys` names the same columns in the JSON
    /// objects (empty for tables printed only as text).
    pub fn new(headers: &[&'static str], json_keys: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            json_keys: json_keys.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    /// The rows as a JSON array of objects.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    Value::Object(
                        self.json_keys
                            .iter()
                            .zip(r)
                            .map(|(k, c)| (k.to_string(), c.json()))
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    /// The aligned text, `bold` header or not, each line ending in a newline.
    pub fn render(&self, bold: bool) -> String {
        let texts: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::text).collect())
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &texts {
            for (w, t) in widths.iter_mut().zip(r) {
                *w = (*w).max(t.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let last = cells.len().saturating_sub(1);
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                s.push_str(c);
                if i < last {
                    s.push_str(&" ".repeat(w - c.chars().count() + 2));
                }
            }
            s.push('\n');
            s
        };
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = if bold {
            format!("\x1b[1m{}\x1b[0m\n", line(&header).trim_end_matches('\n'))
        } else {
            line(&header)
        };
        for r in &texts {
            out.push_str(&line(r));
        }
        out
    }

    /// Prints the table or its JSON to stdout.
    pub fn print(&self, format: OutputFormat) -> Result<(), CliError> {
        match format {
            OutputFormat::Json => print_json(&self.to_json()),
            OutputFormat::Table => {
                let stdout = std::io::stdout();
                let bold = stdout.is_terminal();
                write_out(&self.render(bold))
            }
        }
    }
}

/// Prints `v` as one line of JSON.
pub fn print_json(v: &Value) -> Result<(), CliError> {
    write_out(&format!("{v}\n"))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
pub fn write_out(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("writing to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_json_keeps_types() {
        let mut t = Table::new(
            &["TOPIC", "PARTITION", "LAG"],
            &["topic", "partition", "lag"],
        );
        t.push(vec!["orders".into(), 0.into(), Cell::Missing]);
        t.push(vec!["a".into(), 12.into(), 5i64.into()]);
        assert_eq!(
            t.render(false),
            "TOPIC   PARTITION  LAG\norders  0          -\na       12         5\n"
        );
        assert_eq!(
            t.to_json().to_string(),
            r#"[{"lag":null,"partition":0,"topic":"orders"},{"lag":5,"partition":12,"topic":"a"}]"#
        );
        assert!(t.render(true).starts_with("\x1b[1mTOPIC"));
    }
}
