#!/usr/bin/env bash
# Install the RTSP test camera's system packages (GStreamer's RTSP server and its Python bindings) when missing.
#
#   scripts/install-rtsp.sh
#
# scripts/rtsp_camera.py runs with the system /usr/bin/python3 (Debian's, which has `gi`), not the project's venv.
# Idempotent: when /usr/bin/python3 can already load GstRtspServer and the GStreamer elements the camera uses, it
# prints nothing and exits 0. Otherwise it installs the Debian packages with apt-get, which needs root.
set -euo pipefail

SYSTEM_PYTHON=/usr/bin/python3
PACKAGES=(
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-libav
  python3-gi
)
say() { printf 'install-rtsp: %s\n' "$*" >&2; }

# Everything scripts/rtsp_camera.py needs: the RTSP server typelib and the elements of its launch line.
check() {
  [ -x "$SYSTEM_PYTHON" ] || return 1
  "$SYSTEM_PYTHON" - <<'EOF' 2>/dev/null
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401

Gst.init(None)
sys.exit(0 if all(Gst.ElementFactory.find(e) for e in ("multifilesrc", "h264parse", "rtph264pay")) else 1)
EOF
}

if check; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  say "GStreamer's RTSP server is missing and installing it needs root; run as root, or:"
  say "  sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
  exit 1
fi
command -v apt-get >/dev/null || {
  say "apt-get not found: install these Debian packages (or their equivalents) by hand: ${PACKAGES[*]}"
  exit 1
}

say "installing ${PACKAGES[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh container has no package lists; refresh them once if the install cannot find the packages.
if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

if ! check; then
  say "installed ${PACKAGES[*]}, but $SYSTEM_PYTHON still cannot load GstRtspServer or the elements" \
    "multifilesrc, h264parse, rtph264pay"
  exit 1
fi
say "ready"
