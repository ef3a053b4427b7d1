//! DescribePullThroughCacheRules: which repository prefixes ECR fills from which upstream.

use super::{registry_id, EcrApi};
use crate::image::{EcrRegistry, RepositoryKey};
use crate::registry::{PullThroughRule, RegistryError};

/// More rules than a registry may have (ECR's quota is 50): a longer answer is cut here.
const MAX_RULES: usize = 1_000;

impl EcrApi {
    /// Every pull-through cache rule of `registry`, every page.
    pub(super) async fn describe_pull_through_rules(
        &self,
        registry: &EcrRegistry,
    ) -> Result<Vec<PullThroughRule>, RegistryError> {
        let repo = RepositoryKey::new(registry.clone(), String::new());
        let client = self.client_of(&repo)?;
        let mut rules = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .describe_pull_through_cache_rules()
                .set_registry_id(registry_id(&repo))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(self.failed(&repo, "ecr:DescribePullThroughCacheRules"))?;
            rules.extend(out.pull_through_cache_rules().iter().filter_map(|rule| {
                Some(PullThroughRule {
                    ecr_prefix: rule.ecr_repository_prefix()?.to_owned(),
                    upstream_url: rule.upstream_registry_url()?.to_owned(),
                    upstream_prefix: rule.upstream_repository_prefix().map(str::to_owned),
                    credential_arn: rule.credential_arn().map(str::to_owned),
                })
            }));
            match out.next_token().filter(|t| !t.is_empty()) {
                Some(next) if rules.len() < MAX_RULES => token = Some(next.to_owned()),
                _ => return Ok(rules),
            }
        }
    }
}
