//! The lifecycle evaluator as tables: policies ECR refuses, tag matching, the documented
//! examples with their stated outcomes, archive and pull rules; and properties that hold for
//! any policy and repository.

use ecr_preflight::lifecycle::{forecast, wildcard_match, Action, ImageFacts, ImageStatus, Policy};
use proptest::prelude::*;
use serde_json::json;

const DAY: i64 = 86_400;
const NOW: i64 = 1_800_000_000;

fn image(digest: &str, tags: &[&str], pushed_days_ago: i64) -> ImageFacts {
    ImageFacts::pushed(
        digest,
        tags.iter().map(|t| (*t).to_owned()).collect(),
        NOW - pushed_days_ago * DAY,
    )
}

fn policy(rules: serde_json::Value) -> Policy {
    Policy::parse(&json!({ "rules": rules }).to_string()).expect("policy")
}

fn rule(
    priority: u32,
    selection: serde_json::Value,
    action: serde_json::Value,
) -> serde_json::Value {
    json!({"rulePriority": priority, "description": format!("Rule {priority}"), "selection": selection, "action": action})
}

fn expire() -> serde_json::Value {
    json!({"type": "expire"})
}

/// (digest, days from now the first action is due (0: now), action, rule) per image acted on.
fn outcome(p: &Policy, images: &[ImageFacts]) -> Vec<(String, i64, &'static str, u32)> {
    images
        .iter()
        .zip(forecast(p, images, NOW))
        .filter_map(|(i, f)| {
            f.map(|f| {
                (
                    i.digest.clone(),
                    (f.at - NOW) / DAY,
                    f.action.as_str(),
                    f.rule_priority,
                )
            })
        })
        .collect()
}

#[test]
fn policies_ecr_refuses_are_refused_with_the_reason() {
    let sel = |extra: serde_json::Value| {
        let mut s = json!({"tagStatus": "tagged", "tagPrefixList": ["prod"], "countType": "imageCountMoreThan", "countNumber": 1});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                s.as_object_mut().expect("object").remove(k);
            } else {
                s[k] = v.clone();
            }
        }
        s
    };
    let cases = [
        (
            json!([
                rule(1, sel(json!({})), expire()),
                rule(1, sel(json!({})), expire())
            ]),
            "two rules have rulePriority 1",
        ),
        (
            json!([
                rule(
                    1,
                    json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}),
                    expire()
                ),
                rule(2, sel(json!({})), expire())
            ]),
            "must be the last rule",
        ),
        (
            json!([rule(1, sel(json!({"tagPrefixList": null})), expire())]),
            "needs a tagPrefixList or a tagPatternList",
        ),
        (
            json!([rule(1, sel(json!({"tagPatternList": ["p*"]})), expire())]),
            "not both",
        ),
        (
            json!([rule(1, sel(json!({"tagStatus": "untagged"})), expire())]),
            "takes no tagPrefixList",
        ),
        (
            json!([rule(
                1,
                sel(json!({"tagPrefixList": null, "tagPatternList": ["test*1*2*3*4*5*6"]})),
                expire()
            )]),
            "more than 4 wildcards",
        ),
        (
            json!([rule(
                1,
                sel(json!({"countType": "sinceImagePushed"})),
                expire()
            )]),
            "needs countUnit days",
        ),
        (
            json!([rule(1, sel(json!({"countUnit": "days"})), expire())]),
            "takes no countUnit",
        ),
        (
            json!([rule(1, sel(json!({"countNumber": 0})), expire())]),
            "countNumber 0",
        ),
        (
            json!([rule(1, sel(json!({})), json!({"type": "transition"}))]),
            "targetStorageClass archive",
        ),
        (
            json!([rule(
                1,
                sel(json!({"countType": "sinceImageTransitioned", "countUnit": "days"})),
                expire()
            )]),
            "storageClass archive",
        ),
        (
            json!([rule(1, sel(json!({"tagStatus": "sometimes"})), expire())]),
            "unknown tagStatus",
        ),
        // Only one rule may select untagged images in a storage class.
        (
            json!([
                rule(
                    1,
                    json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5}),
                    expire()
                ),
                rule(
                    2,
                    json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 30}),
                    expire()
                )
            ]),
            "rules 1 and 2 both select untagged images of storage class standard",
        ),
        (
            json!([
                rule(
                    1,
                    json!({"tagStatus": "untagged", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90}),
                    expire()
                ),
                rule(
                    2,
                    json!({"tagStatus": "untagged", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 180}),
                    expire()
                )
            ]),
            "both select untagged images of storage class archive",
        ),
        // An `any` rule is the last of its storage class, whatever the other class has.
        (
            json!([
                rule(
                    1,
                    json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90}),
                    expire()
                ),
                rule(
                    2,
                    json!({"tagStatus": "tagged", "tagPrefixList": ["old"], "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 30}),
                    expire()
                )
            ]),
            "must be the last rule of storage class archive (rule 2 comes after it)",
        ),
        (
            json!([rule(
                1,
                json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30}),
                expire()
            )]),
            "sinceImagePulled can only archive",
        ),
        (
            json!([rule(
                1,
                json!({"tagStatus": "any", "storageClass": "archive", "countType": "imageCountMoreThan", "countNumber": 30}),
                expire()
            )]),
            "storageClass archive takes countType sinceImageTransitioned",
        ),
    ];
    for (rules, says) in cases {
        let err = Policy::parse(&json!({ "rules": rules }).to_string()).expect_err(says);
        assert!(err.to_string().contains(says), "{err} / {says}");
    }
    assert!(Policy::parse("{not json")
        .expect_err("json")
        .to_string()
        .contains("not valid JSON"));
    // The documentation's valid example of four wildcards.
    let ok = rule(
        1,
        json!({"tagStatus": "tagged", "tagPatternList": ["*test*1*2*3", "test*1*2*3*"], "countType": "imageCountMoreThan", "countNumber": 1}),
        expire(),
    );
    assert!(Policy::parse(&json!({"rules": [ok]}).to_string()).is_ok());
}

