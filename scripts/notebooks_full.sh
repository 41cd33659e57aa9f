#!/usr/bin/env bash
# The notebooks in full mode from a fresh clone, as a new user meets them: clone this
# repository's committed HEAD into DIR, set it up, then run each notebook named (default: 03
# and 04, the ones that train) top to bottom with `jupyter nbconvert --execute`, timed. The
# executed copies go to DIR/out/executed/, the times to DIR/out/times.txt and stdout.
#
#   bash scripts/notebooks_full.sh DIR [NOTEBOOK...]    e.g. /work/fresh 03_train_streams
#
# The notebooks read ../shared/data beside the clone, so DIR's parent must hold shared/. On the
# 2-core CPU 03 then 04 take about 2.5 h (notebooks/README.md): run it in the background, with
# nohup and a log.
set -euo pipefail
DIR=$1
shift
[ $# -gt 0 ] || set -- 03_train_streams 04_two_stream_and_results
[ -e "$DIR" ] && { echo "notebooks_full: $DIR exists; give a new folder" >&2; exit 2; }
[ -d "$(dirname "$DIR")/shared/data" ] || {
    echo "notebooks_full: no shared/data beside $DIR" >&2; exit 2; }
git clone -q "$(cd "$(dirname "$0")/.." && pwd)" "$DIR"
cd "$DIR"
started=$(date +%s)
bash scripts/setup.sh
mkdir -p out/executed
echo "setup $(($(date +%s) - started)) s" | tee out/times.txt
for name in "$@"; do
    started=$(date +%s)
    .venv/bin/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 \
        --output-dir out/executed "notebooks/${name%.ipynb}.ipynb"
    echo "${name%.ipynb} $(($(date +%s) - started)) s ($(date -u +%FT%TZ))" | tee -a out/times.txt
done
