//! Lifecycle forecasts: when a repository's lifecycle policy will expire or archive each of
//! its images. Pure: the policy, the images as DescribeImages tells them, and `now` in;
//! for each image the first moment a rule acts on it, which rule, and why.
//!
//! The semantics, as the Amazon ECR User Guide states them ("How lifecycle policies work",
//! "Lifecycle policy properties", "Examples of lifecycle policies"; docs/lifecycle.md quotes
//! each rule with its source):
//! - rules apply in `rulePriority` order; an image whose tags (and storage class) a rule
//!   selects is acted on by that rule or by none: rules after it never act on it;
//! - a rule still *counts* images that rules before it act on: `imageCountMoreThan N` keeps
//!   the newest N of every image it selects, and acts on the older ones it governs;
//! - "If an image is referenced by a manifest list, it cannot be expired or archived without
//!   the manifest list being deleted or archived first": an index's children are governed by
//!   their index, never acted on (or counted) by themselves;
//! - `sinceImagePushed`, `sinceImagePulled` and `sinceImageTransitioned` act N days after the
//!   push, the last recorded pull, the transition to archive;
//! - an image restored from the archive counts from `lastActivatedAt` for `sinceImagePulled`
//!   when it was not pulled since, and is ordered by `lastActivatedAt` where images are
//!   ordered by push time;
//! - an image being restored (`ACTIVATING`) is in neither storage class: no rule acts on it.
//!
//! Where the guide is silent: an image never pulled (nor restored) counts from its push for
//! `sinceImagePulled`; an archived image without a transition time counts from its push.

pub mod expiry;
mod policy;
pub mod preview;

pub use policy::{
    wildcard_match, Action, Count, Policy, PolicyError, Rule, StorageClass, TagSelection,
};

/// Seconds since the Unix epoch.
pub type UnixSeconds = i64;

const DAY: i64 = 86_400;

/// One image as DescribeImages reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: UnixSeconds,
    pub last_pulled: Option<UnixSeconds>,
    pub status: ImageStatus,
    /// `lastArchivedAt`.
    pub archived_at: Option<UnixSeconds>,
    /// `lastActivatedAt`: when it was last restored from the archive.
    pub last_activated: Option<UnixSeconds>,
    /// An image index of the repository references it (DescribeImages does not say so:
    /// the caller knows it from the indexes it has read).
    pub in_index: bool,
}

impl ImageFacts {
    /// An active image, pushed at `pushed_at`, never pulled, archived or restored.
    pub fn pushed(digest: impl Into<String>, tags: Vec<String>, pushed_at: UnixSeconds) -> Self {
        ImageFacts {
            digest: digest.into(),
            tags,
            pushed_at,
            last_pulled: None,
            status: ImageStatus::Active,
            archived_at: None,
            last_activated: None,
            in_index: false,
        }
    }

    /// Restored from the archive (and active again).
    fn restored(&self) -> Option<UnixSeconds> {
        self.last_activated
            .filter(|_| self.status == ImageStatus::Active)
    }

    /// Where images are ordered by push time: a restored image by its restore.
    fn order_time(&self) -> UnixSeconds {
        self.restored()
            .map_or(self.pushed_at, |at| at.max(self.pushed_at))
    }
}

/// `imageStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStatus {
    Active,
    Archived,
    /// Being restored from the archive.
    Activating,
}

/// The first action a rule will take on an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forecast {
    /// When: never before `now` (a rule already due acts within ECR's next run).
    pub at: UnixSeconds,
    pub action: Action,
    pub rule_priority: u32,
    pub rule_description: Option<String>,
    /// Why the rule acts, in a sentence.
    pub why: String,
}

/// For every image (in input order), the first moment a rule of `policy` acts on it, or
/// `None` when none will without new pushes.
pub fn forecast(policy: &Policy, images: &[ImageFacts], now: UnixSeconds) -> Vec<Option<Forecast>> {
    // Newest first, the order imageCountMoreThan keeps them in; the digest breaks ties so
    // that the answer never depends on the input order. Only images a rule can act on.
    let mut by_age: Vec<&ImageFacts> = images.iter().filter(|i| storage_of(i).is_some()).collect();
    by_age.sort_by(|a, b| {
        b.order_time()
            .cmp(&a.order_time())
            .then_with(|| a.digest.cmp(&b.digest))
    });
    images
        .iter()
        .map(|image| {
            let storage = storage_of(image)?;
            let rule = policy
                .rules
                .iter()
                .find(|r| r.selects(&image.tags, storage))?;
            let (due, why) = due(rule, image, &by_age, now)?;
            Some(Forecast {
                at: due.max(now),
                action: rule.action,
                rule_priority: rule.priority,
                rule_description: rule.description.clone(),
                why,
            })
        })
        .collect()
}

/// The storage class rules select an image in; `None` for an image no rule acts on: one an
/// index references, or one being restored.
fn storage_of(image: &ImageFacts) -> Option<StorageClass> {
    if image.in_index {
        return None;
    }
    match image.status {
        ImageStatus::Active => Some(StorageClass::Standard),
        ImageStatus::Archived => Some(StorageClass::Archive),
        ImageStatus::Activating => None,
    }
}

/// When `rule` acts on `image`, which it governs, and why; `None` when it never will.
fn due(
    rule: &Rule,
    image: &ImageFacts,
    by_age: &[&ImageFacts],
    now: UnixSeconds,
) -> Option<(UnixSeconds, String)> {
    let after = |from: UnixSeconds, days: u32, what: &str| {
        (
            from.saturating_add(i64::from(days) * DAY),
            format!("{days} days after {what}"),
        )
    };
    Some(match rule.count {
        Count::MoreThan(keep) => {
            let newer = by_age
                .iter()
                .take_while(|other| other.digest != image.digest)
                .filter(|other| storage_of(other).is_some_and(|s| rule.selects(&other.tags, s)))
                .count();
            if newer < keep as usize {
                return None;
            }
            (
                now,
                format!("{newer} newer images match the rule, which keeps {keep}"),
            )
        }
        Count::SincePushed { days } => after(image.pushed_at, days, "its push"),
        Count::SincePulled { days } => match (image.last_pulled, image.restored()) {
            (Some(pulled), Some(restored)) if restored > pulled => after(
                restored,
                days,
                "its restore from the archive (not pulled since)",
            ),
            (Some(pulled), _) => after(pulled, days, "its last recorded pull"),
            (None, Some(restored)) => after(
                restored,
                days,
                "its restore from the archive (never pulled)",
            ),
            (None, None) => after(image.pushed_at, days, "its push (never pulled)"),
        },
        Count::SinceTransitioned { days } => match image.archived_at {
            Some(at) => after(at, days, "its archiving"),
            None => after(image.pushed_at, days, "its push (archived, time unknown)"),
        },
    })
}
