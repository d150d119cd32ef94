#!/usr/bin/env bash
# Shows that a `pimtrain report` page renders: loads it in headless Chromium (Debian's chromium,
# installed with apt-get if missing), dumps the DOM after load and takes a screenshot, then
# checks the sections are in the DOM and that the screenshot shows the plots (coloured pixels:
# text and tables are grey, so colour comes only from decoded images).
#
#   scripts/check_report.sh              # trains the T-PIM preset briefly and reports on it
#   scripts/check_report.sh RUN_DIR      # reports on an existing run (or sweep) directory
#
# PIMTRAIN=path/to/pimtrain overrides the binary (default build/release/pimtrain). Writes the
# DOM dump and screenshot to a temporary directory it prints, kept for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
PIMTRAIN=${PIMTRAIN:-build/release/pimtrain}
[ -x "$PIMTRAIN" ] || { echo "check_report: no $PIMTRAIN (build first, or set PIMTRAIN)" >&2; exit 2; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "check_report: installing chromium (apt-get)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

work=$(mktemp -d /tmp/pimtrain-check-report-XXXXXX)
if [ $# -ge 1 ]; then
  run=$1
else
  run=$work/run
  "$PIMTRAIN" train presets/chips/tpim.yaml --set train.epochs=3 --set data.train_limit=2000 \
    --set data.test_limit=500 --set threads=2 --out "$run" >/dev/null
fi
"$PIMTRAIN" report "$run" --out "$work/report"
page=$work/report/index.html

# Root cannot use Chromium's sandbox; no GPU here.
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=10000)
chromium "${flags[@]}" --dump-dom "file://$page" >"$work/dom.html" 2>"$work/chromium.log"
chromium "${flags[@]}" --window-size=1280,7000 --screenshot="$work/screenshot.png" \
  "file://$page" >>"$work/chromium.log" 2>&1

/usr/bin/python3 - "$work" <<'EOF'
import sys, re
import matplotlib
matplotlib.use("Agg")
import matplotlib.image as mpimg

work = sys.argv[1]
dom = open(f"{work}/dom.html", encoding="utf-8").read()
sections = re.findall(r'<section id="([a-z]+)"', dom)
images = re.findall(r'<img [^>]*data-file="([^"]+)"', dom)
img = mpimg.imread(f"{work}/screenshot.png")[:, :, :3]
mx, mn = img.max(axis=2), img.min(axis=2)
coloured = ((mx - mn) > 0.25).mean()
print(f"DOM: {len(dom)} bytes, sections {', '.join(sections)}; {len(images)} images "
      f"({', '.join(images)})")
print(f"screenshot: {img.shape[1]}x{img.shape[0]} px, {100 * coloured:.1f}% coloured pixels")
sweep = "points" in sections
wanted = {"summary", "plots", "points"} if sweep else {"summary", "curves", "cost", "sparsity"}
ok = wanted <= set(sections) and len(images) >= (1 if sweep else 3) and coloured > 0.001
print("check_report: " + ("OK, the page renders with its plots" if ok else "FAILED"))
sys.exit(0 if ok else 1)
EOF
echo "check_report: DOM and screenshot in $work"
