//! The admission path, request body to decision, against an in-memory registry: never a
//! panic, always an answer or a client error; and the pull reader agrees with serde_json.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ecr_preflight::admission::review::ReviewView;
use ecr_preflight::admission::{evaluate, OwnedObjects, Policy};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::decision::{Mode, OnError};
use ecr_preflight::image::{ImageId, RepositoryKey};
use ecr_preflight::registry::{BatchGetImageOutput, BlobState, FetchedManifest, LayerAvailabilityOutput, Registry, RegistryError};
use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},
"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1}]}"#;

/// Every tag resolves to one small image; blobs whose digest ends in 2 are missing.
struct Fixed;

impl Registry for Fixed {
    fn batch_get_image<'a>(&'a self, _: &'a RepositoryKey, ids: &'a [ImageId]) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        Box::pin(async move {
            let images = ids
                .iter()
                .map(|id| FetchedManifest {
                    tag: match id {
                        ImageId::Tag(t) => Some(t.clone()),
                        ImageId::Digest(_) => None,
                    },
                    digest: Some("sha256:3333333333333333333333333333333333333333333333333333333333333333".into()),
                    media_type: None,
                    manifest: MANIFEST.into(),
                })
                .collect();
            Ok(BatchGetImageOutput { images, failures: vec![] })
        })
    }

    fn batch_check_layer_availability<'a>(&'a self, _: &'a RepositoryKey, digests: &'a [String]) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        Box::pin(async move {
            let blobs = digests
                .iter()
                .map(|d| (d.clone(), if d.ends_with('2') { BlobState::Missing } else { BlobState::Available }))
                .collect();
            Ok(LayerAvailabilityOutput { blobs, ..Default::default() })
        })
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(Arc::new(Fixed), EngineSettings::new(vec!["linux/amd64".parse().unwrap()])))
}

fuzz_target!(|data: &[u8]| {
    // The hot-path reader reads whatever serde_json reads, to the same view (bodies must be
    // UTF-8 as RFC 8259 says; serde_json does not look inside strings it skips).
    let reference = std::str::from_utf8(data).ok().and_then(|_| ReviewView::parse_with_serde(data).ok());
    if let Some(reference) = reference {
        let fast = ReviewView::parse(data);
        if data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            // serde_json also reads a struct written as the array of its fields (`[null]`);
            // a review is an object, and the hot-path reader refuses anything else.
            assert!(fast.is_err(), "{fast:?}");
        } else {
            assert_eq!(fast.as_ref().ok(), Some(&reference), "{fast:?}");
        }
    }
    let policy = Policy { mode: Mode::Enforce, on_error: OnError::Allow, owned_objects: OwnedObjects::Audit };
    if let Ok(reviewed) = runtime().block_on(evaluate(engine(), policy, Default::default(), data, Duration::from_secs(1))) {
        assert!(reviewed.to_json().is_ok());
    }
});
