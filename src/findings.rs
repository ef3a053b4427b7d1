//! What checking an image found: the report of one image reference, its finding, and the
//! outcome name that logs, metrics, the CLI and the decision use. A leaf: it imports nothing
//! of the crate beyond the platform types, so every layer can share it.

use crate::manifest::Platform;
use crate::platforms::Landing;

/// The result of checking one image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    /// The reference as written in the object.
    pub image: String,
    pub finding: Finding,
    /// The repository is filled by a pull-through cache rule on first pull
    /// (`--pull-through-prefixes`: its upstream is not known).
    pub pull_through: bool,
    /// Not cached in ECR yet: checked at the upstream its pull-through cache rule fills it
    /// from instead (`registry-1.docker.io/library/nginx:1.27`), and this finding is that.
    pub upstream: Option<String>,
    /// Platforms the pod can land on that the image has no manifest for (set where the
    /// cluster's platforms are known).
    pub gap: Option<PlatformGap>,
    /// Why the platform of a single-arch image could not be read (its config blob).
    pub platform_unknown: Option<String>,
}

/// Where a pod can land that its image cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformGap {
    /// Each platform without a manifest, with the nodes and NodePools behind it.
    pub missing: Vec<Landing>,
    /// The platforms the image has.
    pub available: Vec<Platform>,
}

impl PlatformGap {
    /// The platforms of `landings` none of `available` runs on; `None` when every one is
    /// covered. A manifest for the os and architecture covers a platform whatever its
    /// variant (nodes do not tell theirs).
    pub fn of(landings: &[Landing], available: &[Platform]) -> Option<Self> {
        let missing: Vec<Landing> = landings
            .iter()
            .filter(|l| !available.iter().any(|p| l.platform.runs(p)))
            .cloned()
            .collect();
        (!missing.is_empty()).then(|| PlatformGap {
            missing,
            available: available.to_vec(),
        })
    }
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
    pub fn new(image: String, finding: Finding, pull_through: bool) -> Self {
        ImageReport {
            image,
            finding,
            pull_through,
            upstream: None,
            gap: None,
            platform_unknown: None,
        }
    }

    /// Judges the image by where its pod can land (`landings`), given the platforms it has
    /// where known: only the index children it can land on count, and the platforms among
    /// `landings` it lacks make the gap. With a gap, an index without any wanted child is
    /// told by the gap alone: the list of every wanted platform would name some the pod
    /// never lands on.
    pub fn land(&mut self, landings: &[Landing], available: Option<&[Platform]>) {
        self.finding.keep_landable(landings);
        if let Some(available) = available {
            self.gap = PlatformGap::of(landings, available);
        }
        if self.gap.is_some() && matches!(self.finding, Finding::NoPlatform { .. }) {
            self.finding = Finding::Checked(Vec::new());
        }
    }

    /// The finding's outcome; `no_platform` when the image is fine (or ECR could not say)
    /// but lacks a platform the pod can land on; `unknown` when it is fine but its platform
    /// could not be read.
    pub fn outcome(&self) -> Outcome {
        match self.finding.outcome() {
            Outcome::Ok | Outcome::Unknown if self.gap.is_some() => Outcome::NoPlatform,
            Outcome::Ok if self.platform_unknown.is_some() => Outcome::Unknown,
            outcome => outcome,
        }
    }
}

impl Finding {
    /// Keeps the blob checks of the index children for platforms a pod can land on: a
    /// child for a platform none of its nodes or NodePools runs is never pulled for it,
    /// so its missing blobs are not the pod's problem. Unchanged when no checked child is
    /// for one of them (the check was made before the cluster's platforms were known).
    pub fn keep_landable(&mut self, landings: &[Landing]) {
        let Finding::Checked(checks) = self else {
            return;
        };
        let lands = |check: &PlatformCheck| {
            check
                .platform
                .as_ref()
                .is_none_or(|p| landings.iter().any(|l| l.platform.runs(p)))
        };
        if checks.iter().any(lands) {
            checks.retain(lands);
        }
    }

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
    use super::{Finding, ImageReport, Outcome, PlatformCheck};
    use crate::manifest::Platform;
    use crate::platforms::{Landing, NodePlatform};

    fn check(platform: Option<&str>, missing: &[&str]) -> PlatformCheck {
        PlatformCheck {
            platform: platform.map(|p| p.parse::<Platform>().expect("platform")),
            total: 3,
            missing: missing.iter().map(|m| (*m).to_owned()).collect(),
            archived: Vec::new(),
            unanswered: 0,
            manifest_missing: None,
            unreadable: None,
        }
    }

    fn lands_on(platforms: &[(&str, &str)]) -> Vec<Landing> {
        platforms
            .iter()
            .map(|(os, arch)| Landing {
                platform: NodePlatform {
                    os: (*os).to_owned(),
                    architecture: (*arch).to_owned(),
                },
                nodes: 1,
                pools: Vec::new(),
                bound: None,
            })
            .collect()
    }

    #[test]
    fn an_index_without_a_wanted_child_is_told_by_the_gap_where_the_pod_lands_is_known() {
        let platform = |p: &str| p.parse::<Platform>().expect("platform");
        let none_wanted = Finding::NoPlatform {
            wanted: vec![platform("linux/amd64"), platform("windows/amd64")],
        };
        let mut report = ImageReport::new("i".into(), none_wanted.clone(), false);
        report.land(
            &lands_on(&[("linux", "amd64")]),
            Some(&[platform("linux/s390x")]),
        );
        assert_eq!(report.finding, Finding::Checked(Vec::new()));
        assert_eq!(report.outcome(), Outcome::NoPlatform);
        assert_eq!(
            report.gap.as_ref().map(|g| g.missing.len()),
            Some(1),
            "{report:?}"
        );
        // Without the image's platforms there is no gap: the finding stays as it was.
        let mut unknown = ImageReport::new("i".into(), none_wanted.clone(), false);
        unknown.land(&lands_on(&[("linux", "amd64")]), None);
        assert_eq!(unknown.finding, none_wanted);
        assert_eq!(unknown.outcome(), Outcome::NoPlatform);
    }

    #[test]
    fn only_the_children_a_pod_can_land_on_count() {
        let checked = Finding::Checked(vec![
            check(Some("linux/amd64"), &[]),
            check(Some("linux/arm64/v8"), &["sha256:gone"]),
        ]);
        // Kept to amd64: the broken arm64 child is not its problem.
        let mut amd64 = checked.clone();
        amd64.keep_landable(&lands_on(&[("linux", "amd64")]));
        assert_eq!(
            amd64,
            Finding::Checked(vec![check(Some("linux/amd64"), &[])])
        );
        assert_eq!(amd64.outcome(), Outcome::Ok);
        // Landing on arm64 too (any variant): it is.
        let mut both = checked.clone();
        both.keep_landable(&lands_on(&[("linux", "amd64"), ("linux", "arm64")]));
        assert_eq!(both, checked);
        assert_eq!(both.outcome(), Outcome::Missing);
        // No checked child for where it lands (checked before the cluster was known):
        // unchanged rather than an unchecked "ok".
        let mut windows = checked.clone();
        windows.keep_landable(&lands_on(&[("windows", "amd64")]));
        assert_eq!(windows, checked);
        // A single-arch image's check always counts.
        let single = Finding::Checked(vec![check(None, &["sha256:gone"])]);
        let mut kept = single.clone();
        kept.keep_landable(&lands_on(&[("linux", "arm64")]));
        assert_eq!(kept, single);
    }

    #[test]
    fn every_outcome_sits_at_its_own_index() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }
}
