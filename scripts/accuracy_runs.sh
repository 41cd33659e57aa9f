#!/bin/bash
# The accuracy experiments at the final recipe (the TrainConfig defaults: early pooling, 20
# epochs), in the order they are worth having, resumable from results/: each finished run's
# summary goes to results/runs/ (commit it), and a run whose summary is there is not trained
# again, so the plan goes on from a fresh clone on another machine.
#
#   bash scripts/accuracy_runs.sh [DATA]      DATA holds fer2013/ and ck+48/ (../shared/data)
#
# Run it in the background with a log (nohup ... > runs/accuracy.log 2>&1 &); on the 2-core
# CPU each 20-epoch stream takes about 30 min uncontended, a two-stream network (10 epochs)
# about as long, all of CK+ about 30 min.
set -euo pipefail
DATA=${1:-../shared/data}
BSVIZ=(python -m bsviz.ui.cli)
COMMON=(--data-dir "$DATA" --progress false)
FER=(--labels runs/labels/fer2013.npz --out-dir runs/fer2013 --records results/runs/fer2013)

for set in fer2013 ck+48; do  # the photo path's crops and MediaPipe's labels (minutes)
    [ -f "runs/labels/$set.npz" ] || "${BSVIZ[@]}" label --data-dir "$DATA/$set" \
        --out "runs/labels/$set.npz" --workers 2
done

# 1. FER2013 seed 0: image stream, blendshape stream, two-stream network
"${BSVIZ[@]}" eval fer2013 --seeds 0 "${FER[@]}" "${COMMON[@]}"

# 2. CK+, 10 subject-independent folds, each started from seed 0's FER2013 streams (trained
#    again, the same runs, when only their records are left)
if [ "$(ls results/runs/ck 2>/dev/null | wc -l)" -lt 20 ]; then
    for kind in image blendshape; do
        [ -f "runs/fer2013/$kind/seed0/best.pt" ] || "${BSVIZ[@]}" train --kind "$kind" \
            --dataset fer2013 --seed 0 --labels runs/labels/fer2013.npz \
            --out-dir "runs/fer2013/$kind/seed0" --resume true "${COMMON[@]}"
    done
    "${BSVIZ[@]}" eval ck+ --labels runs/labels/ck+48.npz --out-dir runs/ck \
        --records results/runs/ck --init-image runs/fer2013/image/seed0/best.pt \
        --init-blendshape runs/fer2013/blendshape/seed0/best.pt "${COMMON[@]}"
fi

# 3. FER2013 seeds 1 and 2 (the spread of the ablation)
"${BSVIZ[@]}" eval fer2013 --seeds 0 1 2 "${FER[@]}" "${COMMON[@]}"
