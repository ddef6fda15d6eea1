#!/usr/bin/env bash
# The start command: installs what is missing (redis-server, .venv, the package), then runs vmpooler
# in the foreground with the example config (the embedded Redis when the config names none).
# Arguments go to vmpooler, e.g. `scripts/run.sh api`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

vmp_setup ""
exec "$VMP_VENV/bin/vmpooler" --config config/vmpooler.example.yaml "$@"
