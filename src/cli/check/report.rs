//! Results of `check`, one row per container (and platform), as a table, JSON or GitHub
//! workflow annotations.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::input::InputError;
use super::subject::Subject;
use crate::decision::{problems_of, ContainerFinding};
use crate::report::{Finding, ImageReport, Outcome};

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub file: String,
    pub document: usize,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub container: String,
    pub image: String,
    pub platform: Option<String>,
    pub outcome: &'static str,
    pub missing: Vec<String>,
    pub message: String,
    /// Fails the run (exit 1): a pull-through repository not yet filled does not.
    #[serde(skip)]
    pub blocking: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub containers: usize,
    pub images: usize,
    pub outcomes: BTreeMap<&'static str, usize>,
    pub input_errors: usize,
    pub exit_code: u8,
}

impl Summary {
    pub fn of(rows: &[Row], errors: &[InputError]) -> Self {
        let mut outcomes = BTreeMap::new();
        for row in rows {
            *outcomes.entry(row.outcome).or_insert(0) += 1;
        }
        let mut images: Vec<&str> = rows.iter().map(|r| r.image.as_str()).collect();
        images.sort_unstable();
        images.dedup();
        let exit_code = if !errors.is_empty() {
            EXIT_INPUT
        } else if rows.iter().any(|r| r.blocking) {
            EXIT_BROKEN
        } else if rows.iter().any(|r| r.outcome == Outcome::Unknown.as_str()) {
            EXIT_UNKNOWN
        } else {
            0
        };
        Summary {
            containers: rows.len(),
            images: images.len(),
            outcomes,
            input_errors: errors.len(),
            exit_code,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    fn line(&self) -> String {
        let counts: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        let mut line = format!(
            "{} images in {} containers: {}",
            self.images,
            self.containers,
            if counts.is_empty() {
                "none".into()
            } else {
                counts.join(", ")
            }
        );
        if self.input_errors > 0 {
            let _ = write!(line, "; {} input errors", self.input_errors);
        }
        line
    }
}

/// Exit codes, the first that applies.
pub const EXIT_INPUT: u8 = 2;
pub const EXIT_BROKEN: u8 = 1;
pub const EXIT_UNKNOWN: u8 = 3;

/// One row per container, or per checked platform for a multi-arch image.
pub fn rows(subjects: &[Subject], reports: &[ImageReport]) -> Vec<Row> {
    let mut out = Vec::new();
    for s in subjects {
        let Some(report) = reports.iter().find(|r| r.image == s.image) else {
            continue;
        };
        let parts: Vec<(Option<String>, ImageReport, Vec<String>)> = match &report.finding {
            Finding::Checked(platforms) if !platforms.is_empty() => platforms
                .iter()
                .map(|p| {
                    let mut missing = p.missing.clone();
                    missing.extend(p.manifest_missing.iter().cloned());
                    let single = ImageReport {
                        finding: Finding::Checked(vec![p.clone()]),
                        ..report.clone()
                    };
                    (
                        p.platform.as_ref().map(ToString::to_string),
                        single,
                        missing,
                    )
                })
                .collect(),
            _ => vec![(None, report.clone(), Vec::new())],
        };
        for (platform, part, missing) in parts {
            let finding = ContainerFinding {
                container: &s.container,
                kind: s.container_kind,
                report: &part,
            };
            let problems = problems_of(&finding);
            let outcome = part.outcome();
            let blocking = problems
                .iter()
                .any(|p| p.severity == crate::decision::Severity::Broken);
            out.push(Row {
                file: s.file.clone(),
                document: s.document,
                kind: s.kind.clone(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                container: s.container.clone(),
                image: s.image.clone(),
                platform,
                outcome: outcome.as_str(),
                missing,
                message: problems
                    .iter()
                    .map(|p| p.line.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                blocking,
            });
        }
    }
    out
}

fn object(row: &Row) -> String {
    match &row.namespace {
        Some(ns) => format!("{}/{}/{}", row.kind, ns, row.name),
        None => format!("{}/{}", row.kind, row.name),
    }
}

pub fn table(rows: &[Row], errors: &[InputError], summary: &Summary) -> String {
    let header = ["OBJECT", "CONTAINER", "IMAGE", "PLATFORM", "RESULT"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                object(r),
                r.container.clone(),
                r.image.clone(),
                r.platform.clone().unwrap_or_else(|| "-".into()),
                r.outcome.to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: [&str; 5]| {
        let mut l = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &cells {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    let problems: Vec<&Row> = rows.iter().filter(|r| !r.message.is_empty()).collect();
    if !problems.is_empty() {
        out.push_str("\nproblems:\n");
        for r in problems {
            let _ = writeln!(
                out,
                "  {}#{} {}: {}",
                r.file,
                r.document,
                object(r),
                r.message
            );
        }
    }
    if !errors.is_empty() {
        out.push_str("\ninput errors:\n");
        for e in errors {
            let _ = writeln!(out, "  {}: {}", location(e), e.message);
        }
    }
    let _ = writeln!(out, "\n{}", summary.line());
    out
}

fn location(e: &InputError) -> String {
    match e.document {
        Some(d) => format!("{}#{d}", e.file),
        None => e.file.clone(),
    }
}

pub fn json(rows: &[Row], errors: &[InputError], summary: &Summary) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Out<'a> {
        results: &'a [Row],
        errors: &'a [InputError],
        summary: &'a Summary,
    }
    let mut text = serde_json::to_string_pretty(&Out {
        results: rows,
        errors,
        summary,
    })?;
    text.push('\n');
    Ok(text)
}

/// GitHub Actions workflow commands: an error per broken image and unreadable document,
/// a warning per image ECR could not answer for.
pub fn github(rows: &[Row], errors: &[InputError], summary: &Summary) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| !r.message.is_empty()) {
        let level = if r.blocking { "error" } else { "warning" };
        let title = format!("ecr-preflight: {} ({})", r.outcome, object(r));
        let _ = writeln!(
            out,
            "::{level} file={},title={}::{}",
            escape_property(&r.file),
            escape_property(&title),
            escape_data(&r.message)
        );
    }
    for e in errors {
        let _ = writeln!(
            out,
            "::error file={},title=ecr-preflight: input error::{}",
            escape_property(&e.file),
            escape_data(&format!("{}: {}", location(e), e.message))
        );
    }
    let _ = writeln!(out, "{}", summary.line());
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
