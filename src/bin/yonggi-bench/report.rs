//! What one run measured, and the side-by-side table.
//!
//! A run writes its rows as JSON (`run --out`); `table` joins the files of
//! several runs (one per runtime) into one markdown table. A value is a
//! measurement, or says why there is none: the runtime does not implement
//! an RPC yet, or the step failed. Nothing is ever filled in.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    Millis,
    Seconds,
    MiB,
    Count,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Num(f64),
    /// Not measured because an RPC it needs is not implemented.
    Unimplemented(String),
    /// Not measured because a step failed (the run exits non-zero).
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Stable identity, to join runs.
    pub key: String,
    pub label: String,
    pub unit: Unit,
    pub value: Value,
}

/// One runtime's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub runtime: String,
    pub version: String,
    pub rows: Vec<Row>,
}

impl Run {
    pub fn new(runtime: &str) -> Run {
        Run {
            runtime: runtime.into(),
            version: String::new(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, key: &str, label: &str, unit: Unit, value: Value) {
        self.rows.push(Row {
            key: key.into(),
            label: label.into(),
            unit,
            value,
        });
    }

    pub fn failed(&self) -> bool {
        self.rows
            .iter()
            .any(|r| matches!(r.value, Value::Failed(_)))
    }
}

/// A measured value with its unit, e.g. `12.3 ms`, `1.50 s`, `14.2 MiB`.
pub fn format_value(value: &Value, unit: Unit) -> String {
    match value {
        Value::Num(n) => match unit {
            Unit::Millis if *n < 10.0 => format!("{n:.2} ms"),
            Unit::Millis => format!("{n:.1} ms"),
            Unit::Seconds => format!("{n:.2} s"),
            Unit::MiB => format!("{n:.1} MiB"),
            Unit::Count => format!("{n:.0}"),
        },
        Value::Unimplemented(rpc) => format!("n/a (UNIMPLEMENTED: {rpc})"),
        Value::Failed(why) => format!("failed: {why}"),
    }
}

/// `a / b` as `0.20×`, when both are measured and `b` is not zero.
pub fn format_ratio(a: &Value, b: &Value) -> String {
    match (a, b) {
        (Value::Num(a), Value::Num(b)) if *b != 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// The markdown table of `runs` side by side: one row per key, in the order
/// the keys first appear; with exactly two runs a last column `ratio` =
/// first / second (below 1: the first is smaller — faster or leaner).
pub fn table(runs: &[Run]) -> String {
    let mut keys: Vec<(&str, &str, Unit)> = Vec::new();
    for run in runs {
        for row in &run.rows {
            if !keys.iter().any(|(k, _, _)| *k == row.key) {
                keys.push((&row.key, &row.label, row.unit));
            }
        }
    }
    let ratio = runs.len() == 2;
    let mut out = String::from("| operation |");
    for run in runs {
        let _ = write!(out, " {} |", escape(&run.runtime));
    }
    if ratio {
        out.push_str(" ratio |");
    }
    out.push_str("\n|---|");
    for _ in runs {
        out.push_str("---:|");
    }
    if ratio {
        out.push_str("---:|");
    }
    out.push('\n');
    let missing = Value::Failed("not run".into());
    for (key, label, unit) in keys {
        let values: Vec<&Value> = runs
            .iter()
            .map(|run| {
                run.rows
                    .iter()
                    .find(|r| r.key == key)
                    .map_or(&missing, |r| &r.value)
            })
            .collect();
        let _ = write!(out, "| {} |", escape(label));
        for value in &values {
            let _ = write!(out, " {} |", escape(&format_value(value, unit)));
        }
        if ratio {
            let _ = write!(out, " {} |", format_ratio(values[0], values[1]));
        }
        out.push('\n');
    }
    out
}

/// A pipe inside a cell would end it.
fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, rows: &[(&str, Unit, Value)]) -> Run {
        let mut run = Run::new(name);
        for (key, unit, value) in rows {
            run.push(key, &format!("{key} label"), *unit, value.clone());
        }
        run
    }

    #[test]
    fn values_carry_their_unit_and_reason() {
        assert_eq!(format_value(&Value::Num(2.345), Unit::Millis), "2.35 ms");
        assert_eq!(format_value(&Value::Num(80.04), Unit::Millis), "80.0 ms");
        assert_eq!(format_value(&Value::Num(1.5), Unit::Seconds), "1.50 s");
        assert_eq!(format_value(&Value::Num(14.25), Unit::MiB), "14.2 MiB");
        assert_eq!(format_value(&Value::Num(100.0), Unit::Count), "100");
        assert_eq!(
            format_value(
                &Value::Unimplemented("CreateContainer".into()),
                Unit::Millis
            ),
            "n/a (UNIMPLEMENTED: CreateContainer)"
        );
        assert_eq!(
            format_value(&Value::Failed("timed out".into()), Unit::Seconds),
            "failed: timed out"
        );
    }

    #[test]
    fn ratio_only_between_two_measurements() {
        assert_eq!(format_ratio(&Value::Num(10.0), &Value::Num(50.0)), "0.20×");
        assert_eq!(format_ratio(&Value::Num(3.0), &Value::Num(0.0)), "–");
        assert_eq!(
            format_ratio(&Value::Unimplemented("X".into()), &Value::Num(1.0)),
            "–"
        );
    }

    #[test]
    fn two_runs_make_one_table_with_a_ratio() {
        let yonggi = run(
            "yonggi",
            &[
                ("pull", Unit::Seconds, Value::Num(1.0)),
                (
                    "create",
                    Unit::Millis,
                    Value::Unimplemented("CreateContainer".into()),
                ),
            ],
        );
        let containerd = run(
            "containerd",
            &[
                ("pull", Unit::Seconds, Value::Num(4.0)),
                ("create", Unit::Millis, Value::Num(20.0)),
                ("shims", Unit::Count, Value::Num(100.0)),
            ],
        );
        let text = table(&[yonggi, containerd]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "| operation | yonggi | containerd | ratio |");
        assert_eq!(lines[1], "|---|---:|---:|---:|");
        assert_eq!(lines[2], "| pull label | 1.00 s | 4.00 s | 0.25× |");
        assert_eq!(
            lines[3],
            "| create label | n/a (UNIMPLEMENTED: CreateContainer) | 20.0 ms | – |"
        );
        // A key only the second run has still gets its row.
        assert_eq!(lines[4], "| shims label | failed: not run | 100 | – |");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn one_run_has_no_ratio_and_pipes_are_escaped() {
        let mut one = Run::new("yonggi");
        one.push("x", "a | b", Unit::Count, Value::Failed("x|y".into()));
        let text = table(&[one]);
        assert_eq!(
            text,
            "| operation | yonggi |\n|---|---:|\n| a \\| b | failed: x\\|y |\n"
        );
    }

    #[test]
    fn a_failed_row_fails_the_run_and_survives_json() {
        let ok = run("a", &[("x", Unit::Millis, Value::Num(1.0))]);
        assert!(!ok.failed());
        let bad = run(
            "b",
            &[
                ("x", Unit::Millis, Value::Unimplemented("X".into())),
                ("y", Unit::Millis, Value::Failed("boom".into())),
            ],
        );
        assert!(bad.failed());
        let json = serde_json::to_string(&bad).expect("serialize");
        let back: Run = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, bad);
    }
}
