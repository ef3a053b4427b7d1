//! The lifecycle facts through the AWS SDK against the ECR emulator: the policy text (or
//! none), every image with its tags and push time, a repository that does not exist; and a
//! forecast of the emulator's own answers.

mod common;

use std::time::Duration;

use common::seed::{Breakage, Seeder, DOCKER_MANIFEST, REGISTRY};
use ecr_preflight::image::{ImageTarget, RepositoryKey};
use ecr_preflight::lifecycle::{forecast, Action, Policy};
use ecr_preflight::registry::{LifecycleFacts, RegistryError};
use serde_json::json;

fn repo_key(repository: &str) -> RepositoryKey {
    match ImageTarget::classify(&format!("{REGISTRY}/{repository}:x")).expect("reference") {
        ImageTarget::Ecr { repo, .. } => repo,
        ImageTarget::Other(_) => panic!("not ECR"),
    }
}

#[tokio::test]
async fn policy_and_images_from_the_emulator_and_their_forecast() {
    let endpoint = common::moto::endpoint();
    let seeder = Seeder::new(&endpoint);
    let repo = common::unique("lifecycle/app");
    for (tag, seed) in [("v1", "a"), ("v2", "b"), ("v3", "c")] {
        seeder
            .image(
                &repo,
                tag,
                &format!("{repo}-{seed}"),
                1,
                DOCKER_MANIFEST,
                Breakage::default(),
            )
            .await;
    }
    let ecr = common::server::registry(Some(endpoint), Duration::from_secs(5)).await;
    let key = repo_key(&repo);
    assert_eq!(
        ecr.lifecycle_policy(&key).await.expect("no policy yet"),
        None
    );

    let text = json!({"rules": [
        {"rulePriority": 1, "description": "keep two releases", "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 2}, "action": {"type": "expire"}},
        {"rulePriority": 2, "description": "a month at most", "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 30}, "action": {"type": "expire"}}
    ]})
    .to_string();
    seeder
        .client
        .put_lifecycle_policy()
        .repository_name(&repo)
        .lifecycle_policy_text(&text)
        .send()
        .await
        .expect("put policy");
    let got = ecr
        .lifecycle_policy(&key)
        .await
        .expect("policy")
        .expect("some policy");
    let policy = Policy::parse(&got).expect("parses");
    assert_eq!(policy.rules.len(), 2);

    let images = ecr.describe_images(&key).await.expect("images");
    assert_eq!(images.len(), 3, "{images:?}");
    let mut tags: Vec<&str> = images
        .iter()
        .flat_map(|i| i.tags.iter().map(String::as_str))
        .collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2", "v3"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        images.iter().all(|i| (now - i.pushed_at).abs() < 3600),
        "{images:?}"
    );

    // Three v* images and a rule that keeps two: exactly one is due now, by rule 1; the
    // other two are governed by rule 1 too (their tags match it), so the age rule never acts.
    let f = forecast(&policy, &images, now);
    let due: Vec<_> = f.iter().flatten().collect();
    assert_eq!(due.len(), 1, "{f:?}");
    assert_eq!(
        (due[0].rule_priority, due[0].action, due[0].at),
        (1, Action::Expire, now)
    );
}

#[tokio::test]
async fn a_missing_repository_is_not_found() {
    let ecr =
        common::server::registry(Some(common::moto::endpoint()), Duration::from_secs(5)).await;
    let key = repo_key(&common::unique("lifecycle/none"));
    let err = ecr.describe_images(&key).await.expect_err("no repository");
    assert!(
        matches!(err, RegistryError::RepositoryNotFound { .. }),
        "{err:?}"
    );
    let err = ecr.lifecycle_policy(&key).await.expect_err("no repository");
    assert!(
        matches!(err, RegistryError::RepositoryNotFound { .. }),
        "{err:?}"
    );
}
