//! The admission decision: a pure function from per-container findings and the mode to
//! allowed / denied / warnings. No I/O here.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::findings::{Finding, ImageReport, NotFound, Outcome, PlatformCheck, PlatformGap};
use crate::image::{ImageId, ImageTarget, RegistryName};
use crate::manifest::Platform;
use crate::workload::ContainerKind;

/// What the webhook does with problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Deny objects with broken images.
    Enforce,
    /// Allow them, with warnings for the client.
    Warn,
    /// Allow them silently; problems reach logs and audit annotations only.
    Audit,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Enforce, Mode::Warn, Mode::Audit];

    /// The mode's name: the one mapping to text, used by `--mode`, `/validate/<mode>`, logs
    /// and audit annotations alike.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode {s:?} (enforce, warn or audit)"))
    }
}

impl clap::ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &Mode::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            Mode::Enforce => "Deny objects with broken images",
            Mode::Warn => "Allow them, with warnings for the client",
            Mode::Audit => "Allow them silently; problems reach logs and audit annotations only",
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}

/// What enforce mode does when ECR cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    Allow,
    Deny,
}

/// One container's image and what was found about it.
#[derive(Debug, Clone)]
pub struct ContainerFinding<'a> {
    pub container: &'a str,
    pub kind: ContainerKind,
    pub report: &'a ImageReport,
}

/// How a problem weighs in the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Missing, archived, not found, no platform, invalid reference.
    Broken,
    /// ECR could not answer.
    Unknown,
    /// Worth a warning but never a denial (pull-through repository not yet filled).
    Advisory,
}

/// One problem, worded twice: full digests for the denial message and logs, short ones
/// for warnings (which the API server wants under 120 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub outcome: Outcome,
    pub line: String,
    pub short: String,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Allowed,
    Warned,
    Denied,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Allowed => "allowed",
            Disposition::Warned => "warned",
            Disposition::Denied => "denied",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub disposition: Disposition,
    /// The denial message (one line per problem), when denied.
    pub message: Option<String>,
    pub warnings: Vec<String>,
    /// Every problem found, whatever the mode: for logs and audit annotations.
    pub problems: Vec<Problem>,
    pub audit_annotations: HashMap<String, String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.disposition != Disposition::Denied
    }
}

/// Most warnings returned; the rest are summarised.
pub const MAX_WARNINGS: usize = 16;
/// The API server truncates warnings over 256 characters.
pub const MAX_WARNING_CHARS: usize = 256;
/// All warnings together stay under this many bytes.
pub const MAX_WARNINGS_BYTES: usize = 4096;
/// Lines in a denial message before the rest are summarised.
pub const MAX_MESSAGE_LINES: usize = 32;
/// Digests named per line before "and N more".
const MAX_DIGESTS_PER_LINE: usize = 5;
const AUDIT_VALUE_BYTES: usize = 4096;

/// Decides on one object from the findings of its containers.
pub fn decide(mode: Mode, on_error: OnError, findings: &[ContainerFinding<'_>]) -> Verdict {
    let problems: Vec<Problem> = findings.iter().flat_map(problems_of).collect();
    let broken = problems.iter().any(|p| p.severity == Severity::Broken);
    let unknown = problems.iter().any(|p| p.severity == Severity::Unknown);
    let deny = mode == Mode::Enforce && (broken || (unknown && on_error == OnError::Deny));
    let disposition = if deny {
        Disposition::Denied
    } else if mode != Mode::Audit && !problems.is_empty() {
        Disposition::Warned
    } else {
        Disposition::Allowed
    };
    let message = deny.then(|| denial_message(&problems));
    let warnings = if disposition == Disposition::Warned {
        bounded_warnings(problems.iter().map(|p| p.short.as_str()))
    } else {
        Vec::new()
    };
    let mut audit_annotations = HashMap::new();
    if !problems.is_empty() {
        // The API server prefixes each key with the webhook's name: `<webhook>/problems`.
        let joined = problems
            .iter()
            .map(|p| p.short.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        audit_annotations.insert("problems".to_owned(), truncate(&joined, AUDIT_VALUE_BYTES));
        audit_annotations.insert("decision".to_owned(), disposition.as_str().to_owned());
        audit_annotations.insert("mode".to_owned(), mode.as_str().to_owned());
    }
    Verdict {
        disposition,
        message,
        warnings,
        problems,
        audit_annotations,
    }
}

fn denial_message(problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems.iter().take(MAX_MESSAGE_LINES) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&p.line);
    }
    if problems.len() > MAX_MESSAGE_LINES {
        let _ = write!(out, "\n… and {} more", problems.len() - MAX_MESSAGE_LINES);
    }
    out
}

