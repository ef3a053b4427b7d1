//! Property: formatting a parsed reference and parsing it again gives the same (normalised)
//! reference, for references generated from the grammar; and no string panics the parser.

use ecr_preflight::image::Reference;
use proptest::prelude::*;

fn registry() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("docker.io".to_owned())),
        Just(Some("localhost:5000".to_owned())),
        Just(Some("[::1]:5000".to_owned())),
        Just(Some(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com".to_owned()
        )),
        "[a-z][a-z0-9-]{0,8}[a-z0-9]\\.(io|com)(:[0-9]{1,5})?".prop_map(Some),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,2}", 1..4)
        .prop_map(|c| c.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_format_parse_round_trips(
        registry in registry(),
        path in path(),
        tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}"),
        digest in proptest::option::of("[0-9a-f]{64}"),
    ) {
        // Without a registry, a first component with a dot would name a host (Docker's rule).
        let looks_like_host = path.split('/').next().is_some_and(|c| c.contains('.') || c == "localhost");
        let registry = if registry.is_none() && looks_like_host { Some("docker.io".to_owned()) } else { registry };
        let mut text = match &registry {
            Some(r) => format!("{r}/{path}"),
            None => path.clone(),
        };
        if let Some(t) = &tag {
            text.push(':');
            text.push_str(t);
        }
        if let Some(d) = &digest {
            text.push_str("@sha256:");
            text.push_str(d);
        }
        let parsed = Reference::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(parsed.tag.as_deref(), tag.as_deref());
        prop_assert_eq!(parsed.digest.clone(), digest.map(|d| format!("sha256:{d}")));
        let shown = parsed.to_string();
        let again = Reference::parse(&shown).map_err(|e| TestCaseError::fail(format!("{shown:?}: {e}")))?;
        // The formatted reference is the normalised one: the default tag is written out.
        prop_assert_eq!(&again.registry, &parsed.registry);
        prop_assert_eq!(&again.repository, &parsed.repository);
        prop_assert_eq!(&again.digest, &parsed.digest);
        if parsed.digest.is_none() {
            prop_assert_eq!(again.tag_or_default(), parsed.tag_or_default());
        } else {
            prop_assert_eq!(&again.tag, &parsed.tag);
        }
        prop_assert_eq!(again.to_string(), shown);
    }

    #[test]
    fn arbitrary_strings_never_panic(text in "\\PC{0,300}") {
        let _ = Reference::parse(&text);
    }
}
