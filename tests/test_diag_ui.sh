#!/bin/bash
# The web page at /debug/ui in headless Chromium: tests/ui/diag_ui.test.js
# (Debian's chromium, playwright-core installed by ./setup.sh into
# BINARY_DIR/node).  Skips (77) when one of them is missing.
# Args: SOURCE_DIR BINARY_DIR.
set -u
SRC=$1 BIN=$2
skip() { echo "skip: $*"; exit 77; }
[ -x /usr/bin/chromium ] || skip "no /usr/bin/chromium (apt-get install chromium, or ./setup.sh)"
command -v node >/dev/null || skip "node not installed"
[ -d "$BIN/node/node_modules/playwright-core" ] ||
  skip "no playwright-core in $BIN/node (./setup.sh installs it: npm ci from tests/node)"
exec node "$SRC/tests/ui/diag_ui.test.js" "$SRC" "$BIN"
