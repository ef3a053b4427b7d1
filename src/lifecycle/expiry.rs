//! Lifecycle forecasts for images by reference, shared by the controller and `check
//! --lifecycle`: each repository's policy and images fetched through the registry seam,
//! evaluated by [`crate::lifecycle::forecast`], and read for the image a reference names.
//!
//! The image a reference names is the one DescribeImages lists under its tag or digest, or
//! the manifest the tag resolved to when it was last checked. For a multi-arch image that
//! is its index: the index's children are images of their own in DescribeImages (usually
//! untagged), but ECR's user guide ("How lifecycle policies work") says an image a manifest
//! list references cannot be expired or archived while the list exists, so they are marked
//! as such for the evaluator and the forecast is the index's own.

use std::collections::{BTreeMap, BTreeSet};

use crate::image::{ImageId, ImageTarget, RepositoryKey};
use crate::lifecycle::{self, Action, Forecast, ImageFacts, Policy, PolicyError, UnixSeconds};
use crate::registry::{LifecycleFacts, RegistryError};

/// When and how a lifecycle rule will first act on an image in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub forecast: Forecast,
    /// The image the rule acts on: the one named (for a multi-arch image, its index).
    pub digest: String,
}

impl Expiry {
    /// The forecast falls within `warning` of `now` (or is already due).
    pub fn within(&self, now: UnixSeconds, warning: std::time::Duration) -> bool {
        let warning = i64::try_from(warning.as_secs()).unwrap_or(i64::MAX);
        self.forecast.at <= now.saturating_add(warning)
    }

    /// "expired by lifecycle rule 2 (keep 30 images) at 2026-12-03T10:00:00Z: why".
    pub fn sentence(&self) -> String {
        let f = &self.forecast;
        let verb = match f.action {
            Action::Expire => "expired",
            Action::Archive => "archived",
        };
        let rule = match &f.rule_description {
            Some(d) if !d.is_empty() => format!("lifecycle rule {} ({d})", f.rule_priority),
            _ => format!("lifecycle rule {}", f.rule_priority),
        };
        format!("{verb} by {rule} at {}: {}", rfc3339(f.at), f.why)
    }
}

/// The lifecycle rule that will act on an image, and why: as `/inventory`, `report` and
/// `check --lifecycle` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ExpiryRule {
    pub priority: u32,
    pub description: Option<String>,
    pub reason: String,
    /// The image it acts on: the one named (for a multi-arch image, its index).
    pub digest: String,
}

impl ExpiryRule {
    pub fn of(e: &Expiry) -> Self {
        ExpiryRule {
            priority: e.forecast.rule_priority,
            description: e.forecast.rule_description.clone(),
            reason: e.forecast.why.clone(),
            digest: e.digest.clone(),
        }
    }
}

/// `2026-11-30T19:33:33Z`.
pub fn rfc3339(at: UnixSeconds) -> String {
    jiff::Timestamp::from_second(at).map_or_else(|_| at.to_string(), |t| t.to_string())
}

/// Why a repository's forecast could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// One repository's images and the forecast of each.
#[derive(Debug, Clone)]
pub struct RepositoryForecast {
    images: Vec<ImageFacts>,
    forecasts: Vec<Option<Forecast>>,
    pub at: UnixSeconds,
}

impl RepositoryForecast {
    pub fn new(policy: &Policy, images: Vec<ImageFacts>, now: UnixSeconds) -> Self {
        let forecasts = lifecycle::forecast(policy, &images, now);
        RepositoryForecast {
            images,
            forecasts,
            at: now,
        }
    }

    /// The first action on the image `id` names, or on `resolved`, the manifest its tag
    /// resolved to when it was last checked.
    pub fn of(&self, id: &ImageId, resolved: Option<&str>) -> Option<Expiry> {
        let named = |image: &ImageFacts| match id {
            ImageId::Tag(t) => image.tags.iter().any(|x| x == t),
            ImageId::Digest(d) => image.digest == *d,
        };
        let (image, f) = self
            .images
            .iter()
            .zip(&self.forecasts)
            .find(|(image, _)| named(image))
            .or_else(|| {
                let resolved = resolved?;
                self.images
                    .iter()
                    .zip(&self.forecasts)
                    .find(|(image, _)| image.digest == resolved)
            })?;
        Some(Expiry {
            forecast: f.clone()?,
            digest: image.digest.clone(),
        })
    }

