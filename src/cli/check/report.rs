//! Results of `check`, one row per container (and platform), as a table, JSON or GitHub
//! workflow annotations.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::input::InputError;
use super::subject::Subject;
use crate::decision::{problems_of, ContainerFinding};
use crate::findings::{Finding, ImageReport, Outcome};
use crate::image::RepositoryKey;
use crate::lifecycle::expiry::{self, Expiry, ExpiryError, ExpiryRule};

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
    /// With --lifecycle: when a lifecycle rule will first act on the image (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `expire` or `archive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_rule: Option<ExpiryRule>,
    /// The rule acts within --expiry-warning: reported.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expiring: bool,
    /// What will happen, when, by which rule; empty unless `expiring`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub expiry_message: String,
}

/// The rows and what `--lifecycle` added to them.
pub struct Rows<'a> {
    pub rows: &'a [Row],
    pub lifecycle: bool,
    pub lifecycle_errors: &'a [LifecycleError],
}

/// A repository whose lifecycle policy or images could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleError {
    pub repository: String,
    pub message: String,
}

pub fn lifecycle_errors(errors: Vec<(RepositoryKey, ExpiryError)>) -> Vec<LifecycleError> {
    errors
        .into_iter()
        .map(|(repo, e)| LifecycleError {
            repository: repo.to_string(),
            message: e.to_string(),
        })
        .collect()
}

