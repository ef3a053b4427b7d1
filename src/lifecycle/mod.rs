//! Lifecycle forecasts: when a repository's lifecycle policy will expire or archive each of
//! its images. Pure: the policy, the images as DescribeImages tells them, and `now` in;
//! for each image the first moment a rule acts on it, which rule, and why.
//!
//! The semantics, as ECR documents them ("How lifecycle policies work", "Lifecycle policy
//! properties"):
//! - rules apply in `rulePriority` order; an image whose tags (and storage class) a rule
//!   selects is acted on by that rule or by none: rules after it never act on it;
//! - a rule still *counts* images that rules before it act on: `imageCountMoreThan N` keeps
//!   the newest N (by push time) of every image it selects, and acts on the older ones it
//!   governs;
//! - `sinceImagePushed`, `sinceImagePulled` and `sinceImageTransitioned` act N days after the
//!   push, the last recorded pull, the transition to archive.
//!
//! Where the documentation is silent, the reading that warns earlier: an image never pulled
//! counts from its push for `sinceImagePulled`; an archived image without a transition time
//! counts from its push; an image being restored (ACTIVATING) is still archived; a rule
//! without `storageClass` selects standard images.

mod policy;

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
    /// `imageStatus` ARCHIVED or ACTIVATING.
    pub archived: bool,
    pub archived_at: Option<UnixSeconds>,
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
    // that the answer never depends on the input order.
    let mut by_age: Vec<&ImageFacts> = images.iter().collect();
    by_age.sort_by(|a, b| {
        b.pushed_at
            .cmp(&a.pushed_at)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    images
        .iter()
        .map(|image| {
            let storage = storage_of(image);
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

fn storage_of(image: &ImageFacts) -> StorageClass {
    if image.archived {
        StorageClass::Archive
    } else {
        StorageClass::Standard
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
                .filter(|other| rule.selects(&other.tags, storage_of(other)))
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
        Count::SincePulled { days } => match image.last_pulled {
            Some(pulled) => after(pulled, days, "its last recorded pull"),
            None => after(image.pushed_at, days, "its push (never pulled)"),
        },
        Count::SinceTransitioned { days } => match image.archived_at {
            Some(at) => after(at, days, "its archiving"),
            None => after(image.pushed_at, days, "its push (archived, time unknown)"),
        },
    })
}
