//! Seeds the ECR emulator through `aws-sdk-ecr`: repositories, blobs and images (single-arch
//! Docker and OCI manifests, OCI indexes with attestations), intact or with blobs missing.
//!
//! Manifest digests are computed here and passed to PutImage, as the emulator does not
//! compute them (see shared TESTBED notes); real ECR would agree with them.

use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecr::primitives::Blob;
use serde_json::json;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn sha256(data: &[u8]) -> String {
    ecr_preflight::manifest::sha256_digest(data)
}

/// An image as pushed: its reference pieces and blob digests.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub config: String,
    pub layers: Vec<String>,
}

impl Pushed {
    pub fn reference(&self) -> String {
        format!("{REGISTRY}/{}:{}", self.repository, self.tag)
    }
    pub fn by_digest(&self) -> String {
        format!("{REGISTRY}/{}@{}", self.repository, self.digest)
    }
}

/// The config blob of an image pushed with `seed` for `arch` (Linux).
pub fn config_blob(seed: &str, arch: &str) -> String {
    format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"seed\":\"{seed}\"}}")
}

/// Writes the config blobs of `images` (each pushed with its seed, for amd64) under
/// `dir/configs/`, one file per blob named `REPOSITORY@DIGEST` with `/` as `~`: what
/// `push_configs` in scripts/lib.sh uploads to an OCI registry.
pub fn write_configs(dir: &std::path::Path, images: &[(&Pushed, &str)]) {
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).expect("mkdir");
    for (pushed, seed) in images {
        let name = format!("{}@{}", pushed.repository.replace('/', "~"), pushed.config);
        std::fs::write(configs.join(name), config_blob(seed, "amd64")).expect("write config");
    }
}

/// What to leave out of the emulator when pushing an image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Breakage {
    /// Indexes of layers never uploaded.
    pub missing_layers: &'static [usize],
    pub missing_config: bool,
}

pub struct Seeder {
    pub client: aws_sdk_ecr::Client,
}

impl Seeder {
    pub fn new(endpoint: &str) -> Self {
        let config = aws_sdk_ecr::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url(endpoint)
            .build();
        Seeder {
            client: aws_sdk_ecr::Client::from_conf(config),
        }
    }

    pub async fn repository(&self, name: &str) {
        match self
            .client
            .create_repository()
            .repository_name(name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if format!("{e:?}").contains("RepositoryAlreadyExists") => {}
            Err(e) => panic!("create repository {name}: {e:?}"),
        }
    }

    /// Uploads a blob and returns its digest.
    pub async fn blob(&self, repository: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let upload = self
            .client
            .initiate_layer_upload()
            .repository_name(repository)
            .send()
            .await
            .expect("initiate upload");
        let id = upload.upload_id().expect("upload id").to_owned();
        self.client
            .upload_layer_part()
            .repository_name(repository)
            .upload_id(&id)
            .part_first_byte(0)
            .part_last_byte(data.len() as i64 - 1)
            .layer_part_blob(Blob::new(data.to_vec()))
            .send()
            .await
            .expect("upload part");
        self.client
            .complete_layer_upload()
            .repository_name(repository)
            .upload_id(&id)
            .layer_digests(&digest)
            .send()
            .await
            .expect("complete upload");
        digest
    }

    /// Stores a manifest under `tag` (if any) with its true digest; returns the digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: Option<&str>,
        manifest: &str,
        media_type: &str,
    ) -> String {
        let digest = sha256(manifest.as_bytes());
        let mut put = self
            .client
            .put_image()
            .repository_name(repository)
            .image_manifest(manifest)
            .image_manifest_media_type(media_type)
            .image_digest(&digest);
        if let Some(tag) = tag {
            put = put.image_tag(tag);
        }
        put.send().await.expect("put image");
        digest
    }

    /// Pushes a single-arch image with `layers` layers whose content is derived from `seed`.
    pub async fn image(
        &self,
        repository: &str,
        tag: &str,
        seed: &str,
        layers: usize,
        media_type: &str,
        broken: Breakage,
    ) -> Pushed {
        self.repository(repository).await;
        let (config, layer_digests, manifest) = self
            .manifest_for(repository, seed, layers, media_type, broken, "amd64")
            .await;
        let digest = self
            .put_manifest(repository, Some(tag), &manifest, media_type)
            .await;
        Pushed {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            digest,
            config,
            layers: layer_digests,
        }
    }

    /// Builds a manifest, uploading every blob it names except those `broken` leaves out.
    async fn manifest_for(
        &self,
        repository: &str,
        seed: &str,
        layers: usize,
        media_type: &str,
        broken: Breakage,
        arch: &str,
    ) -> (String, Vec<String>, String) {
        let docker = media_type == DOCKER_MANIFEST;
        let config_bytes = config_blob(seed, arch);
        let config = if broken.missing_config {
            sha256(config_bytes.as_bytes())
        } else {
            self.blob(repository, config_bytes.as_bytes()).await
        };
        let mut layer_digests = Vec::new();
        for i in 0..layers {
            let data = format!("layer {i} of {seed} for {arch}");
            let digest = if broken.missing_layers.contains(&i) {
                sha256(data.as_bytes())
            } else {
                self.blob(repository, data.as_bytes()).await
            };
            layer_digests.push(digest);
        }
        let (config_type, layer_type) = if docker {
            (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config, "size": config_bytes.len()},
            "layers": layer_digests.iter().map(|d| json!({"mediaType": layer_type, "digest": d, "size": 1024})).collect::<Vec<_>>(),
        });
        (config, layer_digests, manifest.to_string())
    }

    /// Pushes an OCI index with one child per architecture (each possibly broken) and a
    /// buildkit attestation manifest whose blobs are never uploaded.
    pub async fn index(
        &self,
        repository: &str,
        tag: &str,
        seed: &str,
        children: &[(&str, Breakage)],
    ) -> (Pushed, Vec<Pushed>) {
        self.repository(repository).await;
        let mut entries = Vec::new();
        let mut pushed = Vec::new();
        for (arch, broken) in children {
            let (config, layers, manifest) = self
                .manifest_for(
                    repository,
                    &format!("{seed}-{arch}"),
                    2,
                    OCI_MANIFEST,
                    *broken,
                    arch,
                )
                .await;
            let digest = self
                .put_manifest(repository, None, &manifest, OCI_MANIFEST)
                .await;
            entries.push(json!({
                "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
                "platform": {"architecture": arch, "os": "linux"}
            }));
            pushed.push(Pushed {
                repository: repository.to_owned(),
                tag: String::new(),
                digest,
                config,
                layers,
            });
        }
        // An attestation manifest whose blobs are absent: it must never be checked.
        let attestation = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(format!("att-config-{seed}").as_bytes()), "size": 10},
            "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": sha256(format!("att-{seed}").as_bytes()), "size": 10}],
        })
        .to_string();
        let att_digest = self
            .put_manifest(repository, None, &attestation, OCI_MANIFEST)
            .await;
        if let Some(first) = pushed.first() {
            entries.push(json!({
                "mediaType": OCI_MANIFEST, "digest": att_digest, "size": attestation.len(),
                "platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": first.digest}
            }));
        }
        let index =
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string();
        let digest = self
            .put_manifest(repository, Some(tag), &index, OCI_INDEX)
            .await;
        (
            Pushed {
                repository: repository.to_owned(),
                tag: tag.to_owned(),
                digest,
                config: String::new(),
                layers: Vec::new(),
            },
            pushed,
        )
    }
}
