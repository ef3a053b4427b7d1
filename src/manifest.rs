//! Manifests as ECR stores them: Docker schema 2 and OCI image manifests, Docker manifest
//! lists and OCI indexes, parsed with `oci-spec` into what the check needs.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Sent as `acceptedMediaTypes` so ECR returns indexes as they are, not converted.
pub const ACCEPTED_MEDIA_TYPES: [&str; 4] = [
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
];

/// ECR caps manifests at 4 MiB; anything larger is refused unread.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// More children than any real multi-arch index has; bounds the fan-out of one image.
pub const MAX_INDEX_CHILDREN: usize = 256;
/// Far above real images (Docker caps layers at 127); bounds the blob checks of one image.
pub const MAX_LAYERS: usize = 1000;

/// An `os/architecture[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// A wanted platform matches a child of the same os and architecture; a variant only
    /// narrows the match when the wanted platform names one.
    pub fn matches(&self, child: &Platform) -> bool {
        self.os == child.os
            && self.architecture == child.architecture
            && (self.variant.is_none() || self.variant == child.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "invalid platform {s:?}: expected os/architecture[/variant], e.g. linux/arm64"
            )),
        }
    }
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub digest: String,
    pub platform: Option<Platform>,
    /// Build attestations (`unknown/unknown`, or Docker's attestation reference type) are
    /// not images and are never pulled.
    pub attestation: bool,
}

/// What a manifest says the check must look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// The config blob first, then every distributable layer, in manifest order.
    Image {
        blobs: Vec<String>,
    },
    Index {
        children: Vec<Child>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("unsupported manifest media type {0}")]
    Unsupported(String),
    #[error("malformed manifest: {0}")]
    Malformed(String),
    #[error("manifest has more than {0} entries")]
    TooManyEntries(usize),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// The content digest of `bytes`: `sha256:` and 64 lower-case hexadecimal digits.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::from("sha256:"), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Parses a manifest; `media_type` is ECR's `imageManifestMediaType` when it gave one.
pub fn parse(bytes: &str, media_type: Option<&str>) -> Result<Manifest, ManifestError> {
    let probe: Probe = decode(bytes)?;
    let kind = media_type
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .or(probe.media_type)
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
    match kind.as_str() {
        DOCKER_MANIFEST | OCI_MANIFEST => parse_image(bytes),
        DOCKER_MANIFEST_LIST | OCI_INDEX => parse_index(bytes),
        other => Err(ManifestError::Unsupported(other.to_owned())),
    }
}

/// Decodes `bytes` as `T`, within the size limit.
fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a str) -> Result<T, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    serde_json::from_str(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))
}

/// An image manifest within the size and layer limits.
fn image_manifest(bytes: &str) -> Result<ImageManifest, ManifestError> {
    let manifest: ImageManifest = decode(bytes)?;
    if manifest.layers().len() > MAX_LAYERS {
        return Err(ManifestError::TooManyEntries(MAX_LAYERS));
    }
    Ok(manifest)
}

fn parse_image(bytes: &str) -> Result<Manifest, ManifestError> {
    let manifest = image_manifest(bytes)?;
    let mut blobs = Vec::with_capacity(manifest.layers().len() + 1);
    blobs.push(manifest.config().digest().to_string());
    for layer in manifest.layers() {
        if !is_foreign(layer) {
            blobs.push(layer.digest().to_string());
        }
    }
    Ok(Manifest::Image { blobs })
}

fn parse_index(bytes: &str) -> Result<Manifest, ManifestError> {
    let index: ImageIndex = decode(bytes)?;
    if index.manifests().len() > MAX_INDEX_CHILDREN {
        return Err(ManifestError::TooManyEntries(MAX_INDEX_CHILDREN));
    }
    let children = index
        .manifests()
        .iter()
        .map(|d| {
            let platform = d.platform().as_ref().map(|p| Platform {
                os: p.os().to_string(),
                architecture: p.architecture().to_string(),
                variant: p.variant().clone(),
            });
            let unknown_platform = platform
                .as_ref()
                .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
            let attestation_annotation = d.annotations().as_ref().is_some_and(|a| {
                a.get("vnd.docker.reference.type")
                    .is_some_and(|v| v == "attestation-manifest")
            });
            Child {
                digest: d.digest().to_string(),
                platform,
                attestation: unknown_platform || attestation_annotation,
            }
        })
        .collect();
    Ok(Manifest::Index { children })
}

/// Windows base layers and other non-distributable blobs are pulled from elsewhere, never
/// from ECR, so their absence there is normal.
fn is_foreign(layer: &Descriptor) -> bool {
    let media_type = layer.media_type().to_string();
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

/// A blob of an image manifest with its role, for people: `config`, `layer 1`, `layer 2`….
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoledBlob {
    pub role: String,
    pub digest: String,
    pub media_type: String,
    /// Non-distributable (e.g. a Windows base layer): pulled from elsewhere, not from ECR.
    pub foreign: bool,
}

/// Every blob of an image manifest, foreign ones included, in manifest order.
pub fn roled_blobs(bytes: &str) -> Result<Vec<RoledBlob>, ManifestError> {
    let manifest = image_manifest(bytes)?;
    let config = manifest.config();
    let mut out = vec![RoledBlob {
        role: "config".into(),
        digest: config.digest().to_string(),
        media_type: config.media_type().to_string(),
        foreign: false,
    }];
    for (n, layer) in manifest.layers().iter().enumerate() {
        out.push(RoledBlob {
            role: format!("layer {}", n + 1),
            digest: layer.digest().to_string(),
            media_type: layer.media_type().to_string(),
            foreign: is_foreign(layer),
        });
    }
    Ok(out)
}
