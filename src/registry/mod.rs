//! The seam between the engine and ECR: two batch calls with typed answers and errors.
//! `ecr.rs` implements it with the AWS SDK; tests plug in-memory registries behind it.

#[cfg(feature = "aws")]
pub mod credentials;
#[cfg(feature = "aws")]
pub mod distribution;
#[cfg(feature = "aws")]
pub mod ecr;
#[cfg(feature = "aws")]
pub mod oci;

use futures::future::BoxFuture;

use crate::image::{EcrRegistry, ImageId, RepositoryKey};
use crate::lifecycle::ImageFacts;

/// ECR allows at most 100 image ids per `BatchGetImage` and 100 digests per
/// `BatchCheckLayerAvailability` call.
pub const MAX_IDS_PER_CALL: usize = 100;

/// A manifest as ECR returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// The tag or digest this answer belongs to, as ECR echoed it.
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// `imageManifestMediaType`, when ECR gave it.
    pub media_type: Option<String>,
    pub manifest: String,
}

/// A `BatchGetImage` failure entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// e.g. `ImageNotFound`, `KmsError`, `UpstreamUnavailable`.
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchGetImageOutput {
    pub images: Vec<FetchedManifest>,
    pub failures: Vec<ImageFailure>,
}

/// Availability of one blob as `BatchCheckLayerAvailability` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    Available,
    Unavailable,
    Archived,
    /// `MissingLayerDigest` failure.
    Missing,
    /// Any other failure (`InvalidLayerDigest`, unknown availability words).
    Invalid,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerAvailabilityOutput {
    /// Every digest ECR answered for, layers and failures alike.
    pub blobs: Vec<(String, BlobState)>,
    /// ECR's answer as it gave it, for `ecr-preflight layers`; may be left empty by
    /// registries that only serve the engine.
    pub layers: Vec<LayerDetail>,
    pub failures: Vec<LayerFailure>,
}

#[cfg(feature = "aws")]
impl LayerAvailabilityOutput {
    /// ECR's answer as it gave it, with each digest's state read from it: the availability
    /// word of a layer, the code of a failure.
    pub(crate) fn from_answer(layers: Vec<LayerDetail>, failures: Vec<LayerFailure>) -> Self {
        let available = layers.iter().map(|layer| {
            let state = match layer.layer_availability.as_str() {
                "AVAILABLE" => BlobState::Available,
                "UNAVAILABLE" => BlobState::Unavailable,
                "ARCHIVED" => BlobState::Archived,
                _ => BlobState::Invalid,
            };
            (layer.layer_digest.clone(), state)
        });
        let failed = failures.iter().map(|failure| {
            let state = match failure.failure_code.as_str() {
                "MissingLayerDigest" => BlobState::Missing,
                _ => BlobState::Invalid,
            };
            (failure.layer_digest.clone(), state)
        });
        LayerAvailabilityOutput {
            blobs: available.chain(failed).collect(),
            layers,
            failures,
        }
    }
}

/// One `layers` entry of `BatchCheckLayerAvailability`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerDetail {
    pub layer_digest: String,
    pub layer_availability: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// One `failures` entry of `BatchCheckLayerAvailability`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerFailure {
    pub layer_digest: String,
    pub failure_code: String,
    pub failure_reason: String,
}

/// Why a whole call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("repository {repository} not found in registry {registry}")]
    RepositoryNotFound {
        registry: String,
        repository: String,
    },
    #[error("AccessDeniedException ({operation})")]
    AccessDenied { operation: &'static str },
    #[error("throttled by ECR ({0})")]
    Throttled(String),
    #[error("ECR server error ({0})")]
    Server(String),
    #[error("ECR call timed out")]
    Timeout,
    #[error("cannot reach ECR: {0}")]
    Transport(String),
    #[error("{code}: {message}")]
    Service { code: String, message: String },
    /// No valid AWS credentials: why (the chain's own error).
    #[error("{0}")]
    Credentials(String),
    /// A registry other than ECR asks for credentials this process does not have.
    #[error("registry {registry} needs credentials to pull (an imagePullSecret the product may read, see docs/registries.md)")]
    NeedsCredentials { registry: String },
}

/// The two ECR calls the engine needs. Implementations never see more than
/// [`MAX_IDS_PER_CALL`] ids or digests per call.
pub trait Registry: Send + Sync + 'static {
    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>>;

    fn batch_check_layer_availability<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>>;

    /// Counts in `evicted` the clients this registry drops to stay bounded, if it keeps any.
    fn count_client_evictions(&self, _evicted: prometheus_client::metrics::counter::Counter) {}

    /// The lifecycle calls of the same registry, when it has them (ECR does; a registry
    /// that only serves manifests and blobs does not).
    fn lifecycle(&self) -> Option<&dyn LifecycleFacts> {
        None
    }

    /// The pull-through cache rules of an ECR registry (DescribePullThroughCacheRules); none
    /// for a registry that has no such rules.
    fn pull_through_rules<'a>(
        &'a self,
        _registry: &'a EcrRegistry,
    ) -> BoxFuture<'a, Result<Vec<PullThroughRule>, RegistryError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// An ECR pull-through cache rule: the repositories under `ecr_prefix` are filled from an