/// Keeps each warning under [`MAX_WARNING_CHARS`], at most [`MAX_WARNINGS`] of them and
/// [`MAX_WARNINGS_BYTES`] in all, ending with "… and N more" when some were left out.
pub fn bounded_warnings<'a>(lines: impl ExactSizeIterator<Item = &'a str>) -> Vec<String> {
    const SUMMARY_RESERVE: usize = 32;
    let total = lines.len();
    let mut out: Vec<String> = Vec::new();
    let mut bytes = 0;
    for line in lines {
        let w = truncate(line, MAX_WARNING_CHARS);
        let last_fits = out.len() + 1 == total && bytes + w.len() <= MAX_WARNINGS_BYTES;
        if !last_fits
            && (out.len() + 1 >= MAX_WARNINGS
                || bytes + w.len() + SUMMARY_RESERVE > MAX_WARNINGS_BYTES)
        {
            break;
        }
        bytes += w.len();
        out.push(w);
    }
    if out.len() < total {
        out.push(format!("… and {} more", total - out.len()));
    }
    out
}

/// Cuts `s` to at most `max` characters, ending in "…" when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => {
            format!("{alg}:{}…", hex.chars().take(12).collect::<String>())
        }
        _ => d.to_owned(),
    }
}

fn digest_list(digests: &[String], short: bool) -> String {
    let shown = if short { 2 } else { MAX_DIGESTS_PER_LINE };
    let mut out = digests
        .iter()
        .take(shown)
        .map(|d| if short { short_digest(d) } else { d.clone() })
        .collect::<Vec<_>>()
        .join(", ");
    if digests.len() > shown {
        let _ = write!(out, " and {} more", digests.len() - shown);
    }
    out
}

fn container_label(f: &ContainerFinding<'_>) -> String {
    match f.kind {
        ContainerKind::Container => format!("container {}", f.container),
        ContainerKind::Init => format!("init container {}", f.container),
        ContainerKind::Ephemeral => format!("ephemeral container {}", f.container),
    }
}

/// Words the problems with one container's image, one per line (none when it is fine).
pub fn problems_of(f: &ContainerFinding<'_>) -> Vec<Problem> {
    let outcome = f.report.outcome();
    if matches!(outcome, Outcome::Ok | Outcome::Skipped) {
        return Vec::new();
    }
    let who = container_label(f);
    let image = &f.report.image;
    let held = held_in(f.report);
    let problem = |(severity, line, short): (Severity, String, String)| Problem {
        severity,
        outcome,
        line,
        short,
    };
    let same = |severity, line: String| (severity, line.clone(), line);
    let worded = match &f.report.finding {
        Finding::Skipped => Vec::new(),
        Finding::InvalidReference(e) => vec![same(
            Severity::Broken,
            format!("{who}: invalid image reference {image:?}: {e}"),
        )],
        Finding::NotFound(what) => {
            let text = not_found_line(&who, image, &held, what);
            vec![if f.report.pull_through {
                let l = format!("{text} (pull-through cache repository: filled on first pull)");
                same(Severity::Advisory, l)
            } else {
                same(Severity::Broken, text)
            }]
        }
        Finding::NoPlatform { wanted } => {
            let list = wanted
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            vec![same(
                Severity::Broken,
                format!("{who}: {image}: no manifest for {list}"),
            )]
        }
        Finding::Unknown(reason) => vec![same(
            Severity::Unknown,
            match &f.report.upstream {
                Some(upstream) => format!(
                    "{who}: {image}: not cached in ECR yet, and its pull-through upstream {upstream} could not be asked: {reason}"
                ),
                None => format!("{who}: {held} could not be asked about {image}: {reason}"),
            },
        )],
        Finding::Checked(platforms) => platforms
            .iter()
            .flat_map(|p| platform_problems(&who, image, &held, p))
            .collect(),
    };
    let mut problems: Vec<Problem> = worded.into_iter().map(problem).collect();
    if let Some(why) = &f.report.platform_unknown {
        let line = format!("{who}: the platform of {image} could not be read: {why}");
        problems.push(Problem {
            severity: Severity::Unknown,
            outcome: Outcome::Unknown,
            short: line.clone(),
            line,
        });
    }
    if let Some(gap) = &f.report.gap {
        let line = format!("{who}: {image}: {}", gap_sentence(gap));
        problems.push(Problem {
            severity: Severity::Broken,
            outcome: Outcome::NoPlatform,
            short: line.clone(),
            line,
        });
    }
    problems
}

