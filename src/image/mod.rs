//! Image references: the grammar, and whether a reference lives in Amazon ECR.

mod ecr_host;
mod reference;

pub use ecr_host::{known_region, known_regions, parse_ecr_host, EcrRegistry, PARTITION_SUFFIXES};
pub use reference::{validate_digest, Reference, ReferenceError, DEFAULT_REGISTRY};

/// What to ask ECR for: a tag to resolve, or a digest (which wins over any tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageId {
    Tag(String),
    Digest(String),
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageId::Tag(t) => write!(f, "tag {t}"),
            ImageId::Digest(d) => write!(f, "digest {d}"),
        }
    }
}

/// The registry an image lives in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegistryName {
    /// An Amazon ECR private registry, asked through ECR's API.
    Ecr(EcrRegistry),
    /// Any other registry, asked through the OCI Distribution API: its host (and port) as
    /// the normalised reference names it (`docker.io` for Docker Hub).
    Distribution(String),
}

impl RegistryName {
    /// The ECR registry, when this is one.
    pub fn ecr(&self) -> Option<&EcrRegistry> {
        match self {
            RegistryName::Ecr(registry) => Some(registry),
            RegistryName::Distribution(_) => None,
        }
    }
}

impl std::fmt::Display for RegistryName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryName::Ecr(registry) => registry.fmt(f),
            RegistryName::Distribution(host) => f.write_str(host),
        }
    }
}

impl From<EcrRegistry> for RegistryName {
    fn from(registry: EcrRegistry) -> Self {
        RegistryName::Ecr(registry)
    }
}

/// A repository in one registry: the unit the batch calls work on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryKey {
    pub registry: RegistryName,
    pub repository: String,
}

impl std::fmt::Display for RepositoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "repository {} in registry {}",
            self.repository, self.registry
        )
    }
}

/// An image reference classified for checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageTarget {
    /// Lives in ECR: check it.
    Ecr { repo: RepositoryKey, id: ImageId },
    /// Any other registry: not checked (yet).
    Other(Reference),
}

impl ImageTarget {
    /// Parses `image` and decides whether ECR serves it.
    pub fn classify(image: &str) -> Result<Self, ReferenceError> {
        let reference = Reference::parse(image)?;
        let Some(registry) = parse_ecr_host(&reference.registry) else {
            return Ok(ImageTarget::Other(reference));
        };
        if !known_region(&registry.region) {
            return Err(ReferenceError::UnknownRegion(registry.region));
        }
        let id = match &reference.digest {
            Some(digest) => ImageId::Digest(digest.clone()),
            None => ImageId::Tag(reference.tag_or_default().to_owned()),
        };
        Ok(ImageTarget::Ecr {
            repo: RepositoryKey {
                registry: registry.into(),
                repository: reference.repository,
            },
            id,
        })
    }
}
