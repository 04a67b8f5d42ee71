//! Tables whose columns line up under their headers, however long the
//! names in them: each column is as wide as its widest cell.

/// How a column's cells sit in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table being filled, printed at the end.
#[derive(Debug)]
pub struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&'static str, Align)]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as lines, two spaces between columns; the last column is
    /// not padded.
    pub fn lines(&self) -> Vec<String> {
        let widths: Vec<usize> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let headers: Vec<String> = self.headers.iter().map(|(h, _)| h.to_string()).collect();
        std::iter::once(&headers)
            .chain(&self.rows)
            .map(|cells| {
                let last = cells.len() - 1;
                let line: Vec<String> = cells
                    .iter()
                    .enumerate()
                    .map(|(i, cell)| {
                        let width = widths[i];
                        match (self.headers[i].1, i == last) {
                            (Align::Left, true) => cell.clone(),
                            (Align::Left, false) => format!("{cell:<width$}"),
                            (Align::Right, _) => format!("{cell:>width$}"),
                        }
                    })
                    .collect();
                line.join("  ")
            })
            .collect()
    }

    pub fn print(&self) {
        for line in self.lines() {
            println!("{line}");
        }
    }
}

/// A time in milliseconds since the epoch (a JSON number), to the second,
/// for a table cell.
/// A JSON value for a table cell: a string as it is, null as `-`.
/// `12.3 KiB`.
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / KIB),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (KIB * KIB)),
        n => format!("{:.1} GiB", n as f64 / (KIB * KIB * KIB)),
    }
}

pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

pub fn time(ms: &serde_json::Value) -> String {
    let ms = ms.as_i64().unwrap_or(0).max(0) as u64;
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        table.row(vec!["a-rather-long-name/fn".into(), "7".into(), "x".into()]);
        table.row(vec!["b".into(), "1234".into(), "".into()]);
        assert_eq!(
            table.lines(),
            [
                "NAME                      N  NOTE",
                "a-rather-long-name/fn     7  x",
                "b                      1234  ",
            ]
        );
    }
}
