#!/usr/bin/env bash
# One command from a clean clone to a working forkd: host packages, npm dependencies, the guest
# kernel + base image (cached in the state dir), a doctor report, and the main job (forkd demo) on
# the default image. Runs as root or with sudo on Debian 12 (bookworm); no KVM needed (TCG fallback).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/host-packages.sh

echo "setup: npm dependencies"
npm ci --no-audit --no-fund
npm run build --silent

echo "setup: guest kernel and base image (first time: ~5-7 min on 2 cores; cached after)"
node bin/forkd.js build base
node bin/forkd.js doctor || true

echo "setup: main job: cold boot vs snapshot + fork of 8 children (forkd demo)"
node bin/forkd.js demo
