#!/usr/bin/env bash
# The test command: installs what is missing (redis-server, slapd, the vSphere simulator's sources, .venv,
# the package with its test extras), then runs the whole suite, or what the arguments select, with
# pytest-xdist on 2 workers.
#
#   scripts/test.sh                                    # everything
#   scripts/test.sh tests/unit                         # one directory
#   scripts/test.sh -m integration -k redis_server     # any pytest arguments
#
# The suite starts its own redis-server and slapd processes on free ports and unix sockets; it never uses
# the Redis on port 6379 or an LDAP server on 389. The exit status is pytest's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

vmp_setup "test,dev"
exec "$VMP_VENV/bin/python" -m pytest -n 2 -q "$@"
