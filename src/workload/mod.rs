//! Which objects carry pod templates, and the containers they name. Reading them from an
//! admission review is the webhook's (src/admission/objects.rs).

use std::borrow::Cow;

pub(crate) mod kind;

pub use kind::{ContainerKind, WorkloadKind};

/// One container and the image it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage<'a> {
    pub name: Cow<'a, str>,
    pub kind: ContainerKind,
    pub image: Cow<'a, str>,
}
