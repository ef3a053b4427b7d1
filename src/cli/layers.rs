//! `ecr-preflight layers`: `aws ecr batch-check-layer-availability` with the same shapes,
//! minus its limits (more than 100 digests, malformed digests answered as ECR would), and
//! `layers IMAGE`, which expands an image into its blobs with platform and role.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::image::{validate_digest, EcrRegistry, ImageId, ImageTarget, RepositoryKey};
use crate::manifest::{self, Manifest};
use crate::registry::ecr::{EcrApi, EcrSettings};
use crate::registry::{LayerDetail, LayerFailure, Registry, RegistryError, MAX_IDS_PER_CALL};

#[derive(Debug, Clone, Args)]
pub struct LayersArgs {
    /// An image reference (tag or digest) to expand into its blobs, instead of
    /// --repository-name and --layer-digests.
    pub image: Option<String>,
    /// The repository, as for `aws ecr batch-check-layer-availability`.
    #[arg(long)]
    pub repository_name: Option<String>,
    /// Blob digests to check; more than 100 are split into concurrent calls.
    #[arg(long, num_args = 1..)]
    pub layer_digests: Vec<String>,
    /// The registry (account) id; the caller's own when omitted.
    #[arg(long)]
    pub registry_id: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    /// ECR API endpoint override.
    #[arg(long, env = "ECR_PREFLIGHT_ECR_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Input as JSON (a string, or file://PATH), as --generate-cli-skeleton prints it.
    #[arg(long)]
    pub cli_input_json: Option<String>,
    /// Input as YAML (a string, or file://PATH).
    #[arg(long)]
    pub cli_input_yaml: Option<String>,
    /// Print an input skeleton (input, yaml-input) or a sample output (output), and exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "input")]
    pub generate_cli_skeleton: Option<Skeleton>,
    #[arg(long, default_value = "json")]
    pub output: LayersOutput,
    /// A JMESPath expression applied to the response, as the AWS CLI's --query.
    #[arg(long)]
    pub query: Option<String>,
    /// Budget of the whole command.
    #[arg(long, default_value = "30s", value_parser = super::engine_args::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayersOutput {
    Json,
    Yaml,
    Text,
    Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Skeleton {
    Input,
    YamlInput,
    Output,
}

/// The request, as --cli-input-json takes it.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry_id: Option<String>,
    #[serde(default)]
    repository_name: Option<String>,
    #[serde(default)]
    layer_digests: Vec<String>,
}

/// Exit codes.
const EXIT_UNAVAILABLE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_ECR: u8 = 3;

pub async fn run(args: LayersArgs) -> anyhow::Result<ExitCode> {
    if let Some(kind) = args.generate_cli_skeleton {
        print!("{}", skeleton(kind)?);
        return Ok(ExitCode::SUCCESS);
    }
    let result = match &args.image {
        Some(image) => image_blobs(&args, image).await,
        None => check_digests(&args).await,
    };
    match result {
        Ok((response, all_available)) => {
            print!("{}", render(&response, &args)?);
            Ok(ExitCode::from(if all_available {
                0
            } else {
                EXIT_UNAVAILABLE
            }))
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
        Err(Failure::Ecr(e)) => {
            eprintln!("error: ECR could not answer: {e}");
            Ok(ExitCode::from(match e {
                RegistryError::RepositoryNotFound { .. } => EXIT_UNAVAILABLE,
                _ => EXIT_ECR,
            }))
        }
    }
}

enum Failure {
    Usage(String),
    Ecr(RegistryError),
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Failure::Ecr(e)
    }
}

fn skeleton(kind: Skeleton) -> anyhow::Result<String> {
    let input = Input {
        registry_id: Some(String::new()),
        repository_name: Some(String::new()),
        layer_digests: vec![String::new()],
    };
    Ok(match kind {
        Skeleton::Input => format!("{}\n", serde_json::to_string_pretty(&input)?),
        Skeleton::YamlInput => yaml_serde::to_string(&input)?,
        Skeleton::Output => format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({
                "layers": [{"layerDigest": "", "layerAvailability": "AVAILABLE", "layerSize": 0, "mediaType": ""}],
                "failures": [{"layerDigest": "", "failureCode": "InvalidLayerDigest", "failureReason": ""}]
            }))?
        ),
    })
}

/// `file://PATH` reads the file; anything else is the value itself.
fn value_or_file(v: &str) -> Result<String, Failure> {
    match v.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {path}: {e}"))),
        None => Ok(v.to_owned()),
    }
}