/// "could be scheduled on linux/arm64 nodes (3 nodes, NodePool general), image has only
/// linux/amd64: publish linux/arm64 or add nodeSelector kubernetes.io/arch: amd64".
fn gap_sentence(gap: &PlatformGap) -> String {
    if let Some(bound) = gap.missing.iter().find_map(|l| l.bound.as_deref()) {
        return bound_sentence(gap, bound);
    }
    let join = |v: Vec<String>, last: &str| match v.split_last() {
        Some((tail, head)) if !head.is_empty() => format!("{} {last} {tail}", head.join(", ")),
        _ => v.concat(),
    };
    let missing: Vec<String> = gap.missing.iter().map(|l| l.platform.to_string()).collect();
    let wheres: Vec<String> = gap
        .missing
        .iter()
        .map(|l| format!("{} nodes ({})", l.platform, l.behind()))
        .collect();
    let has = image_has(gap);
    format!(
        "could be scheduled on {}, image has {has}: publish {} or {}",
        join(wheres, "and"),
        join(missing, "and"),
        keep_to(gap)
    )
}

/// "runs on node ip-10-0-1-5 (linux/arm64), image has only linux/amd64: publish
/// linux/arm64 or use an image that has it": a pod bound to a node cannot be moved by a
/// node selector.
fn bound_sentence(gap: &PlatformGap, node: &str) -> String {
    let platform: Vec<String> = gap.missing.iter().map(|l| l.platform.to_string()).collect();
    let platform = platform.join(", ");
    let has = image_has(gap);
    format!(
        "runs on node {node} ({platform}), image has {has}: publish {platform} or use an image that has it"
    )
}

/// "only linux/amd64, linux/arm64", or "no platform".
fn image_has(gap: &PlatformGap) -> String {
    let has: Vec<String> = gap.available.iter().map(ToString::to_string).collect();
    if has.is_empty() {
        "no platform".to_owned()
    } else {
        format!("only {}", has.join(", "))
    }
}

