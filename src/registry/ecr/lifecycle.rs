//! The lifecycle calls of ECR (GetLifecyclePolicy, DescribeImages, the lifecycle policy
//! preview, image restores) behind [`LifecycleFacts`]: what the forecasts of
//! [`crate::lifecycle`] read and what `--restore-archived-in-use` asks for.

use aws_sdk_ecr::types::{
    DescribeImagesFilter, ImageStatusFilter, LifecyclePolicyPreviewStatus, TagStatus,
    TargetStorageClass,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{identifier, registry_id, EcrApi};
use crate::image::{ImageId, RepositoryKey};
use crate::lifecycle::{Action, ImageFacts, ImageStatus};
use crate::registry::{
    LifecycleFacts, Preview, PreviewAction, RegistryError, Restore, MAX_DESCRIBED_IMAGES,
};

impl LifecycleFacts for EcrApi {
    fn lifecycle_policy<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        async move {
            let answer = self
                .client_of(repo)?
                .get_lifecycle_policy()
                .set_registry_id(registry_id(repo))
                .repository_name(&repo.repository)
                .send()
                .await
                .map_err(self.failed(repo, "ecr:GetLifecyclePolicy"));
            match answer {
                Ok(out) => Ok(out.lifecycle_policy_text().map(str::to_owned)),
                Err(RegistryError::Service { code, .. })
                    if code == "LifecyclePolicyNotFoundException" =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
        .boxed()
    }

    fn describe_images<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Vec<ImageFacts>, RegistryError>> {
        async move {
            let client = self.client_of(repo)?;
            let mut facts: Vec<ImageFacts> = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = client
                    .describe_images()
                    .set_registry_id(registry_id(repo))
                    .repository_name(&repo.repository)
                    // Archived images too: by default DescribeImages lists active ones only,
                    // and archive rules count archived images.
                    .filter(
                        DescribeImagesFilter::builder()
                            .tag_status(TagStatus::Any)
                            .image_status(ImageStatusFilter::Any)
                            .build(),
                    )
                    .max_results(1000)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(self.failed(repo, "ecr:DescribeImages"))?;
                facts.extend(out.image_details().iter().filter_map(image_facts));
                if facts.len() > MAX_DESCRIBED_IMAGES {
                    return Err(RegistryError::Service {
                        code: "TooManyImages".to_owned(),
                        message: format!(
                            "DescribeImages listed more than {MAX_DESCRIBED_IMAGES} images"
                        ),
                    });
                }
                match out.next_token().filter(|t| !t.is_empty()) {
                    Some(next) => token = Some(next.to_owned()),
                    None => return Ok(facts),
                }
            }
        }
        .boxed()
    }

    fn restore<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        id: &'a ImageId,
    ) -> BoxFuture<'a, Result<Restore, RegistryError>> {
        async move {
            let client = self.client_of(repo)?;
            // A restore under way is not asked for again (another replica, or a person,
            // started it): DescribeImages tells it as ACTIVATING.
            let described = client
                .describe_images()
                .set_registry_id(registry_id(repo))
                .repository_name(&repo.repository)
                .image_ids(identifier(id))
                .send()
                .await
                .map_err(self.failed(repo, "ecr:DescribeImages"))?;
            let activating = described
                .image_details()
                .iter()
                .any(|d| d.image_status() == Some(&aws_sdk_ecr::types::ImageStatus::Activating));
            if activating {
                return Ok(Restore::UnderWay);
            }
            client
                .update_image_storage_class()
                .set_registry_id(registry_id(repo))
                .repository_name(&repo.repository)
                .image_id(identifier(id))
                .target_storage_class(TargetStorageClass::Standard)
                .send()
                .await
                .map(|_| Restore::Started)
                .map_err(self.failed(repo, "ecr:UpdateImageStorageClass"))
        }
        .boxed()
    }

    fn start_preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        async move {
            self.client_of(repo)?
                .start_lifecycle_policy_preview()
                .set_registry_id(registry_id(repo))
                .repository_name(&repo.repository)
                .send()
                .await
                .map(|_| ())
                .map_err(self.failed(repo, "ecr:StartLifecyclePolicyPreview"))
        }
        .boxed()
    }

    fn preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Preview, RegistryError>> {
        async move {
            let client = self.client_of(repo)?;
            let mut actions: Vec<PreviewAction> = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = client
                    .get_lifecycle_policy_preview()
                    .set_registry_id(registry_id(repo))
                    .repository_name(&repo.repository)
                    .max_results(100)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(self.failed(repo, "ecr:GetLifecyclePolicyPreview"))?;
                match out.status() {
                    Some(LifecyclePolicyPreviewStatus::Complete) => {}
                    Some(LifecyclePolicyPreviewStatus::InProgress) | None => {
                        return Ok(Preview::InProgress)
                    }
                    Some(other) => return Ok(Preview::Failed(other.as_str().to_owned())),
                }
                actions.extend(out.preview_results().iter().filter_map(preview_action));
                if actions.len() > MAX_DESCRIBED_IMAGES {
                    return Ok(Preview::Failed("more than 100,000 results".to_owned()));
                }
                match out.next_token().filter(|t| !t.is_empty()) {
                    Some(next) => token = Some(next.to_owned()),
                    None => return Ok(Preview::Complete(actions)),
                }
            }
        }
        .boxed()
    }
}

/// One DescribeImages entry as the evaluator reads it. Without a push time the image counts
/// as pushed at the epoch: the reading that warns earliest.
fn image_facts(d: &aws_sdk_ecr::types::ImageDetail) -> Option<ImageFacts> {
    use aws_sdk_ecr::types::ImageStatus as Status;
    let secs = |t: &aws_sdk_ecr::primitives::DateTime| t.secs();
    let mut facts = ImageFacts::pushed(
        d.image_digest()?,
        d.image_tags().to_vec(),
        d.image_pushed_at().map_or(0, secs),
    );
    facts.last_pulled = d.last_recorded_pull_time().map(secs);
    facts.status = match d.image_status() {
        Some(Status::Archived) => ImageStatus::Archived,
        Some(Status::Activating) => ImageStatus::Activating,
        _ => ImageStatus::Active,
    };
    facts.archived_at = d.last_archived_at().map(secs);
    facts.last_activated = d.last_activated_at().map(secs);
    Some(facts)
}

/// One preview result as the cross-check reads it; results without a digest or a known
/// action are left out.
fn preview_action(r: &aws_sdk_ecr::types::LifecyclePolicyPreviewResult) -> Option<PreviewAction> {
    use aws_sdk_ecr::types::ImageActionType;
    let action = match r.action()?.r#type()? {
        ImageActionType::Expire => Action::Expire,
        ImageActionType::Transition => Action::Archive,
        _ => return None,
    };
    Some(PreviewAction {
        digest: r.image_digest()?.to_owned(),
        rule_priority: u32::try_from(r.applied_rule_priority()?).ok()?,
        action,
    })
}