/// The request from --cli-input-* overridden by explicit flags, as the AWS CLI merges them.
fn request(args: &LayersArgs) -> Result<(Option<String>, String, Vec<String>), Failure> {
    let mut input = Input::default();
    if let Some(v) = &args.cli_input_json {
        input = serde_json::from_str(&value_or_file(v)?)
            .map_err(|e| Failure::Usage(format!("--cli-input-json: {e}")))?;
    }
    if let Some(v) = &args.cli_input_yaml {
        input = yaml_serde::from_str(&value_or_file(v)?)
            .map_err(|e| Failure::Usage(format!("--cli-input-yaml: {e}")))?;
    }
    let registry = args
        .registry_id
        .clone()
        .or(input.registry_id)
        .filter(|r| !r.is_empty());
    let repository = args
        .repository_name
        .clone()
        .or(input.repository_name)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            Failure::Usage(
                "the following arguments are required: --repository-name (or an IMAGE)".into(),
            )
        })?;
    let digests = if args.layer_digests.is_empty() {
        input.layer_digests
    } else {
        args.layer_digests.clone()
    };
    if digests.is_empty() {
        return Err(Failure::Usage(
            "the following arguments are required: --layer-digests".into(),
        ));
    }
    Ok((registry, repository, digests))
}

/// The client for one command: unlike the engine, it has no retries of its own, so the
/// SDK's standard ones (3 attempts) apply.
async fn api(args: &LayersArgs, region: Option<String>) -> EcrApi {
    let settings = EcrSettings {
        endpoint_url: args.endpoint_url.clone(),
        operation_timeout: args.timeout,
        connect_timeout: Duration::from_secs(3),
        max_attempts: 3,
    };
    let region = region.or(args.region.clone());
    EcrApi::from_default_chain(settings, args.profile.as_deref(), region).await
}

/// Checks `digests` in calls of at most 100, concurrently; malformed ones are answered
/// `InvalidLayerDigest` without asking, as ECR would.
async fn check_in_calls(
    api: &EcrApi,
    repo: &RepositoryKey,
    digests: &[String],
) -> Result<(Vec<LayerDetail>, Vec<LayerFailure>), RegistryError> {
    let mut failures = Vec::new();
    let mut valid = Vec::new();
    for d in digests {
        if validate_digest(d).is_ok() {
            if !valid.contains(d) {
                valid.push(d.clone());
            }
        } else {
            failures.push(LayerFailure {
                layer_digest: d.clone(),
                failure_code: "InvalidLayerDigest".into(),
                failure_reason: format!("Invalid layer digest '{d}'"),
            });
        }
    }
    let answers = try_join_all(
        valid
            .chunks(MAX_IDS_PER_CALL)
            .map(|chunk| api.batch_check_layer_availability(repo, chunk)),
    )
    .await?;
    let mut layers = Vec::new();
    for answer in answers {
        layers.extend(answer.layers);
        failures.extend(answer.failures);
    }
    Ok((layers, failures))
}

async fn check_digests(args: &LayersArgs) -> Result<(Value, bool), Failure> {
    let (registry, repository, digests) = request(args)?;
    let api = api(args, None).await;
    let region = api.region().unwrap_or_default();
    let registry = EcrRegistry {
        account: registry.unwrap_or_default(),
        region,
        fips: false,
        dual_stack: false,
    };
    let repo = RepositoryKey::new(registry, repository);
    let (layers, failures) =
        tokio::time::timeout(args.timeout, check_in_calls(&api, &repo, &digests))
            .await
            .map_err(|_| RegistryError::Timeout)??;
    let all_available =
        failures.is_empty() && layers.iter().all(|l| l.layer_availability == "AVAILABLE");
    Ok((
        json!({"layers": layers, "failures": failures}),
        all_available,
    ))
}

/// One blob of an expanded image.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageBlob {
    platform: Option<String>,
    manifest: String,
    role: String,
    attestation: bool,
    foreign: bool,
    layer_digest: String,
    layer_availability: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_size: Option<i64>,
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<String>,
}

