#!/usr/bin/env bash
# Builds tripline's container image with buildah, FROM scratch: no registry
# needed (the Dockerfile's base images come from Docker Hub, which this
# machine cannot reach). The image holds what the Dockerfile's runtime stage
# holds: the binary, the shared libraries it links (found with ldd), the CA
# bundle, a non-root user 65532, /var/lib/tripline as the working directory,
# `tripline serve` as the command.
#
#   bash scripts/image.sh                        # release binary, tag localhost/tripline:dev
#   bash scripts/image.sh --binary target/debug/tripline --tag localhost/tripline:test
#
# Prints the image id. Needs buildah (Debian package; scripts/install-deps.sh
# installs it) and root or a user namespace. Run it with
#   buildah run --isolation chroot <container> -- tripline …
# where no cgroup-capable OCI runtime is available (as in this sandbox).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=target/release/tripline
tag=localhost/tripline:dev
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--tag TAG]" >&2; exit 2 ;;
  esac
done
if [ ! -x "$binary" ]; then
  echo "image: building $binary" >&2
  cargo build --release --locked --bin tripline >&2
fi

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")

install -D -m 0755 "$binary" "$root/usr/local/bin/tripline"
# The shared libraries it links, at the paths the loader looks for them.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  install -D -m 0644 "$(readlink -f "$lib")" "$root$lib"
done
chmod 0755 "$root"/lib64/ld-linux-* 2>/dev/null || true
# TLS to the Kubernetes API, Kafka and NATS.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
mkdir -p "$root/etc" "$root/tmp" "$root/var/lib/tripline"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\ntripline:x:65532:65532:tripline:/var/lib/tripline:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\ntripline:x:65532:\n' >"$root/etc/group"
chown 65532:65532 "$root/var/lib/tripline"
buildah umount "$ctr" >/dev/null

buildah config \
  --user 65532:65532 \
  --workingdir /var/lib/tripline \
  --entrypoint '["/usr/local/bin/tripline"]' \
  --cmd serve \
  --port 8080 --port 9090 \
  --label org.opencontainers.image.title=tripline \
  --label org.opencontainers.image.source=https://github.com/tripline/tripline \
  "$ctr"
buildah commit --quiet "$ctr" "$tag"
