//! Image references: the grammar, and whether a reference lives in Amazon ECR.

mod ecr_host;
mod reference;

pub use ecr_host::{known_region, known_regions, parse_ecr_host, EcrRegistry, PARTITION_SUFFIXES};
pub use reference::{validate_digest, Reference, ReferenceError, DEFAULT_REGISTRY};

use crate::pull_secrets::login::PullLogin;

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
    /// How messages name it: `ECR`, or `registry <host>`.
    pub fn spoken(&self) -> String {
        match self {
            RegistryName::Ecr(_) => "ECR".to_owned(),
            RegistryName::Distribution(host) => format!("registry {host}"),
        }
    }

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

/// A repository in one registry, as reached with one pull secret's credentials or none:
/// the unit the batch calls work on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryKey {
    pub registry: RegistryName,
    pub repository: String,
    /// A pod's pull secret's credentials for a registry other than ECR's
    /// (`--read-pull-secrets`): requests with other credentials are never batched with
    /// these. What the engine learns is kept without them (see [`RepositoryKey::facts`]).
    pub login: Option<PullLogin>,
}

impl RepositoryKey {
    pub fn new(registry: impl Into<RegistryName>, repository: impl Into<String>) -> Self {
        RepositoryKey {
            registry: registry.into(),
            repository: repository.into(),
            login: None,
        }
    }

    /// The key the facts learned through this one are kept under: a tag's digest, a
    /// manifest, a blob's existence are the same whichever credentials asked.
    pub fn facts(&self) -> RepositoryKey {
        RepositoryKey {
            login: None,
            ..self.clone()
        }
    }
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
            repo: RepositoryKey::new(registry, reference.repository),
            id,
        })
    }
}

/// Which registries besides ECR's are checked (`--registries`): ECR images always are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Registries {
    /// Every registry.
    All,
    /// ECR's only: any other image is `skipped`.
    #[default]
    Ecr,
    /// ECR's and these hosts, as normalised references name them (`docker.io` for Docker
    /// Hub).
    Hosts(std::collections::BTreeSet<String>),
}

impl Registries {
    /// The repository and id `image` is checked at; `None` when it is not checked.
    pub fn target(&self, image: &str) -> Result<Option<(RepositoryKey, ImageId)>, ReferenceError> {
        Ok(match ImageTarget::classify(image)? {
            ImageTarget::Ecr { repo, id } => Some((repo, id)),
            ImageTarget::Other(reference) => self.covers(&reference.registry).then(|| {
                let id = match &reference.digest {
                    Some(digest) => ImageId::Digest(digest.clone()),
                    None => ImageId::Tag(reference.tag_or_default().to_owned()),
                };
                let repo = RepositoryKey::new(
                    RegistryName::Distribution(reference.registry.to_ascii_lowercase()),
                    reference.repository,
                );
                (repo, id)
            }),
        })
    }

    /// Whether images of `host` (not ECR's) are checked.
    pub fn covers(&self, host: &str) -> bool {
        match self {
            Registries::All => true,
            Registries::Ecr => false,
            Registries::Hosts(hosts) => hosts.contains(&host.to_ascii_lowercase()),
        }
    }
}

impl std::str::FromStr for Registries {
    type Err = String;

    /// `all`, `ecr`, or hosts separated by commas (`ghcr.io,quay.io`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" => return Ok(Registries::All),
            "ecr" => return Ok(Registries::Ecr),
            _ => {}
        }
        let mut hosts = std::collections::BTreeSet::new();
        for host in s.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            if host == "all" || host == "ecr" {
                return Err(format!(
                    "--registries: {host:?} stands alone, not in a list of hosts"
                ));
            }
            if parse_ecr_host(host).is_some() {
                return Err(format!(
                    "--registries: {host} is an ECR registry, always checked; list other registries' hosts"
                ));
            }
            // A host is what a reference's first component is: checked by the same grammar.
            Reference::parse(&format!("{host}/x"))
                .ok()
                .filter(|r| r.registry.eq_ignore_ascii_case(host))
                .ok_or_else(|| format!("--registries: {host:?} is not a registry host"))?;
            hosts.insert(host.to_ascii_lowercase());
        }
        if hosts.is_empty() {
            return Err(
                "--registries: give all, ecr, or registry hosts separated by commas".into(),
            );
        }
        Ok(Registries::Hosts(hosts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_all_ecr_or_a_list_of_hosts() {
        assert_eq!("all".parse::<Registries>(), Ok(Registries::All));
        assert_eq!("ecr".parse::<Registries>(), Ok(Registries::Ecr));
        let hosts: Registries = "ghcr.io, Quay.io,localhost:5000".parse().expect("hosts");
        assert!(
            hosts.covers("ghcr.io") && hosts.covers("quay.io") && hosts.covers("localhost:5000")
        );
        assert!(!hosts.covers("docker.io"));
        for bad in [
            "",
            "all,ghcr.io",
            "ghcr.io/x",
            "-bad.io",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        ] {
            assert!(bad.parse::<Registries>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_image_is_checked_where_its_registry_is_covered() {
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1";
        for registries in [Registries::Ecr, Registries::All] {
            let (repo, _) = registries.target(ecr).expect("valid").expect("checked");
            assert!(repo.registry.ecr().is_some());
        }
        assert_eq!(Registries::Ecr.target("nginx").expect("valid"), None);
        let (repo, id) = Registries::All
            .target("nginx")
            .expect("valid")
            .expect("checked");
        assert_eq!(
            repo.registry,
            RegistryName::Distribution("docker.io".into())
        );
        assert_eq!(repo.repository, "library/nginx");
        assert_eq!(id, ImageId::Tag("latest".into()));
        let only: Registries = "ghcr.io".parse().expect("hosts");
        assert_eq!(only.target("nginx:1").expect("valid"), None);
        assert!(only.target("ghcr.io/org/tool@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").expect("valid").is_some());
        assert!(Registries::All.target("NOT VALID").is_err());
    }
}