async fn image_blobs(args: &LayersArgs, image: &str) -> Result<(Value, bool), Failure> {
    let (repo, id) = match ImageTarget::classify(image) {
        Ok(ImageTarget::Ecr { repo, id }) => (repo, id),
        Ok(ImageTarget::Other(_)) => {
            return Err(Failure::Usage(format!(
                "{image} is not an Amazon ECR image"
            )))
        }
        Err(e) => {
            return Err(Failure::Usage(format!(
                "invalid image reference {image:?}: {e}"
            )))
        }
    };
    let region = repo.registry.ecr().map(|r| r.region.clone());
    let api = api(args, region).await;
    let work = async {
        let (digest, manifests) = image_manifests(&api, &repo, &id, image).await?;
        let mut blobs = Vec::new();
        for m in &manifests {
            let roled = manifest::roled_blobs(&m.text)
                .map_err(|e| Failure::Usage(format!("{image}: manifest {}: {e}", m.digest)))?;
            blobs.extend(roled.into_iter().map(|b| (m, b)));
        }
        let wanted: BTreeSet<String> = blobs
            .iter()
            .filter(|(_, b)| !b.foreign)
            .map(|(_, b)| b.digest.clone())
            .collect();
        let wanted: Vec<String> = wanted.into_iter().collect();
        let (layers, failures) = check_in_calls(&api, &repo, &wanted).await?;
        let rows: Vec<ImageBlob> = blobs
            .into_iter()
            .map(|(m, b)| image_blob(m, b, &layers, &failures))
            .collect();
        let all_available = rows
            .iter()
            .all(|r| r.attestation || r.foreign || r.layer_availability == "AVAILABLE");
        Ok((
            json!({"image": image, "digest": digest, "blobs": rows}),
            all_available,
        ))
    };
    tokio::time::timeout(args.timeout, work)
        .await
        .map_err(|_| Failure::Ecr(RegistryError::Timeout))?
}

/// One image manifest of the image: the image itself, or a child of its index.
struct FetchedImage {
    platform: Option<String>,
    digest: String,
    attestation: bool,
    text: String,
}

/// The digest `id` resolves to, and its image manifests: itself, or every child of its index.
async fn image_manifests(
    api: &EcrApi,
    repo: &RepositoryKey,
    id: &ImageId,
    image: &str,
) -> Result<(String, Vec<FetchedImage>), Failure> {
    let (digest, text, media_type) = fetch(api, repo, id).await?;
    match manifest::parse(&text, media_type.as_deref()) {
        Ok(Manifest::Image { .. }) => {
            let only = FetchedImage {
                platform: None,
                digest: digest.clone(),
                attestation: false,
                text,
            };
            Ok((digest, vec![only]))
        }
        Ok(Manifest::Index { children }) => {
            let mut manifests = Vec::with_capacity(children.len());
            for child in children {
                let (child_digest, text, _) =
                    fetch(api, repo, &ImageId::Digest(child.digest.clone())).await?;
                manifests.push(FetchedImage {
                    platform: child.platform.as_ref().map(ToString::to_string),
                    digest: child_digest,
                    attestation: child.attestation,
                    text,
                });
            }
            Ok((digest, manifests))
        }
        Err(e) => Err(Failure::Usage(format!("{image}: {e}"))),
    }
}

/// One output row: a blob of manifest `m`, with what ECR said of it (`FOREIGN` for a
/// non-distributable blob, never asked about).
fn image_blob(
    m: &FetchedImage,
    b: manifest::RoledBlob,
    layers: &[LayerDetail],
    failures: &[LayerFailure],
) -> ImageBlob {
    let layer = layers.iter().find(|l| l.layer_digest == b.digest);
    let failure = failures.iter().find(|f| f.layer_digest == b.digest);
    let availability = match (b.foreign, layer, failure) {
        (true, _, _) => "FOREIGN".to_owned(),
        (false, Some(l), _) => l.layer_availability.clone(),
        (false, None, Some(_)) => "MISSING".to_owned(),
        (false, None, None) => "UNKNOWN".to_owned(),
    };
    ImageBlob {
        platform: m.platform.clone(),
        manifest: m.digest.clone(),
        role: b.role,
        attestation: m.attestation,
        foreign: b.foreign,
        layer_digest: b.digest,
        layer_availability: availability,
        layer_size: layer.and_then(|l| l.layer_size),
        media_type: b.media_type,
        failure_code: failure.map(|f| f.failure_code.clone()),
    }
}