#[test]
fn tag_patterns_match_whole_tags_with_wildcards() {
    for (pattern, tag, matches) in [
        ("prod*", "prod", true),
        ("prod*", "prod1", true),
        ("prod*", "preprod", false),
        ("prod", "prod1", false),
        ("*prod", "preprod", true),
        ("*test*1*2*3", "mytest-1-2-3", true),
        ("*test*1*2*3", "mytest-1-2-3-4", false),
        ("test*1*2*3*", "test123", true),
        ("a*a", "a", false),
        ("a*a", "aa", true),
        ("*", "", true),
        ("", "", true),
        ("", "x", false),
    ] {
        assert_eq!(wildcard_match(pattern, tag), matches, "{pattern} ~ {tag}");
    }
}

#[test]
fn documented_example_filtering_on_image_age() {
    // "Expire images older than 14 days" with a tagPatternList of prod*.
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "tagged", "tagPatternList": ["prod*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14}),
        expire()
    )]));
    let images = [
        image("old", &["prod-1"], 20),
        image("young", &["prod-2"], 10),
        image("beta", &["beta-1"], 30),
        image("none", &[], 30),
    ];
    assert_eq!(
        outcome(&p, &images),
        [
            ("old".into(), 0, "expire", 1),
            ("young".into(), 4, "expire", 1)
        ]
    );
}

#[test]
fn documented_example_filtering_on_image_count() {
    // "Keep only one untagged image, expire all others".
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}),
        expire()
    )]));
    let images = [
        image("u1", &[], 3),
        image("u2", &[], 2),
        image("u3", &[], 1),
        image("t", &["v1"], 9),
    ];
    assert_eq!(
        outcome(&p, &images),
        [("u1".into(), 0, "expire", 1), ("u2".into(), 0, "expire", 1)]
    );
}

