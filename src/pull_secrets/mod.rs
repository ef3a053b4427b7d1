//! Registry credentials from a pod's `imagePullSecrets` (`--read-pull-secrets`), chosen for
//! an image as a kubelet chooses them.
//!
//! A Secret of type `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`, `{"auths": {…}}`)
//! or `kubernetes.io/dockercfg` (`.dockercfg`, the entries alone) maps registry keys to
//! credentials (`auth`, base64 of `user:password`, or `username` and `password`). A key is a
//! host, with a port and a path when given (`https://` and a leading `/v1/` or `/v2/` are
//! dropped); its host may hold globs per dot-separated part (`*.example.com`). A key
//! matches an image when its port is the image's, its host has as many parts and each part
//! matches, and its path starts the image's repository path. The most specific key (the
//! greatest in reverse order, as the kubelet sorts them) is used; a Docker Hub image with no
//! match uses the key `index.docker.io`, which `kubectl create secret docker-registry`
//! writes by default. Kubernetes' `pkg/credentialprovider/keyring.go` is the reference.

pub mod login;
mod reader;

use std::collections::BTreeMap;

use base64::Engine as _;

pub use login::{Login, PullLogin};
pub use reader::{SecretReader, SECRETS_KEPT, SECRET_TTL};

/// The credentials of some pull secrets, by registry key.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    /// Sorted by key, greatest first (the most specific of overlapping keys first).
    entries: Vec<(Key, PullLogin)>,
}

/// A registry key of a docker config, as matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    /// `host[:port][/path]`, lowercased, the scheme and `/v1/` or `/v2/` dropped.
    text: String,
}

/// The secret types the kubelet reads credentials from, with the key holding them.
const DOCKER_CONFIG_JSON: (&str, &str) = ("kubernetes.io/dockerconfigjson", ".dockerconfigjson");
const DOCKER_CFG: (&str, &str) = ("kubernetes.io/dockercfg", ".dockercfg");
/// The key Docker Hub's credentials are written under (`index.docker.io/v1/`, as
/// `kubectl create secret docker-registry` writes by default, without its path).
const DOCKER_HUB_KEY: &str = "index.docker.io";
/// More entries than any real docker config has: a hostile Secret costs no more.
const MAX_ENTRIES: usize = 256;

impl Keyring {
    /// The credentials of a Secret of `secret_type` with `data` (decoded); an error for a
    /// pull secret that cannot be read, naming what is wrong and never a value.
    pub fn from_secret(
        secret_type: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Keyring, String> {
        let (json, nested) = if secret_type == DOCKER_CONFIG_JSON.0 {
            (data.get(DOCKER_CONFIG_JSON.1), true)
        } else if secret_type == DOCKER_CFG.0 {
            (data.get(DOCKER_CFG.1), false)
        } else {
            return Err(format!(
                "type {secret_type:?} is not a pull secret ({} or {})",
                DOCKER_CONFIG_JSON.0, DOCKER_CFG.0
            ));
        };
        let json = json.ok_or_else(|| {
            let key = if nested {
                DOCKER_CONFIG_JSON.1
            } else {
                DOCKER_CFG.1
            };
            format!("it has no {key} key")
        })?;
        let mut value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("not JSON ({e})"))?;
        if nested {
            value = value
                .get_mut("auths")
                .map(serde_json::Value::take)
                .ok_or("its docker config has no \"auths\"")?;
        }
        let entries = value
            .as_object()
            .ok_or("its docker config's entries are not an object")?;
        let mut keyring = Keyring::default();
        for (key, entry) in entries.iter().take(MAX_ENTRIES) {
            if let (Some(key), Some(login)) = (Key::parse(key), login_of(entry)) {
                keyring.entries.push((key, PullLogin::new(login)));
            }
        }
        keyring.sort();
        Ok(keyring)
    }

    /// One keyring with the entries of both (as the kubelet joins a pod's secrets).
    pub fn extend(&mut self, other: &Keyring) {
        self.entries.extend(other.entries.iter().cloned());
        self.sort();
    }

    fn sort(&mut self) {
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
        self.entries.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for `repository` in registry `host` (as a normalised reference
    /// names it: `docker.io` for Docker Hub), when a key matches.
    pub fn login_for(&self, host: &str, repository: &str) -> Option<PullLogin> {
        let host = host.to_ascii_lowercase();
        let found = self
            .entries
            .iter()
            .find(|(key, _)| key.matches(&host, repository));
        let docker_hub = || {
            (host == crate::image::DEFAULT_REGISTRY)
                .then(|| {
                    self.entries
                        .iter()
                        .find(|(key, _)| key.text == DOCKER_HUB_KEY)
                })
                .flatten()
        };
        found.or_else(docker_hub).map(|(_, login)| login.clone())
    }
}

impl Key {
    /// A docker config's key, `None` when it names no host.
    fn parse(raw: &str) -> Option<Key> {
        let raw = raw.trim().to_ascii_lowercase();
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .unwrap_or(&raw);
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return None;
        }
        let path = ["/v1/", "/v2/"]
            .iter()
            .find_map(|api| path.starts_with(api).then(|| &path[3..]))
            .unwrap_or(path);
        let path = if path == "/" { "" } else { path };
        Some(Key {
            text: format!("{authority}{path}"),
        })
    }

    /// Whether this key names `repository` of `host`: same port, as many host parts, each
    /// matching its glob, and a path that starts the repository's.
    fn matches(&self, host: &str, repository: &str) -> bool {
        let (authority, path) = match self.text.find('/') {
            Some(slash) => self.text.split_at(slash),
            None => (self.text.as_str(), ""),
        };
        let (key_host, key_port) = split_port(authority);
        let (image_host, image_port) = split_port(host);
        if key_port != image_port || !format!("/{repository}").starts_with(path) {
            return false;
        }
        let key_parts: Vec<&str> = key_host.split('.').collect();
        let image_parts: Vec<&str> = image_host.split('.').collect();
        key_parts.len() == image_parts.len()
            && key_parts.iter().zip(&image_parts).all(|(k, i)| glob(k, i))
    }
}

fn split_port(authority: &str) -> (&str, &str) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, port)
        }
        _ => (authority, ""),
    }
}

