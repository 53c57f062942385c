#!/usr/bin/env bash
# CI's first step: the README's first command, run as a new user meets it, before anything else is
# installed. A clean clone of this checkout, an ordinary user (not root), an empty model cache,
# Java, Chromium and Fashion-MNIST hidden. It fails when the command fails, takes longer than
# FIRST_RUN_LIMIT_S (600 s), or trains anything (the shipped models must be loaded, not made).
set -uo pipefail
limit=${FIRST_RUN_LIMIT_S:-600}
src=$(cd "$(dirname "$0")/.." && pwd)
cmd=$(awk '/^```/{f=!f; next} f' "$src/README.md" | grep -vE '^\s*(#|$)' | sed 's/^\s*\$ //' | head -1)
cmd=${cmd%%#*}
[ -n "$cmd" ] || { echo "first run: the README's code block has no first command"; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/first-run.XXXXXX")
git clone -q "$src" "$dir/repo" || exit 1
# The clone has what is committed; the working tree's uncommitted state is not what a user gets.
mkdir -p "$dir/home" "$dir/empty"
home="$dir/home"
runner=(bash -c)
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
  id newcomer >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/bash newcomer
  chown -R newcomer "$dir"
  mounts=""
  for b in java chromium chromedriver; do
    p=$(command -v "$b" 2>/dev/null) && mounts+="mount --bind /dev/null '$(readlink -f "$p")' && "
  done
  [ -d /usr/share/datasets ] && mounts+="mount --bind $dir/empty /usr/share/datasets && "
  runner=(unshare -m --propagation private bash -c "${mounts} exec runuser -u newcomer -- env HOME=$home bash -c \"\$0\"")
  echo "first run: as the unprivileged user 'newcomer', without Java, Chromium or Fashion-MNIST"
else
  echo "first run: as $(id -un) (no root or no unshare here: nothing hidden)"
fi
cd "$dir/repo" || exit 1
SECONDS=0
HOME="$home" UNIFASHION_HOME="$home/.cache/unifashion" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  timeout "$limit" "${runner[@]}" "$cmd" </dev/null >"$dir/first-run.log" 2>&1
rc=$?
took=$SECONDS
tail -n 25 "$dir/first-run.log" | sed 's/^/  | /'
echo "first run: \`$cmd\` exit $rc after ${took}s (limit ${limit}s; log $dir/first-run.log)"
[ $rc -eq 124 ] && { echo "FAIL: the first command took longer than ${limit}s"; exit 1; }
[ $rc -ne 0 ] && { echo "FAIL: the first command failed"; exit 1; }
if grep -qE "training the default model|training the dual-encoder baseline|^phase1-|train_attribute_classifier" \
    "$dir/first-run.log" || [ -d "$home/.cache/unifashion/runs" ] || [ -n "$(ls -A "$home/.cache/unifashion/models" 2>/dev/null)" ]; then
  echo "FAIL: the first command trained a model (it must load the shipped ones)"
  ls -R "$home/.cache/unifashion" 2>/dev/null | head -20
  exit 1
fi
echo "first run: OK, nothing trained"
rm -rf "$dir"