#[test]
fn documented_example_a_multiple_rules() {
    // Example A: A [beta-1, prod-1] 10 days, B [beta-2, prod-2] 9 days, C [beta-3] 8 days;
    // rule 1 keeps one prod image, rule 2 one beta image. Rule 1 acts on A and keeps B; B
    // matches rule 1's tags, so rule 2 cannot act on it; rule 2 still counts A and B but
    // keeps C, its newest. Only A is expired. Both tag forms read the same.
    let images = [
        image("A", &["beta-1", "prod-1"], 10),
        image("B", &["beta-2", "prod-2"], 9),
        image("C", &["beta-3"], 8),
    ];
    for (prod, beta) in [
        (
            json!({"tagPrefixList": ["prod"]}),
            json!({"tagPrefixList": ["beta"]}),
        ),
        (
            json!({"tagPatternList": ["prod*"]}),
            json!({"tagPatternList": ["beta*"]}),
        ),
    ] {
        let sel = |tags: &serde_json::Value| {
            let mut s =
                json!({"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1});
            for (k, v) in tags.as_object().expect("object") {
                s[k] = v.clone();
            }
            s
        };
        let p = policy(json!([
            rule(1, sel(&prod), expire()),
            rule(2, sel(&beta), expire())
        ]));
        assert_eq!(outcome(&p, &images), [("A".into(), 0, "expire", 1)]);
    }
}

#[test]
fn several_patterns_in_one_rule_select_images_carrying_all_of_them() {
    // "If you specify multiple tags, only the images with all specified tags are selected."
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "tagged", "tagPatternList": ["alpha*", "beta*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}),
        expire()
    )]));
    let images = [
        image("both", &["alpha-1", "beta-1"], 5),
        image("alpha", &["alpha-2"], 5),
        image("beta", &["beta-2"], 5),
    ];
    assert_eq!(outcome(&p, &images), [("both".into(), 0, "expire", 1)]);
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}),
        expire()
    )]));
    assert_eq!(outcome(&p, &images), [("both".into(), 0, "expire", 1)]);
}

#[test]
fn archive_then_expire_and_pull_times() {
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90}),
        expire()
    ),]));
    let mut long_ago = image("long-ago", &["v1"], 400);
    long_ago.status = ImageStatus::Archived;
    long_ago.archived_at = Some(NOW - 100 * DAY);
    let mut lately = image("lately", &["v2"], 200);
    lately.status = ImageStatus::Archived;
    lately.archived_at = Some(NOW - 10 * DAY);
    let active = image("active", &["v3"], 400);
    assert_eq!(
        outcome(&p, &[long_ago.clone(), lately.clone(), active.clone()]),
        [
            ("long-ago".into(), 0, "expire", 1),
            ("lately".into(), 80, "expire", 1)
        ]
    );

    let p = policy(json!([
        rule(
            1,
            json!({"tagStatus": "tagged", "tagPatternList": ["release-*"], "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30}),
            json!({"type": "transition", "targetStorageClass": "archive"})
        ),
        rule(
            2,
            json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90}),
            expire()
        ),
    ]));
    let mut pulled = image("pulled", &["release-1"], 100);
    pulled.last_pulled = Some(NOW - 5 * DAY);
    // Never pulled: counted from its push (the earlier reading).
    let never = image("never", &["release-2"], 20);
    assert_eq!(
        outcome(&p, &[pulled, never, lately]),
        [
            ("pulled".into(), 25, "archive", 1),
            ("never".into(), 10, "archive", 1),
            ("lately".into(), 80, "expire", 2)
        ]
    );
    let f = forecast(&p, &[image("x", &["release-3"], 1)], NOW);
    let f = f[0].as_ref().expect("forecast");
    assert_eq!(f.action, Action::Archive);
    assert_eq!(f.rule_description.as_deref(), Some("Rule 1"));
    assert!(
        f.why.contains("30 days after its push (never pulled)"),
        "{}",
        f.why
    );
}

