//! Credentials for a registry, and their identity.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Basic credentials for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A [`Login`] that tells itself apart from others by a fingerprint: requests made with
/// different credentials are never batched together, nor share a token.
#[derive(Clone)]
pub struct PullLogin {
    login: Arc<Login>,
    /// SHA-256 of user and password, cut to 16 bytes: an identity, never shown.
    id: [u8; 16],
}

impl PullLogin {
    pub fn new(login: Login) -> Self {
        let mut hash = Sha256::new();
        hash.update(login.user.as_bytes());
        hash.update([0]);
        hash.update(login.password.as_bytes());
        let mut id = [0u8; 16];
        for (slot, byte) in id.iter_mut().zip(hash.finalize()) {
            *slot = byte;
        }
        PullLogin {
            login: Arc::new(login),
            id,
        }
    }

    pub fn login(&self) -> &Login {
        &self.login
    }
}

impl std::fmt::Debug for PullLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.login.fmt(f)
    }
}

impl PartialEq for PullLogin {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for PullLogin {}
impl std::hash::Hash for PullLogin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}
impl PartialOrd for PullLogin {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PullLogin {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}