/// How to keep the pod to the platforms the image has: a node selector on the os or the
/// architecture when the image has one, else a required node affinity listing them.
fn keep_to(gap: &PlatformGap) -> String {
    let distinct = |f: fn(&Platform) -> &str| {
        let mut v: Vec<&str> = gap.available.iter().map(f).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let oses = distinct(|p| &p.os);
    let arches = distinct(|p| &p.architecture);
    let known_os = |l: &&crate::platforms::Landing| oses.contains(&l.platform.os.as_str());
    let os_missing = gap.missing.iter().any(|l| !known_os(&l));
    let arch_missing = gap.missing.iter().any(|l| known_os(&l));
    let mut selector = Vec::new();
    let mut affinity = Vec::new();
    for (missing, key, values) in [
        (os_missing, "kubernetes.io/os", &oses),
        (arch_missing, "kubernetes.io/arch", &arches),
    ] {
        match values.as_slice() {
            _ if !missing => {}
            [one] => selector.push(format!("{key}: {one}")),
            many => affinity.push(format!("{key} In [{}]", many.join(", "))),
        }
    }
    match (selector.is_empty(), affinity.is_empty()) {
        (false, true) => format!("add nodeSelector {}", selector.join(", ")),
        (true, false) => format!("add a required node affinity on {}", affinity.join(" and ")),
        _ => format!(
            "add nodeSelector {} and a required node affinity on {}",
            selector.join(", "),
            affinity.join(" and ")
        ),
    }
}

/// Where the image of `report` was looked for, as messages name it: [`held_by`] its
/// reference, or the pull-through upstream ECR would fill it from.
fn held_in(report: &ImageReport) -> String {
    match &report.upstream {
        Some(upstream) => format!("its pull-through upstream {upstream} (not cached in ECR yet)"),
        None => held_by(&report.image),
    }
}

/// Where `image` is kept, as messages name it: `ECR`, or `registry <host>`.
pub fn held_by(image: &str) -> String {
    match ImageTarget::classify(image) {
        Ok(ImageTarget::Other(reference)) => {
            RegistryName::Distribution(reference.registry).spoken()
        }
        Ok(ImageTarget::Ecr { repo, .. }) => repo.registry.spoken(),
        Err(_) => "ECR".to_owned(),
    }
}

fn not_found_line(who: &str, image: &str, held: &str, what: &NotFound) -> String {
    match what {
        NotFound::Tag(_) => format!("{who}: {image}: tag not found in {held}"),
        NotFound::Digest(_) => format!("{who}: {image}: digest not found in {held}"),
        NotFound::Repository {
            repository,
            registry,
        } => format!("{who}: {image}: repository {repository} not found in registry {registry}"),
    }
}

/// The problems of one checked manifest, each as (severity, line, short line).
fn platform_problems(
    who: &str,
    image: &str,
    held: &str,
    p: &PlatformCheck,
) -> Vec<(Severity, String, String)> {
    let at = match &p.platform {
        Some(platform) => format!("{who}: {image} ({platform})"),
        None => format!("{who}: {image}"),
    };
    let mut out = Vec::new();
    if let Some(d) = &p.manifest_missing {
        out.push((
            Severity::Broken,
            format!("{at}: manifest {d} not found in {held}"),
            format!("{at}: manifest {} not found in {held}", short_digest(d)),
        ));
    }
    if !p.missing.is_empty() {
        let head = format!(
            "{at}: {} of {} blobs missing in {held}: ",
            p.missing.len(),
            p.total
        );
        out.push((
            Severity::Broken,
            format!("{head}{}", digest_list(&p.missing, false)),
            format!("{head}{}", digest_list(&p.missing, true)),
        ));
    }
    if !p.archived.is_empty() {
        let l = format!("{at}: image archived; restore it before pulling");
        let restore = restore_command(image)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        let detail = format!(
            "{l}{restore} ({} of {} blobs archived: {})",
            p.archived.len(),
            p.total,
            digest_list(&p.archived, false)
        );
        out.push((Severity::Broken, detail, l));
    }
    if p.unanswered > 0 {
        let l = format!(
            "{at}: {} did not answer for {} of {} blobs",
            held, p.unanswered, p.total
        );
        out.push((Severity::Unknown, l.clone(), l));
    }
    if let Some(reason) = &p.unreadable {
        let l = format!("{who}: {} could not be asked about {image}: {reason}", held);
        out.push((Severity::Unknown, l.clone(), l));
    }
    out
}

/// The AWS CLI command that restores an archived ECR image to standard storage (minutes to
/// hours; pulls fail until it is done). `None` for a reference outside ECR.
pub fn restore_command(image: &str) -> Option<String> {
    let ImageTarget::Ecr { repo, id } = ImageTarget::classify(image).ok()? else {
        return None;
    };
    let registry = repo.registry.ecr()?;
    let image_id = match id {
        ImageId::Tag(t) => format!("imageTag={t}"),
        ImageId::Digest(d) => format!("imageDigest={d}"),
    };
    Some(format!(
        "aws ecr update-image-storage-class --registry-id {} --region {} --repository-name {} --image-id {image_id} --target-storage-class STANDARD",
        registry.account, registry.region, repo.repository
    ))
}