#[test]
fn documented_example_b_multiple_rules() {
    // Example B: the same repository, the rules' order swapped. Rule 1 (beta) keeps C and
    // acts on A and B; rule 2 (prod) sees only images rule 1 already governs.
    let images = [
        image("A", &["beta-1", "prod-1"], 10),
        image("B", &["beta-2", "prod-2"], 9),
        image("C", &["beta-3"], 8),
    ];
    let keep_one = |prefix: &str| json!({"tagStatus": "tagged", "tagPrefixList": [prefix], "countType": "imageCountMoreThan", "countNumber": 1});
    let p = policy(json!([
        rule(1, keep_one("beta"), expire()),
        rule(2, keep_one("prod"), expire())
    ]));
    assert_eq!(
        outcome(&p, &images),
        [("A".into(), 0, "expire", 1), ("B".into(), 0, "expire", 1)]
    );
}

#[test]
fn documented_examples_several_tags_in_one_rule() {
    // Example A: prefixes alpha and beta, older than five days: only C carries both and is
    // old enough (F carries both, pushed two days ago: due in three).
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 5}),
        expire()
    )]));
    let images = [
        image("A", &["alpha-1"], 12),
        image("B", &["beta-1"], 11),
        image("C", &["alpha-2", "beta-2"], 10),
        image("D", &["alpha-3"], 4),
        image("E", &["beta-3"], 3),
        image("F", &["alpha-4", "beta-4"], 2),
    ];
    assert_eq!(
        outcome(&p, &images),
        [("C".into(), 0, "expire", 1), ("F".into(), 3, "expire", 1)]
    );
    // Example B: tags are not exclusive; keep one of those carrying alpha and beta.
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "imageCountMoreThan", "countNumber": 1}),
        expire()
    )]));
    let images = [
        image("A", &["alpha-1", "beta-1", "gamma-1"], 10),
        image("B", &["alpha-2", "beta-2"], 9),
        image("C", &["alpha-3", "beta-3", "gamma-2"], 8),
    ];
    assert_eq!(
        outcome(&p, &images),
        [("A".into(), 0, "expire", 1), ("B".into(), 0, "expire", 1)]
    );
}

#[test]
fn all_images_rules_come_last_and_spare_what_earlier_rules_select() {
    // "Filtering on all images", in the guide's shape: rule 1 keeps one alpha image, rule 2
    // one untagged image, rule 3 (any) one image. Rule 3 counts every image but acts only
    // on those no earlier rule selects.
    let keep_one = |sel: serde_json::Value| {
        let mut s = sel;
        s["countType"] = json!("imageCountMoreThan");
        s["countNumber"] = json!(1);
        s
    };
    let p = policy(json!([
        rule(
            1,
            keep_one(json!({"tagStatus": "tagged", "tagPrefixList": ["alpha"]})),
            expire()
        ),
        rule(2, keep_one(json!({"tagStatus": "untagged"})), expire()),
        rule(3, keep_one(json!({"tagStatus": "any"})), expire()),
    ]));
    let images = [
        image("A", &["alpha-1"], 4),
        image("B", &["beta-1"], 3),
        image("C", &[], 2),
        image("D", &["alpha-2"], 1),
    ];
    assert_eq!(
        outcome(&p, &images),
        [("A".into(), 0, "expire", 1), ("B".into(), 0, "expire", 3)]
    );
    // Example B's shape: two untagged images, the older one goes by rule 2; the tagged
    // image no earlier rule selects goes by rule 3 as soon as one newer image exists.
    let images = [
        image("A", &["alpha-1", "beta-1"], 4),
        image("B", &[], 3),
        image("C", &["alpha-2"], 2),
        image("D", &["git-hash"], 1),
        image("E", &[], 0),
    ];
    assert_eq!(
        outcome(&p, &images),
        [
            ("A".into(), 0, "expire", 1),
            ("B".into(), 0, "expire", 2),
            ("D".into(), 0, "expire", 3)
        ]
    );
}

