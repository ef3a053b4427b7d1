//! The two calls on the admission path, `BatchGetImage` and `BatchCheckLayerAvailability`,
//! sent as ECR's JSON protocol (awsJson1.1) over one `reqwest` connection pool and signed
//! by [`super::sigv4`]. Every other ECR call goes through the SDK.
//!
//! Why: an SDK call costs the webhook's thread about 0.7 ms of CPU around the round trip
//! (interceptors, config bag, endpoint rules run per call, header maps), which a cold
//! admission pays once per sequential call; this path costs about half of that
//! (docs/performance.md 7b has both measured).
//!
//! What is kept from the SDK: its endpoint rules (its generated resolver, asked once per
//! region and endpoint flavour), its credentials (the [`CredentialKeeper`]), its clock-skew
//! correction (the answer's `Date`; a request refused for its date is signed again once),
//! and the error classification the SDK path uses ([`RegistryError::of_ecr_code`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_ecr::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use futures::FutureExt;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::credentials::CredentialKeeper;
use super::sigv4::{self, Signer};
use super::{
    BatchGetImageOutput, FetchedManifest, ImageFailure, LayerAvailabilityOutput, LayerDetail,
    LayerFailure, RegistryError,
};
use crate::image::{EcrRegistry, ImageId, RepositoryKey};
use crate::manifest::ACCEPTED_MEDIA_TYPES;

/// The largest answer read: 100 manifests of ECR's 4 MiB limit would be more, but an
/// answer this large is not a manifest batch the engine can use, and reading it whole
/// would let one answer take that much memory per call.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// A difference from ECR's clock below this is left alone (the SDK's threshold too): SigV4
/// accepts 5 minutes either way.
const SKEW_THRESHOLD_MS: i64 = 4 * 60 * 1000;

/// Codes of a request refused for its date (those of the SDK's list that are not
/// `AccessDeniedException`, which also means a missing permission).
const CLOCK_SKEW_CODES: [&str; 4] = [
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestTimeTooSkewed",
];

/// ECR's JSON protocol's content type.
const JSON_1_1: &str = "application/x-amz-json-1.1";

/// Where one region's calls go and how they are signed.
struct Target {
    url: reqwest::Url,
    host: String,
    signer: Signer,
}

/// The two operations sent directly.
#[derive(Clone, Copy)]
enum Operation {
    BatchGetImage,
    BatchCheckLayerAvailability,
}

impl Operation {
    /// Its IAM action, as errors name it.
    fn action(self) -> &'static str {
        match self {
            Operation::BatchGetImage => "ecr:BatchGetImage",
            Operation::BatchCheckLayerAvailability => "ecr:BatchCheckLayerAvailability",
        }
    }

    /// Its `x-amz-target`.
    fn target(self) -> &'static str {
        match self {
            Operation::BatchGetImage => "AmazonEC2ContainerRegistry_V20150921.BatchGetImage",
            Operation::BatchCheckLayerAvailability => {
                "AmazonEC2ContainerRegistry_V20150921.BatchCheckLayerAvailability"
            }
        }
    }
}

/// The signing time: the configuration's time source, as the SDK reads it (tests fix it).
pub type Clock = Box<dyn Fn() -> SystemTime + Send + Sync>;

/// The two admission-path calls, sent directly; see the module documentation.
pub struct DirectCalls {
    http: reqwest::Client,
    /// The configured endpoint override, handed to the endpoint rules as the SDK does.
    endpoint_url: Option<String>,
    /// The region of calls to a registry whose host names none.
    default_region: Option<String>,
    targets: Mutex<HashMap<(String, bool, bool), Arc<Target>>>,
    credentials: Arc<CredentialKeeper>,
    operation_timeout: Duration,
    clock: Clock,
    /// ECR's clock less ours, in milliseconds, when they differ by more than
    /// [`SKEW_THRESHOLD_MS`]: signatures are dated by ECR's clock, as the SDK's are after
    /// a skewed answer, so a node whose clock drifted is not refused.
    skew_ms: AtomicI64,
}

/// How [`DirectCalls`] are made.
pub struct DirectSettings {
    pub endpoint_url: Option<String>,
    pub default_region: Option<String>,
    pub operation_timeout: Duration,
    pub connect_timeout: Duration,
    pub clock: Clock,
}

