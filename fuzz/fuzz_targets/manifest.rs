//! Manifests and indexes as ECR returns them: parsing never panics, whatever the bytes and
//! the media type claimed.
#![no_main]

use ecr_preflight::manifest::{self, ACCEPTED_MEDIA_TYPES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let media_type = ACCEPTED_MEDIA_TYPES.get(usize::from(selector) % 5).copied();
    let _ = manifest::parse(text, media_type);
    let _ = manifest::roled_blobs(text);
});
