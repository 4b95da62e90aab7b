#!/usr/bin/env bash
# Look at the built book as a reader would: full-page screenshots of every page in headless Chromium.
#
#   make book && bash .ci/screenshots.sh        # writes _build/screenshots/*.png
#
# Needs Debian's chromium (apt-get install chromium) and npm. The pages load MathJax from a CDN, which
# this machine cannot reach, so a copy of the site is served with MathJax from npm instead: the
# screenshots then show the equations as a reader online sees them.
set -euo pipefail
cd "$(dirname "$0")/.."
site=_build/html
out=_build/screenshots
[ -f "$site/index.html" ] || { echo "no built book at $site: run 'make book' first" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$site" "$work/site"
(cd "$work" && npm install --silent --no-audit --no-fund mathjax@3 >/dev/null)
cp -r "$work/node_modules/mathjax/es5" "$work/site/_mathjax"
# Point every page at the local MathJax (the CDN address Sphinx writes, whatever its version).
find "$work/site" -name '*.html' -exec sed -i -E \
  's#https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/([a-z-]+\.js)#/_mathjax/\1#g' {} +

port=8765
python3 -m http.server "$port" --directory "$work/site" >/dev/null 2>&1 &
server=$!
sleep 1
mkdir -p "$out"
pages=$(cd "$site" && find . -name '*.html' -not -path './_*' -not -name 'genindex.html' -not -name 'search.html' | sort)
for page in $pages; do
  name=$(echo "${page#./}" | tr '/' '_')
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$work/profile" \
    --window-size=1280,"${HEIGHT:-12000}" --virtual-time-budget=8000 \
    --screenshot="$out/${name%.html}.png" "http://localhost:$port/${page#./}" 2>/dev/null
  echo "$out/${name%.html}.png"
done
