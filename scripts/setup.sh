#!/usr/bin/env bash
# Installs what dsinfer needs to build and test on Debian 12. Idempotent and quiet when everything is there.
set -euo pipefail

PKGS=(build-essential cmake ninja-build ccache pkg-config clang libclang-rt-14-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      nlohmann-json3-dev libcli11-dev libpcre2-dev libxxhash-dev libcpp-httplib-dev prometheus
      libicu-dev python3 python3-jinja2 jq)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js: any install that provides node and npm will do (NodeSource's nodejs ships npm and conflicts with
# Debian's npm package), so install Debian's only when the commands are missing.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages used only by tests as oracles (tokenizer), pinned in tests/oracles/package.json.
if [ -f tests/oracles/package.json ] && [ ! -d tests/oracles/node_modules ]; then
  echo "setup: installing npm test oracles"
  (cd tests/oracles && npm install --no-audit --no-fund --silent >/dev/null)
fi
if [ -f tests/e2e/package.json ] && [ ! -d tests/e2e/node_modules ]; then
  echo "setup: installing npm packages for the end-to-end tests"
  (cd tests/e2e && npm install --no-audit --no-fund --silent >/dev/null)
fi
exit 0
