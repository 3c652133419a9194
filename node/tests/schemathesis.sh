#!/usr/bin/env bash
# Property-based test of the HTTP key-value API: schemathesis generates requests from
# node/openapi.json and checks every answer of the live server against it. Run by
# node/tests/http_api.rs against a 3-node cluster it starts (so `./test.sh` runs it), or by
# hand against any node:
#
#   node/tests/schemathesis.sh http://127.0.0.1:7181     # run against a node's admin port
#   node/tests/schemathesis.sh --find                    # print the schemathesis to be used
#
# Fails on a 5xx, an undocumented status code, a body or header that breaks the schema, a
# wrong content type, or an invalid request accepted. Every check runs but two, which the
# `encoding` parameter fools: `positive_data_acceptance` (the document cannot say that a
# base64 key needs `encoding=base64`, so schema-valid requests may rightly get a 400) and
# `use_after_free` (`DELETE /v1/kv/QQ==` then `GET /v1/kv/QQ==?encoding=base64` name two
# different keys, `QQ==` and `A`, so the second may rightly answer 200). The stateful phase
# follows the document's links (PUT, then GET or DELETE of the same key).
#
# Environment: SCHEMATHESIS (path to the `schemathesis` program), QUASAR_SCHEMATHESIS_EXAMPLES
# (cases per operation and phase, default 50), QUASAR_SCHEMATHESIS_SEED (default 1; any other
# value explores other cases), QUASAR_SCHEMATHESIS_TIMEOUT (seconds, default 150).
set -euo pipefail

VERSION=4.32.5
here="$(cd "$(dirname "$0")/.." && pwd)"

find_schemathesis() {
  if [[ -n "${SCHEMATHESIS:-}" ]]; then
    [[ -x "$SCHEMATHESIS" ]] || { echo "SCHEMATHESIS=$SCHEMATHESIS is not an executable" >&2; return 1; }
    echo "$SCHEMATHESIS"
  elif command -v schemathesis >/dev/null 2>&1; then
    command -v schemathesis
  elif [[ -x /tmp/venv/bin/schemathesis ]]; then
    echo /tmp/venv/bin/schemathesis
  else
    cat >&2 <<MSG
schemathesis is not installed; the HTTP API's property-based test needs it. Install it with
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install 'schemathesis==$VERSION'
(on Debian, 'apt-get install python3-venv' first if venv is missing), or point
SCHEMATHESIS at an installed 'schemathesis' program. .ci/run does this in CI.
MSG
    return 1
  fi
}

if [[ "${1:-}" == "--find" ]]; then
  find_schemathesis
  exit
fi
if [[ $# -ne 1 ]]; then
  echo "usage: $0 BASE_URL | --find" >&2
  exit 2
fi
st="$(find_schemathesis)"
echo "schemathesis: $st ($("$st" --version 2>&1 | tail -1))"

# One worker: several share one Python interpreter, and its `ast` module is not thread-safe
# under 3.11 (schemathesis then fails with "AST constructor recursion depth mismatch").
exec timeout "${QUASAR_SCHEMATHESIS_TIMEOUT:-150}" "$st" run "$here/openapi.json" \
  --url "$1" \
  --checks all --exclude-checks positive_data_acceptance,use_after_free \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${QUASAR_SCHEMATHESIS_EXAMPLES:-50}" \
  --seed "${QUASAR_SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --request-timeout 30 \
  --suppress-health-check too_slow \
  --output-truncate false
