//! SigV4 for the one request shape the direct calls send: a `POST` to a plain path (no
//! query, nothing to percent-encode; `/` for ECR's own endpoints), and the
//! headers `content-type`, `host`, `x-amz-date`, `x-amz-security-token` (with session
//! credentials) and `x-amz-target` signed. The signing key, which takes four HMACs to
//! derive, is kept for its day, region and credentials.
//!
//! Why not the `aws-sigv4` crate's `sign`: it is general (header maps, URI normalisation,
//! settings built per call) and its cost showed in the cold path's CPU time
//! (docs/performance.md 7b). Its answers are the reference here: the unit tests and
//! tests/ecr_signing.rs compare with it.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, hmac};

/// The service name ECR signs with.
const SERVICE: &str = "ecr";

/// The headers to add to a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub amz_date: String,
    pub authorization: String,
}

/// What a request is signed with.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub session_token: Option<&'a str>,
}

/// A signer for one region, keeping the day's signing key.
pub struct Signer {
    region: String,
    /// (day, access key id, secret, key): the key for that day and those credentials.
    key: Mutex<Option<(String, String, String, hmac::Key)>>,
}

impl Signer {
    pub fn new(region: &str) -> Self {
        Signer {
            region: region.to_owned(),
            key: Mutex::new(None),
        }
    }

    /// The `x-amz-date` and `authorization` of a `POST` to `path` (plain: see the module
    /// documentation) on `host` with `amz_target` and `body`, at `at`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        credentials: &Credentials<'_>,
        path: &str,
        host: &str,
        content_type: &str,
        amz_target: &str,
        body: &[u8],
        at: SystemTime,
    ) -> Signed {
        let amz_date = amz_date(at);
        let day = &amz_date[..8];
        let (token_header, token_name) = match credentials.session_token {
            Some(token) => (
                format!("x-amz-security-token:{token}\n"),
                ";x-amz-security-token",
            ),
            None => (String::new(), ""),
        };
        let signed_headers = format!("content-type;host;x-amz-date{token_name};x-amz-target");
        let canonical = format!(
            "POST\n{path}\n\ncontent-type:{content_type}\nhost:{host}\nx-amz-date:{amz_date}\n\
             {token_header}x-amz-target:{amz_target}\n\n{signed_headers}\n{}",
            hex(digest::digest(&digest::SHA256, body).as_ref())
        );
        let scope = format!("{day}/{}/{SERVICE}/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let signature =
            hex(hmac::sign(&self.key_for(day, credentials), string_to_sign.as_bytes()).as_ref());
        Signed {
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                credentials.access_key_id
            ),
            amz_date,
        }
    }

    /// The signing key of `day` for `credentials`, derived once a day (or when the
    /// credentials change).
    fn key_for(&self, day: &str, credentials: &Credentials<'_>) -> hmac::Key {
        let mut kept = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((d, id, secret, key)) = kept.as_ref() {
            if d == day && id == credentials.access_key_id && secret == credentials.secret {
                return key.clone();
            }
        }
        let mac = |key: &[u8], data: &str| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        };
        let k_date = mac(format!("AWS4{}", credentials.secret).as_bytes(), day);
        let k_region = mac(k_date.as_ref(), &self.region);
        let k_service = mac(k_region.as_ref(), SERVICE);
        let k_signing = mac(k_service.as_ref(), "aws4_request");
        let key = hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref());
        *kept = Some((
            day.to_owned(),
            credentials.access_key_id.to_owned(),
            credentials.secret.to_owned(),
            key.clone(),
        ));
        key
    }
}

/// `at` as SigV4 writes it: `YYYYMMDDTHHMMSSZ`, UTC.
fn amz_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days ≥ 0), by the
/// era-based method of Howard Hinnant's "chrono-compatible low-level date algorithms".
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 15));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    /// The crate's signature of the same request: the reference.
    fn reference(token: Option<&str>, region: &str, body: &[u8], at: SystemTime) -> String {
        let identity = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("ecr")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("host", "api.ecr.eu-west-1.amazonaws.com"),
            (
                "x-amz-target",
                "AmazonEC2ContainerRegistry_V20150921.BatchGetImage",
            ),
        ];
        let request = SignableRequest::new(
            "POST",
            "https://api.ecr.eu-west-1.amazonaws.com/",
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let authorization = instructions
            .headers()
            .find(|(name, _)| *name == "authorization")
            .map(|(_, value)| value.to_owned());
        authorization.unwrap()
    }

    #[test]
    fn signatures_match_the_aws_sigv4_crate() {
        let signer = Signer::new("eu-west-1");
        let body = br#"{"repositoryName":"team/app","imageIds":[{"imageTag":"1"}]}"#;
        let ours = |token, at| {
            let credentials = Credentials {
                access_key_id: "AKIDEXAMPLE",
                secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                session_token: token,
            };
            let host = "api.ecr.eu-west-1.amazonaws.com";
            let target = "AmazonEC2ContainerRegistry_V20150921.BatchGetImage";
            let content_type = "application/x-amz-json-1.1";
            let signed = signer.sign(&credentials, "/", host, content_type, target, body, at);
            signed.authorization
        };
        // Leap day, year end, the epoch's day, and a time in the day; with and without a
        // session token; the same key reused within the day.
        for secs in [
            1_709_164_800 + 3_723,
            1_798_761_599,
            0,
            1_796_083_200 + 86_399,
        ] {
            let at = UNIX_EPOCH + Duration::from_secs(secs);
            for token in [None, Some("token/with+chars=")] {
                for _ in 0..2 {
                    assert_eq!(ours(token, at), reference(token, "eu-west-1", body, at));
                }
            }
        }
        // A different region's reference differs: the comparison can fail.
        let at = UNIX_EPOCH + Duration::from_secs(1_796_083_200);
        assert_ne!(ours(None, at), reference(None, "us-east-1", body, at));
    }

    #[test]
    fn dates_as_sigv4_writes_them() {
        let at = |secs| amz_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_796_083_200 + 3_723), "20261201T010203Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
    }
}