/// Adds each image's forecast to its rows; those within `warning` are reported.
pub fn add_expiry(
    rows: &mut [Row],
    forecasts: &[(String, Option<Expiry>)],
    warning: std::time::Duration,
) {
    let now = expiry::now();
    for row in rows {
        let Some((_, Some(e))) = forecasts.iter().find(|(image, _)| *image == row.image) else {
            continue;
        };
        row.expires_at = Some(expiry::rfc3339(e.forecast.at));
        row.expiry_action = Some(e.forecast.action.as_str());
        row.expiry_rule = Some(ExpiryRule::of(e));
        row.expiring = e.within(now, warning);
        if row.expiring {
            row.expiry_message = format!(
                "container {}: {} will be {}; to keep it, re-tag it with a tag the rule does not select, pin it by digest to an image the policy keeps, or change the rule",
                row.container,
                row.image,
                e.sentence()
            );
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub containers: usize,
    pub images: usize,
    pub outcomes: BTreeMap<&'static str, usize>,
    pub input_errors: usize,
    /// Containers whose image a lifecycle rule will act on within --expiry-warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiring: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_errors: Option<usize>,
    pub exit_code: u8,
}

impl Summary {
    /// `lifecycle_errors` and the expiring rows count with --lifecycle only; expiring rows
    /// fail the run with `fail_on_expiry`, and a repository whose policy could not be read
    /// is as an image ECR could not answer for.
    pub fn of(
        rows: &[Row],
        errors: &[InputError],
        lifecycle_errors: &[LifecycleError],
        fail_on_expiry: bool,
    ) -> Self {
        let mut outcomes = BTreeMap::new();
        for row in rows {
            *outcomes.entry(row.outcome).or_insert(0) += 1;
        }
        let mut images: Vec<&str> = rows.iter().map(|r| r.image.as_str()).collect();
        images.sort_unstable();
        images.dedup();
        let exit_code = if !errors.is_empty() {
            EXIT_INPUT
        } else if rows
            .iter()
            .any(|r| r.blocking || (fail_on_expiry && r.expiring))
        {
            EXIT_BROKEN
        } else if rows.iter().any(|r| r.outcome == Outcome::Unknown.as_str())
            || !lifecycle_errors.is_empty()
        {
            EXIT_UNKNOWN
        } else {
            0
        };
        Summary {
            containers: rows.len(),
            images: images.len(),
            outcomes,
            input_errors: errors.len(),
            expiring: None,
            lifecycle_errors: None,
            exit_code,
        }
    }

    /// Counts what --lifecycle found.
    pub fn with_lifecycle(mut self, rows: &[Row], errors: &[LifecycleError]) -> Self {
        let mut expiring: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r.expiring)
            .map(|r| (r.image.as_str(), r.container.as_str()))
            .collect();
        expiring.sort_unstable();
        expiring.dedup();
        self.expiring = Some(expiring.len());
        self.lifecycle_errors = Some(errors.len());
        self
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
        if let Some(n) = self.expiring {
            let _ = write!(line, "; {n} expiring within the warning");
        }
        if let Some(n) = self.lifecycle_errors.filter(|n| *n > 0) {
            let _ = write!(line, "; {n} lifecycle policies unread");
        }
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
                expires_at: None,
                expiry_action: None,
                expiry_rule: None,
                expiring: false,
                expiry_message: String::new(),
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

pub fn table(rows: &Rows, errors: &[InputError], summary: &Summary) -> String {
    let mut header = vec!["OBJECT", "CONTAINER", "IMAGE", "PLATFORM", "RESULT"];
    if rows.lifecycle {
        header.push("EXPIRES");
    }
    let cells: Vec<Vec<String>> = rows
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                object(r),
                r.container.clone(),
                r.image.clone(),
                r.platform.clone().unwrap_or_else(|| "-".into()),
                r.outcome.to_owned(),
            ];
            if rows.lifecycle {
                cells.push(expires_cell(r));
            }
            cells
        })
        .collect();
    let mut out = aligned(&header, &cells);
    section(&mut out, "problems", rows.rows, |r| &r.message);
    section(&mut out, "expiring", rows.rows, |r| &r.expiry_message);
    if !rows.lifecycle_errors.is_empty() {
        out.push_str("\nlifecycle policies not read:\n");
        for e in rows.lifecycle_errors {
            let _ = writeln!(out, "  {}: {}", e.repository, e.message);
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

/// A titled list of the rows whose `text` is not empty, with their file and object.
fn section(out: &mut String, title: &str, rows: &[Row], text: impl Fn(&Row) -> &String) {
    let mut lines = rows.iter().filter(|r| !text(r).is_empty()).peekable();
    if lines.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for r in lines {
        let _ = writeln!(
            out,
            "  {}#{} {}: {}",
            r.file,
            r.document,
            object(r),
            text(r)
        );
    }
}

/// "2026-12-03T10:00:00Z expire (rule 2)", or "-".
fn expires_cell(r: &Row) -> String {
    match (&r.expires_at, r.expiry_action, &r.expiry_rule) {
        (Some(at), Some(action), Some(rule)) => {
            format!("{at} {action} (rule {})", rule.priority)
        }
        _ => "-".into(),
    }
}

/// Columns padded to their widest cell, the last left ragged.
fn aligned(header: &[&str], cells: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for cols in std::iter::once(&header).chain(cells) {
        let mut l = String::new();
        for (c, w) in cols.iter().zip(&widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

fn location(e: &InputError) -> String {
    match e.document {
        Some(d) => format!("{}#{d}", e.file),
        None => e.file.clone(),
    }
}

pub fn json(rows: &Rows, errors: &[InputError], summary: &Summary) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Out<'a> {
        results: &'a [Row],
        errors: &'a [InputError],
        #[serde(skip_serializing_if = "Option::is_none")]
        lifecycle_errors: Option<&'a [LifecycleError]>,
        summary: &'a Summary,
    }
    let mut text = serde_json::to_string_pretty(&Out {
        results: rows.rows,
        errors,
        lifecycle_errors: rows.lifecycle.then_some(rows.lifecycle_errors),
        summary,
    })?;
    text.push('\n');
    Ok(text)
}

/// GitHub Actions workflow commands: an error per broken image and unreadable document,
/// a warning per image ECR could not answer for, per image a rule will act on within the
/// warning (an error with --fail-on-expiry), per lifecycle policy not read.
pub fn github(
    rows: &Rows,
    errors: &[InputError],
    summary: &Summary,
    fail_on_expiry: bool,
) -> String {
    let mut out = String::new();
    for r in rows.rows.iter().filter(|r| r.expiring) {
        let level = if fail_on_expiry { "error" } else { "warning" };
        let action = r.expiry_action.unwrap_or("expire");
        let title = format!("ecr-preflight: {action} due ({})", object(r));
        let _ = writeln!(
            out,
            "::{level} file={},title={}::{}",
            escape_property(&r.file),
            escape_property(&title),
            escape_data(&r.expiry_message)
        );
    }
    for e in rows.lifecycle_errors {
        let _ = writeln!(
            out,
            "::warning title=ecr-preflight: lifecycle policy not read::{}",
            escape_data(&format!("{}: {}", e.repository, e.message))
        );
    }
    for r in rows.rows.iter().filter(|r| !r.message.is_empty()) {
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
