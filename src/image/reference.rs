//! The Docker/OCI image reference grammar (as in distribution's `reference` package), with
//! Docker Hub's normalisation: `nginx` → `docker.io/library/nginx:latest`.
//!
//! Not `oci-spec`'s `distribution::Reference`: it refuses IPv6 hosts, accepts six-digit
//! ports, limits the repository instead of the whole name, and says "invalid reference
//! format" where these errors name the part at fault (docs/performance.md 6).

use std::fmt;

/// Docker Hub's canonical registry name.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
/// distribution caps the whole name (registry and path) at 255 characters.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/nginx`, `team/app`).
    pub repository: String,
    /// Tag as written, or `None`.
    pub tag: Option<String>,
    /// Digest as written (`sha256:…`), or `None`. When present it wins over the tag.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("image reference contains whitespace or control characters")]
    Whitespace,
    #[error("invalid registry host {0:?}")]
    InvalidRegistry(String),
    #[error("invalid repository path component {0:?} (lowercase letters, digits and separators . _ __ - only)")]
    InvalidPathComponent(String),
    #[error("repository name must be lowercase: {0:?}")]
    UppercaseRepository(String),
    #[error("image name longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("invalid tag {0:?} (up to 128 of letters, digits, _ . -; not starting with . or -)")]
    InvalidTag(String),
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    #[error("ECR host names region {0:?}, which is not an AWS region this build knows (the AWS SDK's partitions): check the registry host (a region launched after this release needs a newer ecr-preflight)")]
    UnknownRegion(String),
}

impl Reference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::Whitespace);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/', so a port is never a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let last_colon = rest
            .get(last_slash..)
            .and_then(|tail| tail.rfind(':'))
            .map(|i| last_slash + i);
        let (name, tag) =
            match last_colon.and_then(|at| Some((rest.get(..at)?, rest.get(at + 1..)?))) {
                Some((name, tag)) => (name, Some(tag.to_owned())),
                None => (rest, None),
            };
        if let Some(tag) = &tag {
            validate_tag(tag)?;
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (registry, path) = split_registry(name);
        let registry = match registry {
            Some(host) => {
                validate_host(host)?;
                host.to_owned()
            }
            None => DEFAULT_REGISTRY.to_owned(),
        };
        if path.is_empty() {
            return Err(ReferenceError::InvalidPathComponent(String::new()));
        }
        for component in path.split('/') {
            validate_path_component(component)?;
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        // As distribution does, the limit applies to the normalised name, so that whatever
        // parses also parses again once formatted.
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong);
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag to resolve when there is no digest: the written one, else `latest`.
    pub fn tag_or_default(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        } else if self.digest.is_none() {
            write!(f, ":{DEFAULT_TAG}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first component names a registry when it has a `.` or `:`, is
/// `localhost`, or has an uppercase letter (which a repository never has).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_host(host: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidRegistry(host.to_owned());
    let (hostname, port) = if let Some(inner) = host.strip_prefix('[') {
        // IPv6 literal: `[::1]` or `[::1]:5000`.
        let (addr, after) = inner.split_once(']').ok_or_else(bad)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match host.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    if let Some(hostname) = hostname {
        let label_ok = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if hostname.is_empty() || !hostname.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*`
fn validate_path_component(component: &str) -> Result<(), ReferenceError> {
    let bad = || {
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            ReferenceError::UppercaseRepository(component.to_owned())
        } else {
            ReferenceError::InvalidPathComponent(component.to_owned())
        }
    };
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut chars = component.chars().peekable();
    loop {
        let mut run = 0;
        while chars.next_if(|c| alnum(*c)).is_some() {
            run += 1;
        }
        if run == 0 {
            return Err(bad());
        }
        let mut sep = String::new();
        while let Some(c) = chars.next_if(|c| !alnum(*c)) {
            sep.push(c);
        }
        if sep.is_empty() {
            return Ok(());
        }
        let valid_sep = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !valid_sep {
            return Err(bad());
        }
    }
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = match tag.as_bytes().split_first() {
        Some((&first, rest)) => {
            tag.len() <= MAX_TAG_LEN
                && word(first)
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_owned()))
    }
}

/// `algorithm:encoded`, where sha256 and sha512 must have their exact lowercase hex length
/// and other algorithms at least 32 characters of `[a-zA-Z0-9=_-]`.
pub fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidDigest(digest.to_owned());
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(bad)?;
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = match algorithm {
        "sha256" => encoded.len() == 64 && lower_hex(encoded),
        "sha512" => encoded.len() == 128 && lower_hex(encoded),
        _ => {
            let alg_ok = algorithm.split(['+', '.', '_', '-']).all(|c| {
                c.starts_with(|ch: char| ch.is_ascii_lowercase())
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            alg_ok
                && encoded.len() >= 32
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
        }
    };
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}