    /// The images a rule acts on at the time of the forecast (due now), with the action:
    /// what a lifecycle policy preview run at that time would list.
    pub fn due_now(&self) -> BTreeMap<String, Action> {
        self.images
            .iter()
            .zip(&self.forecasts)
            .filter_map(|(image, f)| {
                let f = f.as_ref().filter(|f| f.at <= self.at)?;
                Some((image.digest.clone(), f.action))
            })
            .collect()
    }
}

/// The forecast of one repository: `None` when it has no lifecycle policy. `in_index`: the
/// digests the indexes read so far reference (governed by their index).
pub async fn forecast_repository(
    facts: &dyn LifecycleFacts,
    repo: &RepositoryKey,
    in_index: &BTreeSet<&str>,
    now: UnixSeconds,
) -> Result<Option<RepositoryForecast>, ExpiryError> {
    let Some(text) = facts.lifecycle_policy(repo).await? else {
        return Ok(None);
    };
    let policy = Policy::parse(&text)?;
    let mut images = facts.describe_images(repo).await?;
    for image in &mut images {
        image.in_index = in_index.contains(image.digest.as_str());
    }
    Ok(Some(RepositoryForecast::new(&policy, images, now)))
}

/// What forecasting a set of images found.
#[derive(Debug, Default)]
pub struct Forecasts {
    /// Every ECR image asked for whose repository could be read, with its expiry (`None`:
    /// no rule will act on it).
    pub images: Vec<(String, Option<Expiry>)>,
    /// Each repository forecast, for the preview's cross-check.
    pub repositories: Vec<(RepositoryKey, RepositoryForecast)>,
    /// Repositories that could not be read, and why.
    pub errors: Vec<(RepositoryKey, ExpiryError)>,
    /// Every ECR image asked for whose repository could not be read, with why: it has no
    /// forecast.
    pub unread: Vec<(String, String)>,
}

/// Forecasts for `images` (references), a repository at a time; `digests_of` gives the
/// digests a reference last resolved to, the manifest first and an index's children after
/// it (see [`crate::engine::Engine::manifest_digests`]). References that are not ECR images
/// are left out.
pub async fn forecast_images(
    facts: &dyn LifecycleFacts,
    images: &[String],
    digests_of: impl Fn(&str) -> Vec<String>,
    now: UnixSeconds,
) -> Forecasts {
    // Each image with the id it names and the digests it last resolved to.
    type Named<'a> = (&'a String, ImageId, Vec<String>);
    let mut by_repo: BTreeMap<RepositoryKey, Vec<Named>> = BTreeMap::new();
    for image in images {
        if let Ok(ImageTarget::Ecr { repo, id }) = ImageTarget::classify(image) {
            let digests = digests_of(image);
            by_repo.entry(repo).or_default().push((image, id, digests));
        }
    }
    let mut out = Forecasts::default();
    for (repo, named) in by_repo {
        let in_index: BTreeSet<&str> = named
            .iter()
            .flat_map(|(_, _, digests)| digests.iter().skip(1).map(String::as_str))
            .collect();
        match forecast_repository(facts, &repo, &in_index, now).await {
            Ok(found) => {
                for (image, id, digests) in &named {
                    let resolved = digests.first().map(String::as_str);
                    let expiry = found.as_ref().and_then(|f| f.of(id, resolved));
                    out.images.push((image.to_string(), expiry));
                }
                if let Some(found) = found {
                    out.repositories.push((repo, found));
                }
            }
            Err(e) => {
                let why = format!("its repository's lifecycle policy cannot be read: {e}");
                out.unread.extend(
                    named
                        .iter()
                        .map(|(image, ..)| (image.to_string(), why.clone())),
                );
                out.errors.push((repo, e));
            }
        }
    }
    out
}

/// Seconds since the Unix epoch, now.
pub fn now() -> UnixSeconds {
    jiff::Timestamp::now().as_second()
}
