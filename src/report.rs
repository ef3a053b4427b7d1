//! What checking an image found: the report of one image reference, its finding, and the
//! outcome name that logs, metrics, the CLI and the decision use. A leaf: it imports nothing
//! of the crate beyond the platform type, so every layer can share it.

use crate::manifest::Platform;

/// The result of checking one image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    /// The reference as written in the object.
    pub image: String,
    pub finding: Finding,
    /// The repository is filled by a pull-through cache rule on first pull.
    pub pull_through: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Not an ECR image.
    Skipped,
    InvalidReference(String),
    NotFound(NotFound),
    /// An index without a child for any wanted platform.
    NoPlatform {
        wanted: Vec<Platform>,
    },
    /// The blobs of each checked manifest (one for a single-arch image).
    Checked(Vec<PlatformCheck>),
    /// ECR could not answer; the reason names the error.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    Tag(String),
    Digest(String),
    Repository {
        repository: String,
        registry: String,
    },
}

/// The blob check of one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformCheck {
    /// The index child's platform; `None` for a single-arch image.
    pub platform: Option<Platform>,
    /// Blobs checked (config and distributable layers).
    pub total: usize,
    /// `MissingLayerDigest` or `UNAVAILABLE`, in manifest order.
    pub missing: Vec<String>,
    pub archived: Vec<String>,
    /// Blobs ECR did not answer for.
    pub unanswered: usize,
    /// The index named this child but ECR has no such manifest.
    pub manifest_missing: Option<String>,
    /// The child manifest could not be read.
    pub unreadable: Option<String>,
}

/// The per-image outcome, as reported in logs, metrics and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    Missing,
    Archived,
    NotFound,
    NoPlatform,
    InvalidReference,
    Skipped,
    Unknown,
}

impl Outcome {
    /// Every outcome, in declaration order (so `ALL[o as usize] == o`).
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Missing,
        Outcome::Archived,
        Outcome::NotFound,
        Outcome::NoPlatform,
        Outcome::InvalidReference,
        Outcome::Skipped,
        Outcome::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Missing => "missing",
            Outcome::Archived => "archived",
            Outcome::NotFound => "not_found",
            Outcome::NoPlatform => "no_platform",
            Outcome::InvalidReference => "invalid_reference",
            Outcome::Skipped => "skipped",
            Outcome::Unknown => "unknown",
        }
    }
}

impl ImageReport {
    pub fn outcome(&self) -> Outcome {
        self.finding.outcome()
    }
}

impl Finding {
    pub fn outcome(&self) -> Outcome {
        match self {
            Finding::Skipped => Outcome::Skipped,
            Finding::InvalidReference(_) => Outcome::InvalidReference,
            Finding::NotFound(_) => Outcome::NotFound,
            Finding::NoPlatform { .. } => Outcome::NoPlatform,
            Finding::Unknown(_) => Outcome::Unknown,
            Finding::Checked(platforms) => {
                let any = |f: fn(&PlatformCheck) -> bool| platforms.iter().any(f);
                if any(|p| !p.missing.is_empty() || p.manifest_missing.is_some()) {
                    Outcome::Missing
                } else if any(|p| !p.archived.is_empty()) {
                    Outcome::Archived
                } else if any(|p| p.unanswered > 0 || p.unreadable.is_some()) {
                    Outcome::Unknown
                } else {
                    Outcome::Ok
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn every_outcome_sits_at_its_own_index() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }
}
