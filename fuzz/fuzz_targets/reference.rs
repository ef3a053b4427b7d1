//! Image references: parsing never panics, and what parses formats to something that
//! parses again.
#![no_main]

use ecr_preflight::image::{ImageTarget, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(reference) = Reference::parse(text) {
        let shown = reference.to_string();
        assert!(Reference::parse(&shown).is_ok(), "{text:?} formats to unparsable {shown:?}");
    }
    let _ = ImageTarget::classify(text);
});
