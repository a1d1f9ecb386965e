#!/usr/bin/env bash
# THE test command: installs missing test dependencies (nats-server, tansu, librdkafka build
# deps, chromium, kubectl + kubernetes-validate, buildah + crun), then runs every test target. Extra arguments go to `cargo test`, e.g.
#   bash scripts/test.sh --test it brokers_smoke
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec cargo test --all-targets "$@"
