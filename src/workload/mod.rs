//! Which objects carry pod templates, the containers they name, and one reading of a pod
//! spec for the webhook and the controller (`spec.rs`).

use std::borrow::Cow;

pub(crate) mod kind;
pub mod spec;

pub use kind::{ContainerKind, WorkloadKind};

/// One container and the image it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage<'a> {
    pub name: Cow<'a, str>,
    pub kind: ContainerKind,
    pub image: Cow<'a, str>,
}