/// Shell-style glob of one host part: `*` any run, `?` any one character. (The kubelet's
/// `filepath.Match` also has character classes, which no registry host needs.)
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative match with one back-track point: at most |p|·|t| steps, never recursive.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while let Some(&c) = t.get(ti) {
        match p.get(pi) {
            Some(&q) if q == '?' || q == c => {
                pi += 1;
                ti += 1;
            }
            Some('*') => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p.iter().skip(pi).all(|c| *c == '*')
}

/// The credentials of one docker config entry: `auth` (base64 of `user:password`) wins over
/// `username` and `password`, as in the kubelet.
fn login_of(entry: &serde_json::Value) -> Option<Login> {
    let text = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or_default();
    let auth = text("auth");
    if !auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        return Some(Login {
            user: user.to_owned(),
            password: password.trim_end_matches('\0').to_owned(),
        });
    }
    let (user, password) = (text("username"), text("password"));
    (!user.is_empty() || !password.is_empty()).then(|| Login {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(config: serde_json::Value) -> Keyring {
        let data = BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            config.to_string().into_bytes(),
        )]);
        Keyring::from_secret("kubernetes.io/dockerconfigjson", &data).expect("keyring")
    }

    fn auth(user: &str, password: &str) -> serde_json::Value {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        serde_json::json!({ "auth": encoded })
    }

    fn user_for(ring: &Keyring, host: &str, repository: &str) -> Option<String> {
        ring.login_for(host, repository)
            .map(|l| l.login().user.clone())
    }

    #[test]
    fn keys_match_as_the_kubelet_matches_them() {
        let ring = keyring(serde_json::json!({"auths": {
            "https://index.docker.io/v1/": auth("hub", "p1"),
            "quay.io": auth("quay", "p2"),
            "quay.io/team": auth("team", "p3"),
            "*.registry.example.com": auth("wild", "p4"),
            "localhost:5000": {"username": "local", "password": "p5"},
            "HTTPS://GHCR.IO/v2/": auth("gh", "p6"),
        }}));
        // (host, repository, the user whose credentials are used)
        let cases = [
            ("docker.io", "library/nginx", Some("hub")),
            ("quay.io", "team/app", Some("team")),
            ("quay.io", "other/app", Some("quay")),
            ("eu.registry.example.com", "app", Some("wild")),
            // A glob stands for one part only.
            ("a.b.registry.example.com", "app", None),
            ("localhost:5000", "app", Some("local")),
            ("localhost:5001", "app", None),
            ("localhost", "app", None),
            ("ghcr.io", "org/app", Some("gh")),
            ("gcr.io", "org/app", None),
        ];
        for (host, repository, user) in cases {
            assert_eq!(
                user_for(&ring, host, repository).as_deref(),
                user,
                "{host}/{repository}"
            );
        }
    }

    #[test]
    fn dockercfg_and_joined_secrets() {
        let data = BTreeMap::from([(
            ".dockercfg".to_owned(),
            serde_json::json!({"registry.example.com": auth("old", "p")})
                .to_string()
                .into_bytes(),
        )]);
        let mut ring = Keyring::from_secret("kubernetes.io/dockercfg", &data).expect("dockercfg");
        ring.extend(&keyring(
            serde_json::json!({"auths": {"registry.example.com/team": auth("new", "q")}}),
        ));
        assert_eq!(
            user_for(&ring, "registry.example.com", "team/app").as_deref(),
            Some("new")
        );
        assert_eq!(
            user_for(&ring, "registry.example.com", "app").as_deref(),
            Some("old")
        );
    }

    #[test]
    fn secrets_that_are_not_pull_secrets_say_why_without_values() {
        let opaque = Keyring::from_secret("Opaque", &BTreeMap::new()).expect_err("opaque");
        assert!(opaque.contains("not a pull secret"), "{opaque}");
        let empty = Keyring::from_secret("kubernetes.io/dockerconfigjson", &BTreeMap::new())
            .expect_err("no key");
        assert!(empty.contains(".dockerconfigjson"), "{empty}");
        let data = BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            b"{\"auths\": \"hunter2\"}".to_vec(),
        )]);
        let bad =
            Keyring::from_secret("kubernetes.io/dockerconfigjson", &data).expect_err("bad shape");
        assert!(!bad.contains("hunter2"), "{bad}");
        // An entry whose auth is not base64 of user:password is left out, not guessed.
        let ring = keyring(serde_json::json!({"auths": {"a.io": {"auth": "%%%"}, "b.io": {}}}));
        assert!(ring.is_empty());
    }

    #[test]
    fn logins_are_told_apart_by_fingerprint_and_never_show_the_password() {
        let login = |password: &str| {
            PullLogin::new(Login {
                user: "u".into(),
                password: password.into(),
            })
        };
        let (a, b) = (login("secret-one"), login("secret-two"));
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn globs_match_one_part_and_never_backtrack_without_bound() {
        assert!(glob("*", "anything"));
        assert!(glob("eu-*", "eu-west"));
        assert!(glob("r?g", "reg"));
        assert!(!glob("eu-*", "us-west"));
        let long = "a".repeat(10_000);
        assert!(!glob(&"*a".repeat(50), &format!("{long}b")));
    }
}