/// upstream registry on their first pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullThroughRule {
    /// The repository prefix, without the `/` ECR assumes after it; `ROOT` for every
    /// repository no other rule covers.
    pub ecr_prefix: String,
    /// The upstream registry's host: `registry-1.docker.io`, `ghcr.io`, an ECR host.
    pub upstream_url: String,
    /// The upstream repository prefix; `None` or `ROOT`: the name below the ECR prefix.
    pub upstream_prefix: Option<String>,
    /// The Secrets Manager secret holding the upstream's credentials, when there is one.
    pub credential_arn: Option<String>,
}

/// The prefix that stands for "every repository" in a rule.
const ROOT: &str = "ROOT";

impl PullThroughRule {
    /// The upstream repository `repository` is filled from, when this rule covers it.
    /// `docker-hub/library/nginx` under `docker-hub` is `library/nginx`; under a rule with
    /// upstream prefix `team`, `cache/app` is `team/app` (ECR's own table of mappings).
    pub fn upstream_of(&self, repository: &str) -> Option<String> {
        let rest = if self.ecr_prefix == ROOT {
            repository
        } else {
            repository
                .strip_prefix(self.ecr_prefix.trim_end_matches('/'))?
                .strip_prefix('/')?
        };
        if rest.is_empty() {
            return None;
        }
        Some(match self.upstream_prefix.as_deref() {
            None | Some(ROOT) | Some("") => rest.to_owned(),
            Some(prefix) => format!("{}/{rest}", prefix.trim_end_matches('/')),
        })
    }
}

/// The rule that covers `repository` and the upstream repository it names: the longest
/// prefix that matches; `ROOT` only when none does.
pub fn pull_through_rule<'r>(
    rules: &'r [PullThroughRule],
    repository: &str,
) -> Option<(&'r PullThroughRule, String)> {
    let specific = rules
        .iter()
        .filter(|r| r.ecr_prefix != ROOT)
        .filter_map(|r| Some((r, r.upstream_of(repository)?)))
        .max_by_key(|(r, _)| r.ecr_prefix.len());
    specific.or_else(|| {
        rules
            .iter()
            .filter(|r| r.ecr_prefix == ROOT)
            .find_map(|r| Some((r, r.upstream_of(repository)?)))
    })
}

/// What lifecycle forecasts need from ECR: a repository's lifecycle policy and its images.
pub trait LifecycleFacts: Send + Sync + 'static {
    /// The policy's text (GetLifecyclePolicy); `None` when the repository has none.
    fn lifecycle_policy<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>>;

    /// Every image of the repository, archived ones included (DescribeImages, every page;
    /// at most [`MAX_DESCRIBED_IMAGES`]).
    fn describe_images<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Vec<ImageFacts>, RegistryError>>;

    /// Starts moving an archived image back to standard storage (UpdateImageStorageClass),
    /// unless a restore is already under way (the image is `ACTIVATING`).
    fn restore<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        id: &'a ImageId,
    ) -> BoxFuture<'a, Result<Restore, RegistryError>>;

    /// Starts a lifecycle policy preview of the repository's own policy
    /// (StartLifecyclePolicyPreview).
    fn start_preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// The preview's state and, once complete, what it would act on
    /// (GetLifecyclePolicyPreview, every page).
    fn preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Preview, RegistryError>>;
}

/// What asking for a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    Started,
    /// The image was already being restored (`ACTIVATING`): nothing was asked.
    UnderWay,
}

/// A lifecycle policy preview as ECR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    InProgress,
    /// The images ECR's evaluator would act on now.
    Complete(Vec<PreviewAction>),
    Failed(String),
}

/// One image a preview says a rule acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewAction {
    pub digest: String,
    pub rule_priority: u32,
    pub action: crate::lifecycle::Action,
}

/// What a single-arch image runs on: the `os`, `architecture` and `variant` of its config
/// blob, read through the registry API (not ECR's control plane). The start of checking
/// images in any registry.
pub trait ConfigPlatforms: Send + Sync + 'static {
    /// The platform in the config blob `digest` of `repo`, reached at `host` (the image's
    /// registry host); the blob's content is checked against its digest.
    fn config_platform<'a>(
        &'a self,
        host: &'a str,
        repo: &'a RepositoryKey,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<crate::manifest::Platform, RegistryError>>;
}

