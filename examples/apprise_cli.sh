#!/usr/bin/env bash
# Page from the apprise CLI: install the loader once, then any sslsms:// URL works,
# on the command line and in apprise config files.
#   SSLSMS_URL="sslsms://EMULATOR:emulator-token-0123456789@01712345678?base_url=http://127.0.0.1:8025" \
#       bash examples/apprise_cli.sh
set -euo pipefail
PLUGINS="${APPRISE_PLUGIN_DIR:-$HOME/.config/apprise/plugins}"
sslsms-notify apprise install --path "$PLUGINS"

# 1. A URL on the command line
apprise -P "$PLUGINS" -t "deploy" -b "release 2026.11.25 rolled back" "$SSLSMS_URL"

# 2. A YAML config file (see examples/apprise.yml), tagged so -g picks it
CONFIG="$(mktemp -d)/apprise.yml"
cat > "$CONFIG" <<YAML
version: 1
urls:
  - "$SSLSMS_URL":
      - tag: oncall
YAML
apprise -P "$PLUGINS" -c "$CONFIG" -g oncall -b "db1 replication broken"

# 3. A TEXT config file
TEXT_CONFIG="$(dirname "$CONFIG")/apprise.txt"
echo "oncall=$SSLSMS_URL" > "$TEXT_CONFIG"
apprise -P "$PLUGINS" -c "$TEXT_CONFIG" -g oncall -b "cache cluster degraded"
