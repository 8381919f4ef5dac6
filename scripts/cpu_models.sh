#!/usr/bin/env bash
# The CPU scale of the trained-models study: `tiny` networks on 32x32 faces and natural photographs,
# trained on the training split only, two processes side by side (one thread each), one
# `exactps bench images` per dataset as soon as its models exist, then the quality-vs-images
# curves. About 2.5 hours on 2 cores.
#
#   scripts/cpu_models.sh DATA WEIGHTS OUT      (DATA holds {faces,natural}/{train,val,test};
#                                                WEIGHTS the offline LPIPS files)
#
# Per dataset D (faces, natural), in OUT:
#   D-32-prior        unconditional denoiser (EDM objective), STEPS steps
#   D-32-eps          EPS fine-tuned from the prior, one network for the five paper-* tasks, STEPS steps
#   D-32-eps-scratch  the same EPS training from random weights (same budget; datasets in SCRATCH)
#   D-32-cond         the conditional (Palette-style) baseline fine-tuned from the prior (same budget)
# and, on faces only, the conditioning ablation on paper-sr4 (ABL_STEPS steps from the prior):
#   faces-32-sr4-map, faces-32-sr4-obs (`map` vs the paper's pivot + observation input)
# A training whose final checkpoint exists is skipped, so the script can be re-run after a stop.
set -euo pipefail
DATA=${1:?usage: scripts/cpu_models.sh DATA WEIGHTS OUT}
WEIGHTS=${2:?usage: scripts/cpu_models.sh DATA WEIGHTS OUT}
OUT=${3:?usage: scripts/cpu_models.sh DATA WEIGHTS OUT}
STEPS=${STEPS:-1200}
ABL_STEPS=${ABL_STEPS:-300}
SCRATCH=${SCRATCH:-"faces natural"}   # datasets that get the from-scratch arm
IMAGES=${IMAGES:-8}
TASKS=paper-inpaint-random,paper-inpaint-box,paper-sr4,paper-deblur-gauss,paper-deblur-motion
mkdir -p "$OUT"

train() {  # train NAME STEPS ARGS...: one run, skipped when its final checkpoint exists
    local name=$1 steps=$2; shift 2
    if [ -e "$OUT/$name/checkpoints/step-$(printf %09d "$steps").json" ]; then
        echo "$name: done already"; return
    fi
    local resume=(--out "$OUT/$name")
    [ -e "$OUT/$name/config.json" ] && resume=(--resume "$OUT/$name")
    echo "$name: training ($steps steps)"
    exactps train "$@" --steps "$steps" --size 32 --preset tiny --batch 32 --lr 5e-4 --warmup 200 \
        --ckpt-every 200 --grid-every 600 --keep 0 --seed 0 --threads 1 --no-progress \
        "${resume[@]}" >> "$OUT/$name.log" 2>&1
}

arms() {  # arms DATASET: the EPS fine-tune, the scratch arm and the conditional arm of one dataset
    local d=$1 prior="$OUT/$1-32-prior"
    train "$d-32-eps" "$STEPS" --objective eps --task "$TASKS" --data "$DATA/$d/train" --init "$prior"
    if [[ " $SCRATCH " == *" $d "* ]]; then
        train "$d-32-eps-scratch" "$STEPS" --objective eps --task "$TASKS" --data "$DATA/$d/train"
    fi
    train "$d-32-cond" "$STEPS" --objective conditional --task "$TASKS" --data "$DATA/$d/train" --init "$prior"
}

bench() {  # bench DATASET: every method on IMAGES test images x 4 samples, baselines tuned on val
    local d=$1 eps=("$OUT/$1-32-eps")
    [ -e "$OUT/bench-$d-32.json" ] && { echo "bench $d: done already"; return; }
    [ -e "$OUT/$d-32-eps-scratch" ] && eps+=("$OUT/$d-32-eps-scratch")
    exactps bench images --test "$DATA/$d/test" --val "$DATA/$d/val" --prior "$OUT/$d-32-prior" \
        --eps "${eps[@]}" --conditional "$OUT/$d-32-cond" \
        --tasks "$TASKS" --images "$IMAGES" --samples 4 --val-images 4 --eps-nfe 20,1 --conditional-nfe 20 \
        --baselines dps:250,pigdm,ddrm,diffpir,ddnm,daps,mpgd \
        --metrics psnr,psnr_mean,ssim,lpips,crps_pix,mmd_pix,coverage \
        --lpips-weights "$WEIGHTS" --threads 1 --no-progress --out "$OUT/bench-$d-32" > "$OUT/bench-$d-32.log" 2>&1
}

curves() {  # curves DATASET TASKS OUTNAME RUN...: validation PSNR of every checkpoint vs images seen
    local d=$1 tasks=$2 name=$3; shift 3
    [ -e "$OUT/$name.json" ] && { echo "$name: done already"; return; }
    exactps bench models "$@" --all-checkpoints --data "$DATA/$d/val" --tasks "$tasks" --images 16 \
        --rho 10 --samples 2 --nfe 20 --threads 1 --out "$OUT/$name" --plot "$OUT/$name.png" > "$OUT/$name.log" 2>&1
}

lane_faces() {
    train faces-32-prior "$STEPS" --objective denoiser --data "$DATA/faces/train"
    arms faces
    bench faces
    curves faces "$TASKS" curves-faces-32 "$OUT/faces-32-eps" "$OUT/faces-32-eps-scratch" "$OUT/faces-32-cond"
    for c in map obs; do
        train "faces-32-sr4-$c" "$ABL_STEPS" --objective eps --task paper-sr4 --conditioning "$c" \
            --data "$DATA/faces/train" --init "$OUT/faces-32-prior"
    done
    curves faces paper-sr4 ablation-faces-32-sr4 "$OUT/faces-32-sr4-map" "$OUT/faces-32-sr4-obs"
}

lane_natural() {
    train natural-32-prior "$STEPS" --objective denoiser --data "$DATA/natural/train"
    arms natural
    bench natural
    local runs=("$OUT/natural-32-eps" "$OUT/natural-32-cond")
    [ -e "$OUT/natural-32-eps-scratch" ] && runs+=("$OUT/natural-32-eps-scratch")
    curves natural "$TASKS" curves-natural-32 "${runs[@]}"
}


lane_faces & lane_natural & wait
