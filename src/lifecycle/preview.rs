//! `--lifecycle-preview`: each repository's forecast cross-checked with ECR's own
//! evaluator (a lifecycle policy preview of the repository's policy). The images the two
//! disagree on (ECR would act on now and the forecast not, or the other way round, or with
//! another action) are counted per repository and logged, so that a divergence between the
//! forecast and ECR shows itself in production.
//!
//! One preview at a time, in the order offered: ECR runs one preview per repository at a
//! time, and each costs calls of the background budget (the engine's registry is it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::expiry::RepositoryForecast;
use super::Action;
use crate::engine::Engine;
use crate::image::RepositoryKey;
use crate::metrics::{RepositoryLabels, WatchMetrics};
use crate::registry::{LifecycleFacts, Preview, RegistryError};

/// Repositories waiting for their preview; more are dropped until the queue drains (the
/// next pass offers them again).
const QUEUE: usize = 256;
/// How often a running preview is asked for its answer, and for how long.
const POLL: Duration = Duration::from_secs(5);
const PREVIEW_DEADLINE: Duration = Duration::from_secs(300);

pub struct Previews {
    queue: mpsc::Sender<(RepositoryKey, RepositoryForecast)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Previews {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Previews {
    pub fn new(engine: Arc<Engine>, metrics: Arc<WatchMetrics>) -> Self {
        let (queue, mut offered) = mpsc::channel::<(RepositoryKey, RepositoryForecast)>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some((repo, forecast)) = offered.recv().await {
                let Some(facts) = engine.lifecycle() else {
                    continue;
                };
                cross_check(facts, &metrics, &repo, &forecast).await;
            }
        });
        Previews { queue, task }
    }

    /// Queues a repository's forecast for a preview.
    pub fn offer(&self, repo: RepositoryKey, forecast: RepositoryForecast) {
        if self.queue.try_send((repo, forecast)).is_err() {
            tracing::debug!("lifecycle preview queue full; the next pass offers it again");
        }
    }
}

async fn cross_check(
    facts: &dyn LifecycleFacts,
    metrics: &WatchMetrics,
    repo: &RepositoryKey,
    forecast: &RepositoryForecast,
) {
    let ecr = match tokio::time::timeout(PREVIEW_DEADLINE, run_preview(facts, repo)).await {
        Ok(Ok(actions)) => actions,
        Ok(Err(e)) => {
            tracing::warn!(repository = %repo, error = %e, "lifecycle policy preview failed; no cross-check this time");
            return;
        }
        Err(_) => {
            tracing::warn!(repository = %repo, "lifecycle policy preview did not complete in time; no cross-check this time");
            return;
        }
    };
    let ours = forecast.due_now();
    let disagreements = compare(&ecr, &ours);
    let counter = metrics
        .preview_disagreements
        .get_or_create(&RepositoryLabels {
            repository: repo.to_string(),
        });
    if disagreements.is_empty() {
        counter.inc_by(0);
        tracing::debug!(repository = %repo, images = ecr.len(), "lifecycle policy preview agrees with the forecast");
        return;
    }
    counter.inc_by(disagreements.len() as u64);
    tracing::warn!(
        repository = %repo,
        disagreements = disagreements.len(),
        images = %disagreements.join(", "),
        "lifecycle policy preview and forecast disagree"
    );
}

/// Each image the preview and the forecast disagree on: "sha256:… (ECR: expire, forecast:
/// none)".
pub fn compare(ecr: &BTreeMap<String, Action>, ours: &BTreeMap<String, Action>) -> Vec<String> {
    let name = |a: Option<&Action>| a.map_or("none", |a| a.as_str());
    ecr.keys()
        .chain(ours.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|digest| ecr.get(*digest) != ours.get(*digest))
        .map(|digest| {
            format!(
                "{digest} (ECR: {}, forecast: {})",
                name(ecr.get(digest)),
                name(ours.get(digest))
            )
        })
        .collect()
}

/// Starts a preview (or joins the one running) and waits for its answer.
async fn run_preview(
    facts: &dyn LifecycleFacts,
    repo: &RepositoryKey,
) -> Result<BTreeMap<String, Action>, RegistryError> {
    match facts.start_preview(repo).await {
        Ok(()) => {}
        // One is running already: its answer is as good.
        Err(RegistryError::Service { code, .. })
            if code == "LifecyclePolicyPreviewInProgressException" => {}
        Err(e) => return Err(e),
    }
    loop {
        match facts.preview(repo).await? {
            Preview::Complete(actions) => {
                return Ok(actions.into_iter().map(|a| (a.digest, a.action)).collect())
            }
            Preview::Failed(status) => {
                return Err(RegistryError::Service {
                    code: "LifecyclePolicyPreview".to_owned(),
                    message: format!("preview ended {status}"),
                })
            }
            Preview::InProgress => tokio::time::sleep(POLL).await,
        }
    }
}
