#!/bin/sh
# Chromium's DevTools endpoint listens on the guest's loopback only (it ignores
# --remote-debugging-address), so socat makes it reachable on the port the host forwards to.
socat TCP-LISTEN:9222,fork,reuseaddr TCP:127.0.0.1:9223 &
# Playwright's own launch flags for Chromium, without its pipe; --disable-hang-monitor matters
# under TCG, where a busy renderer is slow enough to look hung.
exec chromium-headless-shell \
  --no-sandbox \
  --remote-debugging-port=9223 \
  --user-data-dir=/tmp/chromium \
  --disable-field-trial-config \
  --disable-background-networking \
  --disable-background-timer-throttling \
  --disable-backgrounding-occluded-windows \
  --disable-back-forward-cache \
  --disable-breakpad \
  --disable-client-side-phishing-detection \
  --disable-component-extensions-with-background-pages \
  --disable-component-update \
  --no-default-browser-check \
  --disable-default-apps \
  --disable-dev-shm-usage \
  --disable-extensions \
  --disable-hang-monitor \
  --disable-ipc-flooding-protection \
  --disable-popup-blocking \
  --disable-prompt-on-repost \
  --disable-renderer-backgrounding \
  --force-color-profile=srgb \
  --metrics-recording-only \
  --no-first-run \
  --password-store=basic \
  --no-service-autorun \
  --hide-scrollbars \
  --mute-audio \
  about:blank