impl DirectCalls {
    /// Fails only when no HTTPS client can be built (a TLS back end that cannot start).
    pub fn new(
        settings: DirectSettings,
        credentials: Arc<CredentialKeeper>,
    ) -> Result<Self, reqwest::Error> {
        // reqwest is built without a rustls provider of its own: the process's is ours.
        crate::server::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(50))
            .build()?;
        Ok(DirectCalls {
            http,
            endpoint_url: settings.endpoint_url,
            default_region: settings.default_region,
            targets: Mutex::new(HashMap::new()),
            credentials,
            operation_timeout: settings.operation_timeout,
            clock: settings.clock,
            skew_ms: AtomicI64::new(0),
        })
    }

    pub async fn batch_get_image(
        &self,
        repo: &RepositoryKey,
        ids: &[ImageId],
    ) -> Result<BatchGetImageOutput, RegistryError> {
        let request = GetImageRequest {
            registry_id: repo.registry.registry_id(),
            repository_name: &repo.repository,
            image_ids: ids.iter().map(IdOut::of).collect(),
            accepted_media_types: &ACCEPTED_MEDIA_TYPES,
        };
        let answer: GetImageAnswer = self.call(repo, Operation::BatchGetImage, &request).await?;
        Ok(answer.into_output())
    }

    pub async fn batch_check_layer_availability(
        &self,
        repo: &RepositoryKey,
        digests: &[String],
    ) -> Result<LayerAvailabilityOutput, RegistryError> {
        let request = CheckLayersRequest {
            registry_id: repo.registry.registry_id(),
            repository_name: &repo.repository,
            layer_digests: digests,
        };
        let answer: CheckLayersAnswer = self
            .call(repo, Operation::BatchCheckLayerAvailability, &request)
            .await?;
        Ok(answer.into_output())
    }

    /// One signed call of `operation`, bounded by the operation timeout (the wait for
    /// credentials included, as in the SDK).
    async fn call<T: DeserializeOwned>(
        &self,
        repo: &RepositoryKey,
        operation: Operation,
        input: &impl Serialize,
    ) -> Result<T, RegistryError> {
        let body: bytes::Bytes = serde_json::to_vec(input)
            .map_err(|e| RegistryError::Service {
                code: "SerializationError".to_owned(),
                message: e.to_string(),
            })?
            .into();
        let exchange = async {
            let target = self.target(&repo.registry)?;
            let credentials = self
                .credentials
                .in_hand()
                .await
                .map_err(RegistryError::Credentials)?;
            let mut resigned = false;
            loop {
                let request = self.signed(&target, operation, body.clone(), &credentials)?;
                let sent = (self.clock)();
                let answer = self.http.execute(request).await;
                let answer = answer.map_err(|e| self.unsent(&e))?;
                let skew_changed = self.learn_skew(sent, answer.headers());
                match self.read(answer, repo, operation.action()).await {
                    // Refused for a date the answer has just corrected: once more, dated
                    // by ECR's clock (the SDK does the same).
                    Err(RegistryError::Service { code, .. })
                        if skew_changed
                            && !resigned
                            && CLOCK_SKEW_CODES.contains(&code.as_str()) =>
                    {
                        resigned = true;
                    }
                    answer => return answer,
                }
            }
        };
        match tokio::time::timeout(self.operation_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RegistryError::Timeout),
        }
    }

    /// The endpoint of a registry's region and flavour, by the SDK's endpoint rules, found
    /// once and kept.
    fn target(&self, registry: &EcrRegistry) -> Result<Arc<Target>, RegistryError> {
        let region = match (registry.region.as_str(), &self.default_region) {
            ("", Some(default)) => default.clone(),
            (region, _) => region.to_owned(),
        };
        let key = (region, registry.fips, registry.dual_stack);
        let mut targets = self
            .targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(target) = targets.get(&key) {
            return Ok(target.clone());
        }
        let target = Arc::new(resolve(&key.0, key.1, key.2, self.endpoint_url.as_deref())?);
        targets.insert(key, target.clone());
        Ok(target)
    }

    /// The request for `operation` with `body`, signed for ECR in the target's region.
    fn signed(
        &self,
        target: &Target,
        operation: Operation,
        body: bytes::Bytes,
        credentials: &aws_credential_types::Credentials,
    ) -> Result<reqwest::Request, RegistryError> {
        let session_token = credentials.session_token();
        let signed = target.signer.sign(
            &sigv4::Credentials {
                access_key_id: credentials.access_key_id(),
                secret: credentials.secret_access_key(),
                session_token,
            },
            target.url.path(),
            &target.host,
            JSON_1_1,
            operation.target(),
            &body,
            self.signing_time(),
        );
        let value = |text: &str| {
            HeaderValue::from_str(text).map_err(|_| RegistryError::Service {
                code: "SigningError".to_owned(),
                message: "the credentials or the endpoint make an invalid header".to_owned(),
            })
        };
        let mut request = reqwest::Request::new(reqwest::Method::POST, target.url.clone());
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
        headers.insert(HOST, value(&target.host)?);
        headers.insert(
            HeaderName::from_static("x-amz-target"),
            HeaderValue::from_static(operation.target()),
        );
        headers.insert(
            HeaderName::from_static("x-amz-date"),
            value(&signed.amz_date)?,
        );
        if let Some(token) = session_token {
            let mut token = value(token)?;
            token.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-amz-security-token"), token);
        }
        let mut authorization = value(&signed.authorization)?;
        authorization.set_sensitive(true);
        headers.insert(AUTHORIZATION, authorization);
        *request.body_mut() = Some(body.into());
        Ok(request)
    }

    /// Now by ECR's clock, as far as its answers have told it.
    fn signing_time(&self) -> SystemTime {
        let now = (self.clock)();
        let skew = self.skew_ms.load(Ordering::Relaxed);
        let shift = Duration::from_millis(skew.unsigned_abs());
        let shifted = if skew >= 0 {
            now.checked_add(shift)
        } else {
            now.checked_sub(shift)
        };
        shifted.unwrap_or(now)
    }

    /// Keeps the difference between ECR's clock (its answer's `Date`) and ours at the
    /// middle of the round trip, when it is over [`SKEW_THRESHOLD_MS`]. True when the kept
    /// difference changed.
    fn learn_skew(&self, sent: SystemTime, headers: &reqwest::header::HeaderMap) -> bool {
        let Some(server) = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return false;
        };
        let received = (self.clock)();
        let half_trip = received.duration_since(sent).unwrap_or_default() / 2;
        let middle = sent + half_trip;
        let skew = match server.duration_since(middle) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        };
        let kept = if skew.abs() >= SKEW_THRESHOLD_MS {
            skew
        } else {
            0
        };
        self.skew_ms.swap(kept, Ordering::Relaxed) != kept
    }

    /// Why a request got no answer: the credentials' problem when there is one (as the SDK
    /// path says), else the transport's.
    fn unsent(&self, e: &reqwest::Error) -> RegistryError {
        if let Some(problem) = self.credentials.problem() {
            return RegistryError::Credentials(problem);
        }
        transport(e)
    }

    /// ECR's answer: the output on success, else the error its code and status say.
    async fn read<T: DeserializeOwned>(
        &self,
        answer: reqwest::Response,
        repo: &RepositoryKey,
        operation: &'static str,
    ) -> Result<T, RegistryError> {
        let status = answer.status().as_u16();
        let header_code = answer
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| error_code(v).to_owned());
        let body = read_body(answer).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|_| {
                malformed("ECR answered with a response that could not be read".to_owned())
            });
        }
        let error: ErrorAnswer = serde_json::from_slice(&body).unwrap_or_default();
        let code = header_code.or_else(|| error.kind.as_deref().map(|t| error_code(t).to_owned()));
        let code = code.filter(|c| !c.is_empty());
        let message = error.message.or(error.message_capital).unwrap_or_default();
        Err(match code {
            Some(code) => {
                RegistryError::of_ecr_code(code.as_str(), status, &message, repo, operation)
            }
            None if status == 429 => RegistryError::Throttled("HTTP 429".to_owned()),
            None if status >= 500 => RegistryError::Server(format!("HTTP {status}")),
            None => malformed(format!("ECR's answer could not be read (HTTP {status})")),
        })
    }
}