/// Images read of one repository at most: ECR's own limit is 20,000 a repository, so more
/// is a wrong answer, not a repository to keep in memory.
pub const MAX_DESCRIBED_IMAGES: usize = 100_000;

/// Every registry behind one seam: ECR's through `ecr` (the SDK), any other through `other`
/// (the OCI Distribution API), by the registry each repository names.
pub struct Routes {
    pub ecr: std::sync::Arc<dyn Registry>,
    pub other: std::sync::Arc<dyn Registry>,
}

impl Routes {
    fn of(&self, repo: &RepositoryKey) -> &dyn Registry {
        match repo.registry {
            crate::image::RegistryName::Ecr(_) => &*self.ecr,
            crate::image::RegistryName::Distribution(_) => &*self.other,
        }
    }
}

impl Registry for Routes {
    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        self.of(repo).batch_get_image(repo, ids)
    }

    fn batch_check_layer_availability<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        self.of(repo).batch_check_layer_availability(repo, digests)
    }

    fn count_client_evictions(&self, evicted: prometheus_client::metrics::counter::Counter) {
        self.ecr.count_client_evictions(evicted);
    }

    /// ECR's: no other registry has lifecycle policies.
    fn lifecycle(&self) -> Option<&dyn LifecycleFacts> {
        self.ecr.lifecycle()
    }

    fn pull_through_rules<'a>(
        &'a self,
        registry: &'a EcrRegistry,
    ) -> BoxFuture<'a, Result<Vec<PullThroughRule>, RegistryError>> {
        self.ecr.pull_through_rules(registry)
    }
}

/// Config blobs of every registry: ECR's through its registry API with ECR's credentials,
/// any other's through the OCI Distribution API.
pub struct ConfigRoutes {
    pub ecr: std::sync::Arc<dyn ConfigPlatforms>,
    pub other: std::sync::Arc<dyn ConfigPlatforms>,
}

impl ConfigPlatforms for ConfigRoutes {
    fn config_platform<'a>(
        &'a self,
        host: &'a str,
        repo: &'a RepositoryKey,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<crate::manifest::Platform, RegistryError>> {
        match repo.registry {
            crate::image::RegistryName::Ecr(_) => self.ecr.config_platform(host, repo, digest),
            crate::image::RegistryName::Distribution(_) => {
                self.other.config_platform(host, repo, digest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ecr_prefix: &str, upstream_prefix: Option<&str>) -> PullThroughRule {
        PullThroughRule {
            ecr_prefix: ecr_prefix.to_owned(),
            upstream_url: "upstream.example".to_owned(),
            upstream_prefix: upstream_prefix.map(str::to_owned),
            credential_arn: None,
        }
    }

    #[test]
    fn repositories_map_to_their_upstream_as_ecrs_table_says() {
        // docs.aws.amazon.com/AmazonECR/latest/userguide/pull-through-cache-private-wildcards.html
        let cases = [
            (
                rule("ecr-public", None),
                "ecr-public/my-app/image1",
                Some("my-app/image1"),
            ),
            (
                rule("ecr-public", Some("ROOT")),
                "ecr-public/my-app/image2",
                Some("my-app/image2"),
            ),
            (
                rule("ROOT", Some("ROOT")),
                "my-app/image1",
                Some("my-app/image1"),
            ),
            (
                rule("team-a", Some("team-a")),
                "team-a/myapp/image1",
                Some("team-a/myapp/image1"),
            ),
            (
                rule("my-app", Some("upstream-app")),
                "my-app/image1",
                Some("upstream-app/image1"),
            ),
            (
                rule("docker-hub", None),
                "docker-hub/library/nginx",
                Some("library/nginx"),
            ),
            // A prefix stands for a whole first component: `docker-hubx` is not under it.
            (rule("docker-hub", None), "docker-hubx/library/nginx", None),
            (rule("docker-hub", None), "docker-hub", None),
        ];
        for (rule, repository, upstream) in cases {
            assert_eq!(
                rule.upstream_of(repository).as_deref(),
                upstream,
                "{rule:?} {repository}"
            );
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_root_covers_the_rest() {
        let rules = [
            rule("ROOT", None),
            rule("cache", None),
            rule("cache/team", Some("org")),
        ];
        let upstream = |repository: &str| {
            pull_through_rule(&rules, repository).map(|(r, name)| (r.ecr_prefix.clone(), name))
        };
        assert_eq!(
            upstream("cache/team/app"),
            Some(("cache/team".to_owned(), "org/app".to_owned()))
        );
        assert_eq!(
            upstream("cache/other/app"),
            Some(("cache".to_owned(), "other/app".to_owned()))
        );
        assert_eq!(
            upstream("plain/app"),
            Some(("ROOT".to_owned(), "plain/app".to_owned()))
        );
        assert_eq!(pull_through_rule(&rules[1..], "plain/app"), None);
    }
}
