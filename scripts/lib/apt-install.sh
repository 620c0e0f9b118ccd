# Sourced by the scripts/install-*.sh scripts: the one way they install missing Debian packages.
#
#   apt_install WHAT PACKAGE...     WHAT names what is missing, for the messages (e.g. "a headless Chromium")
#
# Needs root and apt-get (else it says how to install by hand and exits 1). A fresh container has no package lists:
# they are refreshed once if the install cannot find the packages. The caller defines say() for its messages.
apt_install() {
  local what=$1
  shift
  if [ "$(id -u)" -ne 0 ]; then
    say "$what is missing and installing it needs root; run as root, or:"
    say "  sudo apt-get install -y --no-install-recommends $*"
    exit 1
  fi
  command -v apt-get >/dev/null || {
    say "apt-get not found: install $what (Debian: $*) by hand"
    exit 1
  }
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "$@" >/dev/null
  fi
}