#[test]
fn combining_archive_and_expire_rules_is_accepted_and_forecast() {
    // The guide's "Combining archive and expire rules": two `any` rules, one per storage
    // class. Standard images not pulled for 90 days are archived; archived images are
    // expired 180 days after their archiving.
    let p = policy(json!([
        rule(
            1,
            json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 90}),
            json!({"type": "transition", "targetStorageClass": "archive"})
        ),
        rule(
            2,
            json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 180}),
            expire()
        ),
    ]));
    let mut pulled = image("pulled", &["v2"], 300);
    pulled.last_pulled = Some(NOW - 30 * DAY);
    let mut archived = image("archived", &["v1"], 400);
    archived.status = ImageStatus::Archived;
    archived.archived_at = Some(NOW - 100 * DAY);
    assert_eq!(
        outcome(&p, &[pulled, archived]),
        [
            ("pulled".into(), 60, "archive", 1),
            ("archived".into(), 80, "expire", 2)
        ]
    );
}

#[test]
fn restored_images_count_from_their_restore() {
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30}),
        json!({"type": "transition", "targetStorageClass": "archive"})
    )]));
    // Pulled 200 days ago, archived, restored 2 days ago and not pulled since: 28 days left
    // (not "archive again now").
    let mut restored = image("restored", &["v1"], 400);
    restored.last_pulled = Some(NOW - 200 * DAY);
    restored.archived_at = Some(NOW - 150 * DAY);
    restored.last_activated = Some(NOW - 2 * DAY);
    // Restored 20 days ago and pulled since, 5 days ago: the pull counts.
    let mut pulled_since = image("pulled-since", &["v2"], 400);
    pulled_since.last_activated = Some(NOW - 20 * DAY);
    pulled_since.last_pulled = Some(NOW - 5 * DAY);
    // Never pulled, restored 10 days ago.
    let mut never = image("never", &["v3"], 400);
    never.last_activated = Some(NOW - 10 * DAY);
    assert_eq!(
        outcome(&p, &[restored, pulled_since, never]),
        [
            ("restored".into(), 28, "archive", 1),
            ("pulled-since".into(), 25, "archive", 1),
            ("never".into(), 20, "archive", 1)
        ]
    );

    // Ordered by the restore where images are ordered by push: keep the newest two.
    let keep_two = policy(json!([rule(
        1,
        json!({"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 2}),
        expire()
    )]));
    let mut old_restored = image("old-restored", &["v1"], 100);
    old_restored.last_activated = Some(NOW - DAY);
    let images = [
        old_restored,
        image("mid", &["v2"], 10),
        image("new", &["v3"], 5),
    ];
    assert_eq!(
        outcome(&keep_two, &images),
        [("mid".into(), 0, "expire", 1)]
    );
}

#[test]
fn an_image_being_restored_is_in_neither_storage_class() {
    let p = policy(json!([
        rule(
            1,
            json!({"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 30}),
            json!({"type": "transition", "targetStorageClass": "archive"})
        ),
        rule(
            2,
            json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90}),
            expire()
        ),
    ]));
    let mut activating = image("activating", &["v1"], 400);
    activating.status = ImageStatus::Activating;
    activating.archived_at = Some(NOW - 300 * DAY);
    assert_eq!(outcome(&p, &[activating]), []);
}

#[test]
fn index_children_are_governed_by_their_index() {
    // "Expire untagged images older than 14 days" on a multi-arch image: the index carries
    // the tag; its children are untagged and 30 days old. None of them is forecast, nor is
    // the index; an untagged image no index references is.
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14}),
        expire()
    )]));
    let index = image("index", &["v1"], 30);
    let mut amd64 = image("amd64", &[], 30);
    amd64.in_index = true;
    let mut arm64 = image("arm64", &[], 30);
    arm64.in_index = true;
    let loose = image("loose", &[], 30);
    assert_eq!(
        outcome(&p, &[index, amd64, arm64, loose]),
        [("loose".into(), 0, "expire", 1)]
    );

    // Nor are children counted: "keep one untagged image" keeps the loose one.
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}),
        expire()
    )]));
    let mut child = image("child", &[], 1);
    child.in_index = true;
    assert_eq!(outcome(&p, &[child, image("loose", &[], 5)]), []);

    // An untagged index is an image of its own: the rule acts on it (and so on its
    // children with it).
    let p = policy(json!([rule(
        1,
        json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14}),
        expire()
    )]));
    assert_eq!(
        outcome(&p, &[image("untagged-index", &[], 20)]),
        [("untagged-index".into(), 0, "expire", 1)]
    );
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    let one =
        (0..3usize, 0..3usize, 1u32..5, prop::bool::ANY).prop_map(|(tags, count, n, archive)| {
            let mut sel = match tags {
                0 => json!({"tagStatus": "tagged", "tagPatternList": ["v*"]}),
                1 => json!({"tagStatus": "tagged", "tagPrefixList": ["rc"]}),
                _ => json!({"tagStatus": "untagged"}),
            };
            match count {
                0 => sel["countType"] = json!("imageCountMoreThan"),
                1 => {
                    sel["countType"] = json!("sinceImagePushed");
                    sel["countUnit"] = json!("days");
                }
                _ => {
                    sel["countType"] = json!("sinceImagePulled");
                    sel["countUnit"] = json!("days");
                }
            }
            sel["countNumber"] = json!(n);
            // ECR refuses sinceImagePulled with expire.
            let action = if archive || count == 2 {
                json!({"type": "transition", "targetStorageClass": "archive"})
            } else {
                expire()
            };
            (sel, action)
        });
    prop::collection::vec(one, 1..4).prop_map(|rules| {
        let mut untagged = false;
        let rules: Vec<_> = rules
            .into_iter()
            .enumerate()
            .map(|(i, (mut s, a))| {
                // One rule at most selects untagged images.
                if s["tagStatus"] == "untagged" {
                    if untagged {
                        s["tagStatus"] = json!("tagged");
                        s["tagPrefixList"] = json!(["rc"]);
                    }
                    untagged = true;
                }
                rule(i as u32 + 1, s, a)
            })
            .collect();
        policy(json!(rules))
    })
}