/// An answer's body, at most [`MAX_ANSWER_BYTES`]: whole when its length is declared and
/// within the bound (hyper holds it to that length), else gathered chunk by chunk.
async fn read_body(mut answer: reqwest::Response) -> Result<bytes::Bytes, RegistryError> {
    let too_large = || malformed(format!("ECR's answer is over {MAX_ANSWER_BYTES} bytes"));
    match answer.content_length() {
        Some(n) if n > MAX_ANSWER_BYTES as u64 => return Err(too_large()),
        Some(_) => return answer.bytes().await.map_err(|e| transport(&e)),
        None => {}
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// The endpoint the SDK would call for `region` and flavour, with `endpoint_url` as the
/// override, by the SDK's generated rules (partitions, FIPS, dual-stack).
fn resolve(
    region: &str,
    fips: bool,
    dual_stack: bool,
    endpoint_url: Option<&str>,
) -> Result<Target, RegistryError> {
    let unresolved = |why: String| RegistryError::Service {
        code: "EndpointResolution".to_owned(),
        message: format!("no ECR endpoint for region {region:?}: {why}"),
    };
    let params = Params::builder()
        .set_region(Some(region.to_owned()).filter(|r| !r.is_empty()))
        .use_fips(fips)
        .use_dual_stack(dual_stack)
        .set_endpoint(endpoint_url.map(str::to_owned))
        .build()
        .map_err(|e| unresolved(e.to_string()))?;
    let endpoint = DefaultResolver::new()
        .resolve_endpoint(&params)
        .now_or_never()
        .ok_or_else(|| unresolved("the endpoint rules did not answer at once".to_owned()))?
        .map_err(|e| unresolved(e.to_string()))?;
    let url = reqwest::Url::parse(endpoint.url()).map_err(|e| unresolved(e.to_string()))?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(unresolved(format!("{url} has no host"))),
    };
    // Signed as its own canonical path: only plain paths, which need no encoding.
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
    if url.query().is_some() || !url.path().chars().all(plain) {
        return Err(unresolved(format!(
            "{url}: an endpoint with a query or an encoded path is not supported"
        )));
    }
    Ok(Target {
        url,
        host,
        signer: Signer::new(region),
    })
}

/// The code in `x-amzn-errortype` or `__type`: `Code:http://…` and `namespace#Code` both
/// name `Code`.
fn error_code(raw: &str) -> &str {
    let code = raw.split(':').next().unwrap_or(raw);
    code.rsplit('#').next().unwrap_or(code)
}

fn transport(e: &reqwest::Error) -> RegistryError {
    if e.is_timeout() {
        RegistryError::Timeout
    } else if e.is_connect() {
        RegistryError::Transport("connection failed".to_owned())
    } else if e.is_body() || e.is_decode() || e.is_request() {
        RegistryError::Transport("the connection failed during the call".to_owned())
    } else {
        RegistryError::Transport("request could not be sent".to_owned())
    }
}

fn malformed(message: String) -> RegistryError {
    RegistryError::Service {
        code: "MalformedResponse".to_owned(),
        message,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GetImageRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_id: Option<&'a str>,
    repository_name: &'a str,
    image_ids: Vec<IdOut<'a>>,
    accepted_media_types: &'a [&'a str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckLayersRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_id: Option<&'a str>,
    repository_name: &'a str,
    layer_digests: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum IdOut<'a> {
    #[serde(rename = "imageTag")]
    Tag(&'a str),
    #[serde(rename = "imageDigest")]
    Digest(&'a str),
}

impl<'a> IdOut<'a> {
    fn of(id: &'a ImageId) -> Self {
        match id {
            ImageId::Tag(t) => IdOut::Tag(t),
            ImageId::Digest(d) => IdOut::Digest(d),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct IdIn {
    image_tag: Option<String>,
    image_digest: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetImageAnswer {
    #[serde(default)]
    images: Vec<ImageIn>,
    #[serde(default)]
    failures: Vec<ImageFailureIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageIn {
    #[serde(default)]
    image_id: IdIn,
    image_manifest: Option<String>,
    image_manifest_media_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageFailureIn {
    #[serde(default)]
    image_id: IdIn,
    failure_code: Option<String>,
    failure_reason: Option<String>,
}

impl GetImageAnswer {
    fn into_output(self) -> BatchGetImageOutput {
        let images = self
            .images
            .into_iter()
            .filter_map(|image| {
                Some(FetchedManifest {
                    tag: image.image_id.image_tag,
                    digest: image.image_id.image_digest,
                    media_type: image.image_manifest_media_type,
                    manifest: image.image_manifest?,
                })
            })
            .collect();
        let failures = self
            .failures
            .into_iter()
            .map(|f| ImageFailure {
                tag: f.image_id.image_tag,
                digest: f.image_id.image_digest,
                code: f.failure_code.unwrap_or_else(|| "Unknown".to_owned()),
                reason: f.failure_reason.unwrap_or_default(),
            })
            .collect();
        BatchGetImageOutput { images, failures }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckLayersAnswer {
    #[serde(default)]
    layers: Vec<LayerIn>,
    #[serde(default)]
    failures: Vec<LayerFailureIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerIn {
    layer_digest: Option<String>,
    layer_availability: Option<String>,
    layer_size: Option<i64>,
    media_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerFailureIn {
    layer_digest: Option<String>,
    failure_code: Option<String>,
    failure_reason: Option<String>,
}

impl CheckLayersAnswer {
    fn into_output(self) -> LayerAvailabilityOutput {
        let layers = self
            .layers
            .into_iter()
            .filter_map(|layer| {
                Some(LayerDetail {
                    layer_digest: layer.layer_digest?,
                    layer_availability: layer
                        .layer_availability
                        .unwrap_or_else(|| "UNKNOWN".to_owned()),
                    layer_size: layer.layer_size,
                    media_type: layer.media_type,
                })
            })
            .collect();
        let failures = self
            .failures
            .into_iter()
            .filter_map(|failure| {
                Some(LayerFailure {
                    layer_digest: failure.layer_digest?,
                    failure_code: failure.failure_code.unwrap_or_else(|| "Unknown".to_owned()),
                    failure_reason: failure.failure_reason.unwrap_or_default(),
                })
            })
            .collect();
        LayerAvailabilityOutput::from_answer(layers, failures)
    }
}

/// An error answer's body: `__type` names the code when no header does.
#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(rename = "__type")]
    kind: Option<String>,
    message: Option<String>,
    #[serde(rename = "Message")]
    message_capital: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::BlobState;

    #[test]
    fn error_codes_as_ecr_writes_them() {
        assert_eq!(error_code("ThrottlingException"), "ThrottlingException");
        assert_eq!(
            error_code("AccessDeniedException:http://internal.amazon.com/coral/"),
            "AccessDeniedException"
        );
        assert_eq!(
            error_code("com.amazonaws.ecr#RepositoryNotFoundException"),
            "RepositoryNotFoundException"
        );
    }

    #[test]
    fn endpoints_follow_the_sdk_rules() {
        let url = |region, fips, dual| {
            let url = resolve(region, fips, dual, None).unwrap().url;
            url.as_str().trim_end_matches('/').to_owned()
        };
        assert_eq!(
            url("us-east-1", false, false),
            "https://api.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            url("us-east-1", true, false),
            "https://api.ecr-fips.us-east-1.amazonaws.com"
        );
        assert_eq!(
            url("cn-north-1", false, false),
            "https://api.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert!(url("us-west-2", false, true).contains("api.aws"));
        let over = resolve("us-east-1", false, false, Some("http://127.0.0.1:5000")).unwrap();
        assert_eq!(over.host, "127.0.0.1:5000");
        assert!(resolve("", false, false, None).is_err());
        let with_path = resolve("us-east-1", false, false, Some("http://proxy:8080/ecr/")).unwrap();
        assert_eq!(with_path.url.path(), "/ecr/");
        assert!(resolve("us-east-1", false, false, Some("http://proxy/a%20b")).is_err());
        assert!(resolve("us-east-1", false, false, Some("http://proxy/?q=1")).is_err());
    }

    #[test]
    fn layer_answer_types_every_digest() {
        let answer: CheckLayersAnswer = serde_json::from_str(
            r#"{"layers":[{"layerDigest":"sha256:a","layerAvailability":"AVAILABLE","layerSize":3},
                {"layerDigest":"sha256:b","layerAvailability":"ARCHIVED"},
                {"layerAvailability":"AVAILABLE"}],
               "failures":[{"layerDigest":"sha256:c","failureCode":"MissingLayerDigest","failureReason":"gone"},
                {"layerDigest":"sha256:d","failureCode":"InvalidLayerDigest"}]}"#,
        )
        .unwrap();
        let out = answer.into_output();
        assert_eq!(
            out.blobs,
            vec![
                ("sha256:a".to_owned(), BlobState::Available),
                ("sha256:b".to_owned(), BlobState::Archived),
                ("sha256:c".to_owned(), BlobState::Missing),
                ("sha256:d".to_owned(), BlobState::Invalid),
            ]
        );
        assert_eq!(out.layers[0].layer_size, Some(3));
        assert_eq!(out.failures[0].failure_reason, "gone");
    }

    #[test]
    fn request_bodies_are_ecr_json() {
        let ids = [ImageId::Tag("1".into()), ImageId::Digest("sha256:x".into())];
        let body = serde_json::to_value(GetImageRequest {
            registry_id: Some("123456789012"),
            repository_name: "team/app",
            image_ids: ids.iter().map(IdOut::of).collect(),
            accepted_media_types: &["a"],
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"registryId": "123456789012", "repositoryName": "team/app",
                "imageIds": [{"imageTag": "1"}, {"imageDigest": "sha256:x"}],
                "acceptedMediaTypes": ["a"]})
        );
    }
}
