//! A real OCI registry on loopback for tests: Debian's `docker-registry` (distribution v2)
//! with TLS (a self-signed certificate) and htpasswd Basic auth, storing under a temp dir.
//! `.ci/run` installs it; `htpasswd` (apache2-utils) makes the bcrypt password file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub struct OciRegistry {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The certificate to trust (PEM).
    pub ca: PathBuf,
    dir: tempfile::TempDir,
    user: String,
    password: String,
    child: Option<Child>,
    /// Asks for the user's password (htpasswd); else anyone may pull and push.
    with_auth: bool,
    /// Asks for tokens from this realm instead (see [`OciRegistry::require_tokens`]).
    token_realm: Option<String>,
    /// Once stopped, the port stays held (bound, not listening): it refuses connections.
    _held: Option<super::Reserved>,
    /// Every request answered, as its access log tells it: (method, path).
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

impl OciRegistry {
    /// Starts a registry that accepts `user`/`password` only.
    pub fn start(user: &str, password: &str) -> Self {
        Self::start_with(user, password, true)
    }

    /// Starts a registry that anyone may pull from (and push to).
    pub fn start_open() -> Self {
        Self::start_with("anyone", "anything", false)
    }

    fn start_with(user: &str, password: &str, with_auth: bool) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = ecr_preflight::server::tls::self_signed_pem().expect("cert");
        let ca = dir.path().join("cert.pem");
        std::fs::write(&ca, &cert).expect("cert");
        std::fs::write(dir.path().join("key.pem"), &key).expect("key");
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils) is installed");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("htpasswd");
        let mut registry = OciRegistry {
            url: String::new(),
            ca,
            dir,
            user: user.to_owned(),
            password: password.to_owned(),
            child: None,
            with_auth,
            token_realm: None,
            _held: None,
            requests: std::sync::Arc::default(),
        };
        registry.run();
        registry
    }

    /// Starts the registry on a port of its choosing and reads the port from the line it
    /// logs once listening, so that no other test binary can take the port between a
    /// choice and the bind.
    fn run(&mut self) {
        let d = self.dir.path().display();
        let auth = match &self.token_realm {
            Some(realm) => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {d}/token-root.pem\n",
                super::token_server::SERVICE,
                super::token_server::ISSUER
            ),
            None if self.with_auth => {
                format!("auth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n")
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n    certificate: {d}/cert.pem\n    key: {d}/key.pem\n{auth}health:\n  storagedriver:\n    enabled: false\n"
        );
        let path = self.dir.path().join("config.yml");
        std::fs::write(&path, config).expect("config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry is installed");
        let log = child.stderr.take().expect("stderr");
        let access = child.stdout.take().expect("stdout");
        self.child = Some(child);
        let (found, port) = std::sync::mpsc::channel();
        let requests = self.requests.clone();
        // The access log (stdout): each request's method and path.
        std::thread::spawn(move || {
            for line in BufReader::new(access).lines().map_while(Result::ok) {
                if let Some(request) = access_line(&line) {
                    requests.lock().expect("lock").push(request);
                }
            }
        });
        // Reads the port, then keeps draining the log so that the registry never blocks
        // on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if let Some(port) = super::port_after(&line, "listening on 127.0.0.1:") {
                    let _ = found.send(port);
                }
            }
        });
        let port: u16 = port
            .recv_timeout(Duration::from_secs(15))
            .expect("docker-registry did not say where it listens within 15 s");
        self.url = format!("https://127.0.0.1:{port}");
    }

    /// Restarts it (its data kept, on a new port) asking for tokens from `tokens`, as Docker
    /// Hub, GHCR and Quay do: push the images first.
    pub fn require_tokens(&mut self, tokens: &super::token_server::TokenServer) {
        tokens.write_bundle(&self.dir.path().join("token-root.pem"));
        self.stop();
        self._held = None;
        self.token_realm = Some(tokens.realm.clone());
        self.run();
    }

    /// Every request answered so far: (method, path), in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().expect("lock").clone()
    }

    /// The requests answered after the first `from`, once at least `n` are logged (the
    /// access log comes a moment after each answer), and any more that came in 100 ms.
    pub fn requests_since(&self, from: usize, n: usize) -> Vec<(String, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.requests.lock().expect("lock").len() < from + n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} requests never logged"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.requests()[from..].to_vec()
    }

    /// Stops it (the data stays): the registry is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let addr = self
                .url
                .trim_start_matches("https://")
                .parse()
                .expect("addr");
            self._held = super::Reserved::at(addr);
        }
    }

    fn client(&self) -> reqwest::Client {
        let cert = std::fs::read(&self.ca).expect("cert");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&cert).expect("pem"))
            .build()
            .expect("client")
    }

    /// Uploads `data` as a blob of `repository` (monolithic upload); its digest.
    pub async fn push_blob(&self, repository: &str, data: &[u8]) -> String {
        let digest = super::seed::sha256(data);
        let client = self.client();
        let started = client
            .post(format!("{}/v2/{repository}/blobs/uploads/", self.url))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .expect("start upload");
        assert_eq!(started.status(), 202, "{:?}", started.text().await);
        let location = started.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.url)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = client
            .put(format!("{location}{sep}digest={digest}"))
            .basic_auth(&self.user, Some(&self.password))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(done.status(), 201, "{:?}", done.text().await);
        digest
    }

    /// A linux/amd64 image of a config blob and two layers under `tag`: (manifest digest,
    /// blob digests, the config's first).
    pub async fn push_image(&self, repository: &str, tag: &str) -> (String, Vec<String>) {
        let config = self
            .push_blob(
                repository,
                br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            )
            .await;
        let mut layers = Vec::new();
        for i in 0..2 {
            let data = format!("{repository}:{tag} layer {i}");
            layers.push(self.push_blob(repository, data.as_bytes()).await);
        }
        let layer = |d: &String| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":10}}"#
            )
        };
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":10}},"layers":[{}]}}"#,
            layers.iter().map(layer).collect::<Vec<_>>().join(",")
        );
        let digest = self
            .push_manifest(repository, tag, OCI_MANIFEST, &manifest)
            .await;
        let mut blobs = vec![config];
        blobs.extend(layers);
        (digest, blobs)
    }

    /// Stores `manifest` (of `media_type`) under `reference` (a tag); its digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        manifest: &str,
    ) -> String {
        let done = self
            .client()
            .put(format!(
                "{}/v2/{repository}/manifests/{reference}",
                self.url
            ))
            .basic_auth(&self.user, Some(&self.password))
            .header("content-type", media_type)
            .body(manifest.to_owned())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(done.status(), 201, "{:?}", done.text().await);
        super::seed::sha256(manifest.as_bytes())
    }

    /// Removes blob `digest`'s content from the registry's storage, as a garbage collection
    /// gone wrong leaves it: manifests still name it, the registry no longer has it.
    pub fn lose_blob(&self, digest: &str) {
        std::fs::remove_dir_all(self.blob_dir(digest)).expect("remove blob");
    }

    /// Where the registry's storage keeps blob `digest`.
    fn blob_dir(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        [
            self.dir.path(),
            Path::new("data/docker/registry/v2/blobs/sha256"),
            Path::new(&hex[..2]),
            Path::new(hex),
        ]
        .iter()
        .collect()
    }

    /// Removes tag `tag` of `repository` from the registry's storage.
    pub fn untag(&self, repository: &str, tag: &str) {
        let path = self
            .dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repository)
            .join("_manifests/tags")
            .join(tag);
        std::fs::remove_dir_all(&path).expect("remove tag");
    }

    /// Replaces the stored content of blob `digest` (the registry serves it as is): a
    /// registry answering with a body that is not the blob its digest names.
    pub fn corrupt(&self, digest: &str, data: &[u8]) {
        let path = self.blob_dir(digest).join("data");
        assert!(path.exists(), "no blob at {}", path.display());
        std::fs::write(path, data).expect("corrupt");
    }
}

/// `127.0.0.1 - - [date] "HEAD /v2/x/manifests/v1 HTTP/1.1" 404 …`: (method, path).
fn access_line(line: &str) -> Option<(String, String)> {
    let (_, rest) = line.split_once(" - - [")?;
    let (_, request) = rest.split_once("] \"")?;
    let mut parts = request.split(' ');
    let method = parts.next()?;
    let path = parts.next()?;
    parts
        .next()
        .filter(|v| v.starts_with("HTTP/"))
        .map(|_| (method.to_owned(), path.to_owned()))
}

/// The client of registries other than ECR's, trusting `registries`' certificates.
pub fn trusting(
    registries: &[&OciRegistry],
    timeout: Duration,
) -> ecr_preflight::registry::distribution::Distribution {
    use ecr_preflight::registry::distribution::{Distribution, DistributionSettings};
    ecr_preflight::server::tls::install_crypto_provider();
    Distribution::new(DistributionSettings {
        timeout,
        extra_roots: registries
            .iter()
            .map(|r| std::fs::read(&r.ca).expect("ca"))
            .collect(),
        ..DistributionSettings::default()
    })
    .expect("client")
}
