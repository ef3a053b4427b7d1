//! Images of ECR pull-through cache repositories that ECR has not cached yet: checked at the
//! upstream registry their rule fills them from, so that "not cached yet" becomes `ok`, or
//! a real `not_found` or `missing`.
//!
//! The rules are read from ECR (DescribePullThroughCacheRules) once per registry every
//! [`RULES_TTL`]; `--pull-through-prefixes` overrides them (its repositories' upstream is
//! not known: a tag ECR lacks there only warns, as before).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use crate::findings::{Finding, ImageReport};
use crate::image::{
    parse_ecr_host, EcrRegistry, ImageId, ImageTarget, RegistryName, RepositoryKey,
};
use crate::registry::{pull_through_rule, PullThroughRule};

/// How long a registry's rules are kept: a new rule is used within this.
pub const RULES_TTL: Duration = Duration::from_secs(600);
/// Registries whose rules are kept at most (images name them).
pub const REGISTRIES_KEPT: u64 = 256;

/// Where one report's image is filled from.
struct Upstream {
    report: usize,
    repo: RepositoryKey,
    id: ImageId,
    /// `registry-1.docker.io/library/nginx:1.27`.
    shown: String,
    credential_arn: Option<String>,
}

impl Engine {
    /// Checks at their upstream the images of `reports` that ECR does not have and that a
    /// pull-through cache rule covers, and makes that check their finding.
    pub(super) async fn check_upstreams(&self, reports: &mut [ImageReport], deadline: Instant) {
        if !self.settings.pull_through_prefixes.is_empty() {
            return;
        }
        let wanted: Vec<(usize, EcrRegistry, String, ImageId)> = reports
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.finding, Finding::NotFound(_)))
            .filter_map(|(i, r)| match ImageTarget::classify(&r.image).ok()? {
                ImageTarget::Ecr { repo, id } => {
                    Some((i, repo.registry.ecr()?.clone(), repo.repository, id))
                }
                ImageTarget::Other(_) => None,
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        let mut upstreams = Vec::new();
        for (report, registry, repository, id) in wanted {
            let rules = self.rules_of(&registry, deadline).await;
            if let Some((rule, name)) = pull_through_rule(&rules, &repository) {
                upstreams.push(upstream(report, rule, name, id));
            }
        }
        let mut by_repo: BTreeMap<RepositoryKey, BTreeSet<ImageId>> = BTreeMap::new();
        for u in &upstreams {
            by_repo
                .entry(u.repo.clone())
                .or_default()
                .insert(u.id.clone());
        }
        let found = self.check_repositories(by_repo, deadline).await;
        for u in upstreams {
            let Some(report) = reports.get_mut(u.report) else {
                continue;
            };
            let finding = found
                .get(&u.repo)
                .and_then(|m| m.get(&u.id))
                .cloned()
                .unwrap_or_else(|| Finding::Unknown("not checked".to_owned()));
            report.finding = match (finding, &u.credential_arn) {
                (Finding::Unknown(why), Some(arn)) if why.contains("needs credentials") => {
                    Finding::Unknown(format!(
                        "it needs the credentials ECR keeps in Secrets Manager ({arn}), which ecr-preflight does not read"
                    ))
                }
                (finding, _) => finding,
            };
            report.pull_through = false;
            report.upstream = Some(u.shown);
            self.upstreams
                .insert(report.image.as_str().into(), (u.repo, u.id));
        }
    }

    /// `registry`'s pull-through cache rules, read at most every [`RULES_TTL`] (within
    /// `deadline`); none when they cannot be read, said once per read.
    async fn rules_of(&self, registry: &EcrRegistry, deadline: Instant) -> Arc<[PullThroughRule]> {
        if let Some(rules) = self.rules.get(registry) {
            return rules;
        }
        let read = self.caller.registry.pull_through_rules(registry);
        let rules: Arc<[PullThroughRule]> = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(rules)) => rules.into(),
            Ok(Err(e)) => {
                tracing::warn!(%registry, error = %e, "cannot read the pull-through cache rules; images ECR has not cached are not checked at their upstream");
                Arc::default()
            }
            // Not kept: asked again next time.
            Err(_) => return Arc::default(),
        };
        self.rules.insert(registry.clone(), rules.clone());
        rules
    }
}

/// The upstream of report `report`'s image: `rule`'s registry, repository `name`, the same
/// tag or digest.
fn upstream(report: usize, rule: &PullThroughRule, name: String, id: ImageId) -> Upstream {
    let host = rule.upstream_url.trim_end_matches('/').to_ascii_lowercase();
    let host = host.strip_prefix("https://").unwrap_or(&host).to_owned();
    let registry = match parse_ecr_host(&host) {
        Some(ecr) => RegistryName::Ecr(ecr),
        None => RegistryName::Distribution(host.clone()),
    };
    let shown = match &id {
        ImageId::Tag(t) => format!("{host}/{name}:{t}"),
        ImageId::Digest(d) => format!("{host}/{name}@{d}"),
    };
    Upstream {
        report,
        repo: RepositoryKey::new(registry, name),
        id,
        shown,
        credential_arn: rule.credential_arn.clone(),
    }
}
