#!/usr/bin/env bash
# Build the vSphere API simulator (scripts/vcsim/main.go on govmomi's vcsim library) once and print the
# path of the binary. Offline: Go and govmomi come from Debian (golang-go, golang-github-vmware-govmomi-dev).
#
#   bin="$(bash scripts/build-vcsim.sh)"
#
# The binary is cached outside the repository, under ${XDG_CACHE_HOME:-$HOME/.cache}/vmpooler, named by a
# hash of main.go, the govmomi version and the Go version: a change to any of them builds a new one.
# Exits non-zero with the reason on stderr when Go or govmomi is missing (the tests then fail loudly).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GOCODE=/usr/share/gocode
GOVMOMI="$GOCODE/src/github.com/vmware/govmomi"
command -v go >/dev/null 2>&1 \
    || { echo "build-vcsim: 'go' is not on PATH (apt-get install golang-go)" >&2; exit 1; }
[[ -d "$GOVMOMI/simulator" ]] \
    || { echo "build-vcsim: no govmomi in $GOVMOMI (apt-get install golang-github-vmware-govmomi-dev)" >&2; exit 1; }

govmomi_version="$(dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev 2>/dev/null || echo unknown)"
hash="$( (cat scripts/vcsim/main.go; echo "$govmomi_version"; go version) | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vmpooler"
binary="$cache/vcsim-$hash"
if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/vcsim"
cp scripts/vcsim/main.go "$work/src/vcsim/main.go"
echo "build-vcsim: building $binary (about 20 s, once)" >&2
(
    cd "$work/src/vcsim"
    GO111MODULE=off GOPROXY=off GOPATH="$work:$GOCODE" GOCACHE="$cache/gocache" \
        go build -o "$work/vcsim" .
)
mv -f "$work/vcsim" "$binary"  # atomic: concurrent builders (pytest-xdist workers) both end with one binary
echo "$binary"