/// (digest, manifest, media type) of one image id.
async fn fetch(
    api: &EcrApi,
    repo: &RepositoryKey,
    id: &ImageId,
) -> Result<(String, String, Option<String>), Failure> {
    let out = api.batch_get_image(repo, std::slice::from_ref(id)).await?;
    match out.images.into_iter().next() {
        Some(m) => Ok((
            m.digest
                .or_else(|| match id {
                    ImageId::Digest(d) => Some(d.clone()),
                    ImageId::Tag(_) => None,
                })
                .unwrap_or_default(),
            m.manifest,
            m.media_type,
        )),
        None => {
            let reason = out
                .failures
                .first()
                .map(|f| format!("{}: {}", f.code, f.reason))
                .unwrap_or_else(|| "not returned".into());
            eprintln!("error: {id} not found in {repo}: {reason}");
            Err(Failure::Ecr(RegistryError::RepositoryNotFound {
                registry: repo.registry.to_string(),
                repository: repo.repository.clone(),
            }))
        }
    }
}

fn render(response: &Value, args: &LayersArgs) -> anyhow::Result<String> {
    let value = match &args.query {
        Some(q) => {
            let expr = jmespath::compile(q).map_err(|e| anyhow!("--query: {e}"))?;
            let data =
                jmespath::Variable::from_json(&response.to_string()).map_err(|e| anyhow!("{e}"))?;
            let found = expr.search(data).map_err(|e| anyhow!("--query: {e}"))?;
            serde_json::to_value(&*found).context("query result")?
        }
        None => response.clone(),
    };
    Ok(match args.output {
        LayersOutput::Json => format!("{}\n", serde_json::to_string_pretty(&value)?),
        LayersOutput::Yaml => yaml_serde::to_string(&value)?,
        LayersOutput::Text => text(&value, None),
        LayersOutput::Table => table(&value, "BatchCheckLayerAvailability"),
    })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// The AWS CLI's text output: an object's scalar values tab-separated in key order, each
/// list of objects as rows headed by its key in upper case.
fn text(v: &Value, label: Option<&str>) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let scalars: Vec<String> = keys
                .iter()
                .filter_map(|k| map.get(*k))
                .filter(|v| !v.is_object() && !v.is_array())
                .map(scalar)
                .collect();
            let mut out = String::new();
            if !scalars.is_empty() {
                if let Some(l) = label {
                    out.push_str(l);
                    out.push('\t');
                }
                out.push_str(&scalars.join("\t"));
                out.push('\n');
            }
            for k in keys {
                if let Some(child) = map.get(k).filter(|c| c.is_object() || c.is_array()) {
                    out.push_str(&text(child, Some(&k.to_uppercase())));
                }
            }
            out
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            if items.is_empty() {
                String::new()
            } else {
                format!(
                    "{}\n",
                    items.iter().map(scalar).collect::<Vec<_>>().join("\t")
                )
            }
        }
        Value::Array(items) => items.iter().map(|i| text(i, label)).collect(),
        other => format!("{}\n", scalar(other)),
    }
}

/// A titled table per list of objects, columns in key order.
fn table(v: &Value, title: &str) -> String {
    let mut out = format!("{title}\n");
    let sections: Vec<(String, &Value)> = match v {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        other => vec![(String::new(), other)],
    };
    for (name, value) in sections {
        let rows: Vec<&serde_json::Map<String, Value>> = match value {
            Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
            Value::Object(m) => vec![m],
            scalar_value => {
                out.push_str(&format!("| {name:<20} | {} |\n", scalar(scalar_value)));
                continue;
            }
        };
        let mut columns: Vec<&String> = rows
            .iter()
            .flat_map(|r| r.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        columns.sort();
        let cell = |r: &serde_json::Map<String, Value>, c: &String| {
            r.get(c).map(scalar).unwrap_or_default()
        };
        let widths: Vec<usize> = columns
            .iter()
            .map(|c| {
                rows.iter()
                    .map(|r| cell(r, c).chars().count())
                    .chain([c.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rule = format!(
            "+{}+\n",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("+")
        );
        out.push_str(&format!("{name}\n{rule}"));
        let line = |cells: Vec<String>| {
            format!(
                "|{}|\n",
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!(" {c:<w$} "))
                    .collect::<Vec<_>>()
                    .join("|")
            )
        };
        out.push_str(&line(columns.iter().map(|c| c.to_string()).collect()));
        out.push_str(&rule);
        for r in &rows {
            out.push_str(&line(columns.iter().map(|c| cell(r, c)).collect()));
        }
        out.push_str(&rule);
    }
    out
}
