#!/usr/bin/env bash
# Exactness with learned networks (issue: exactness benchmark, second edition, item 4).
#
#   scripts/learned_exactness.sh OUT
#
# 1. a 32-component full-covariance Gaussian mixture fitted to 8x8 colour patches of scikit-image's
#    photographs (training split): a prior with image-like structure and an exact posterior;
# 2. the project's U-Net (`tiny` preset at 8x8) trained on fresh draws of it: the unconditional denoiser
#    (EDM objective), then EPS fine-tuned from it on the five standard tasks at s_y = 0.05;
# 3. `exactps bench exactness --mixture ... --learned-prior ... --learned-eps ...`: learned EPS, every
#    baseline on the learned prior, and both with the exact (oracle) denoisers, against exact posterior
#    samples.
# Runs whose final checkpoint exists are skipped, and so is a measurement already written.
set -euo pipefail
OUT=${1:?usage: scripts/learned_exactness.sh OUT}
STEPS=${STEPS:-4000}          # the unconditional denoiser
EPS_STEPS=${EPS_STEPS:-2000}  # EPS, fine-tuned from it
THREADS=${THREADS:-1}
mkdir -p "$OUT"
GMM="$OUT/patch-gmm.safetensors"
[ -e "$GMM" ] || python scripts/patch_mixture.py --out "$GMM" --components 32 --iters 40 --threads "$THREADS" > "$OUT/patch-gmm.log" 2>&1

train() {  # train NAME STEPS ARGS...
    local name=$1 steps=$2; shift 2
    if [ -e "$OUT/$name/checkpoints/step-$(printf %09d "$steps").json" ]; then echo "$name: done already"; return; fi
    local resume=(--out "$OUT/$name")
    [ -e "$OUT/$name/config.json" ] && resume=(--resume "$OUT/$name")
    echo "$name: training ($steps steps)"
    exactps train "$@" --data "$GMM" --size 8 --preset tiny --steps "$steps" --batch 128 --lr 5e-4 --warmup 300 \
        --ckpt-every 500 --grid-every 100000 --keep 0 --seed 0 --threads "$THREADS" --no-progress \
        "${resume[@]}" >> "$OUT/$name.log" 2>&1
}
train patch-prior "$STEPS" --objective denoiser
train patch-eps "$EPS_STEPS" --objective eps --sigma-y 0.05 --init "$OUT/patch-prior"

# 3. the measurement: oracle and learned denoisers on the same measurements of the patch mixture; the
#    baselines tuned once with the oracle (--tune-with first); DPS at 250 steps and no DAPS to fit a CPU.
[ -e "$OUT/learned-exactness.json" ] || exactps bench exactness --mixture "$GMM" \
    --learned-prior "$OUT/patch-prior" --learned-eps "$OUT/patch-eps/checkpoints/step-000002000.json" \
    --tasks "${TASKS:-sr4,inpaint-box,deblur-gauss}" --baselines dps:250,pigdm,ddrm,diffpir,ddnm,mpgd \
    --eps ve:dpmpp-2m:10,ve:dpmpp-2m:20,ve:heun:35 --tune-with first \
    --measurements "${MEASUREMENTS:-3}" --runs 1 --tuning-measurements 1 --samples 100 --refs 8 \
    --threads "$THREADS" --no-progress --out "$OUT/learned-exactness" > "$OUT/learned-exactness.log" 2>&1

# 4. does EPS's error shrink with its network's? EPS trained on to 5000 steps, measured alone (learned
#    denoisers only, the same measurements and seeds), and each network's gap to the exact denoiser.
exactps train --resume "$OUT/patch-eps" --steps 5000 --threads "$THREADS" --no-progress >> "$OUT/patch-eps.log" 2>&1
EPS5000="$OUT/patch-eps/checkpoints/step-000005000.json"
[ -e "$OUT/learned-eps5000.json" ] || exactps bench exactness --mixture "$GMM" --learned-prior "$OUT/patch-prior" \
    --learned-eps "$EPS5000" --no-oracle --no-tune --tasks "${TASKS:-sr4,inpaint-box,deblur-gauss}" --baselines ddrm \
    --eps ve:dpmpp-2m:10,ve:dpmpp-2m:20,ve:heun:35 --measurements "${MEASUREMENTS:-3}" --runs 1 --samples 100 --refs 8 \
    --threads "$THREADS" --no-progress --out "$OUT/learned-eps5000" > "$OUT/learned-eps5000.log" 2>&1
for t in sr4 inpaint-box deblur-gauss; do
    for step in 2000 5000; do
        python scripts/denoiser_gap.py --mixture "$GMM" --model "$OUT/patch-eps/checkpoints/step-00000${step}.json" \
            --task "$t" --images 1000 --sigmas 0.05,0.2,1,5,20 > "$OUT/gap-eps${step}-$t.md"
    done
done
python scripts/denoiser_gap.py --mixture "$GMM" --model "$OUT/patch-prior" --images 1000 --sigmas 0.05,0.2,1,5,20 \
    > "$OUT/gap-prior.md"