fn arb_images() -> impl Strategy<Value = Vec<ImageFacts>> {
    let tag = prop::sample::select(vec!["v1", "v2", "rc1", "rc-2", "latest"]);
    let one = (
        prop::collection::vec(tag, 0..3),
        0i64..60,
        prop::option::of(0i64..30),
    );
    prop::collection::vec(one, 0..8).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (tags, pushed, pulled))| ImageFacts {
                last_pulled: pulled.map(|p| NOW - p.min(pushed) * DAY),
                ..image(&format!("d{i}"), &tags, pushed)
            })
            .collect()
    })
}

proptest! {
    /// Without new pushes, a forecast never moves earlier as time passes.
    #[test]
    fn a_forecast_never_moves_earlier(p in arb_policy(), images in arb_images(), later in 0i64..400) {
        let before = forecast(&p, &images, NOW);
        let after = forecast(&p, &images, NOW + later * DAY / 10);
        for (b, a) in before.iter().zip(&after) {
            if let (Some(b), Some(a)) = (b, a) {
                prop_assert!(a.at >= b.at);
            }
            prop_assert_eq!(b.is_some(), a.is_some());
        }
    }

    /// An image no rule selects is never acted on; the answer does not depend on the order
    /// DescribeImages listed the images in.
    #[test]
    fn only_selected_images_and_any_order(p in arb_policy(), images in arb_images()) {
        let forward = forecast(&p, &images, NOW);
        for (image, f) in images.iter().zip(&forward) {
            let selected = p.rules.iter().any(|r| r.selects(&image.tags, ecr_preflight::lifecycle::StorageClass::Standard));
            if !selected {
                prop_assert!(f.is_none());
            }
        }
        let mut reversed_images = images.clone();
        reversed_images.reverse();
        let mut reversed = forecast(&p, &reversed_images, NOW);
        reversed.reverse();
        prop_assert_eq!(forward, reversed);
    }
}
