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
# shellcheck source=scripts/lib/apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt-install.sh"

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

apt_install "GStreamer's RTSP server" "${PACKAGES[@]}"

if ! check; then
  say "installed ${PACKAGES[*]}, but $SYSTEM_PYTHON still cannot load GstRtspServer or the elements" \
    "multifilesrc, h264parse, rtph264pay"
  exit 1
fi
say "ready"
