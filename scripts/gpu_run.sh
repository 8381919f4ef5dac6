#!/usr/bin/env bash
# The 64x64 GPU run of the trained-models study, in under 9 minutes on one H100/H200 (bf16):
#   1. training throughput (img/s) and peak memory of the 64x64 presets, --compile off and on;
#   2. the faces prior (compact-64 U-Net, unconditional), for PRIOR_S seconds at the measured speed;
#   3. EPS fine-tuned from it, amortised over the five paper-* tasks, for EPS_S seconds;
#   4. a reduced `exactps bench images`: 32 test images x 4 samples, DPS at 250 steps, every baseline
#      tuned on 8 validation images;
#   5. OUTDIR gets at most 8 files, each under 16 MiB: results.json (throughput, bench rows), the bench
#      grid of paper-sr4, the fp16 exports of both models (faces-64-prior, faces-64-eps).
#
#   scripts/gpu_run.sh OUTDIR        (CARRY: what scripts/gpu_pack.sh made, default gpu_carry)
#   REHEARSAL=1 scripts/gpu_run.sh OUTDIR    the same steps at toy sizes on a CPU (a few minutes)
set -euo pipefail
OUT=${1:?usage: scripts/gpu_run.sh OUTDIR}
CARRY=${CARRY:-gpu_carry}
DATA=$CARRY/data
WORK=$(mktemp -d)
mkdir -p "$OUT"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

if ! python3 -c "import exactps, deepinv, lpips" 2>/dev/null; then
    python3 -m pip install -q --no-index --find-links "$CARRY/wheels" exactps deepinv lpips
fi

if [ "${REHEARSAL:-0}" = 1 ]; then
    SIZE=16 PRESETS="tiny" TRAIN_PRESET=tiny BATCH=8 TP_STEPS=4 PRIOR_S=20 EPS_S=20 IMAGES=2 VAL=1 DPS=dps:10
    BASELINES="$DPS,ddnm:10" METRICS=psnr,psnr_mean,crps_pix,coverage MAX_STEPS=6 COMPILE_MODES="off"
else
    SIZE=64 PRESETS="small-64 base-64 compact-64" TRAIN_PRESET=compact-64 BATCH=256 TP_STEPS=60 PRIOR_S=150
    EPS_S=120 IMAGES=32 VAL=8 DPS=dps:250 BASELINES="dps:250,pigdm,ddrm,diffpir,ddnm,daps,mpgd"
    METRICS=psnr,psnr_mean,ssim,lpips,crps_pix,mmd_pix,coverage MAX_STEPS=100000 COMPILE_MODES="off on"
fi
TASKS=paper-inpaint-random,paper-inpaint-box,paper-sr4,paper-deblur-gauss,paper-deblur-motion
COMMON=(--size "$SIZE" --data "$DATA/faces/train" --batch "$BATCH" --log-every 5 --seed 0 --no-progress)

# 1. throughput: img/s of the last logged window, peak GPU memory
echo "[$(elapsed) s] throughput" >&2
echo '[' > "$WORK/throughput.json"
first=1
for preset in $PRESETS; do
    for mode in $COMPILE_MODES; do
        flag=(); [ "$mode" = on ] && flag=(--compile)
        run="$WORK/tp-$preset-$mode"
        if timeout 240 exactps train --objective denoiser --preset "$preset" "${COMMON[@]}" "${flag[@]}" \
            --steps "$TP_STEPS" --warmup 1 --ckpt-every 100000 --grid-every 100000 --out "$run" > "$run.log" 2>&1; then
            line=$(tail -n 1 "$run/log.jsonl")
        else
            line='{"error": "failed or timed out"}'
        fi
        [ $first = 1 ] || echo ',' >> "$WORK/throughput.json"
        first=0
        echo "{\"preset\": \"$preset\", \"compile\": \"$mode\", \"last_log\": $line}" >> "$WORK/throughput.json"
    done
done
echo ']' >> "$WORK/throughput.json"
rate=$(python3 - "$WORK/throughput.json" "$TRAIN_PRESET" <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1])) if r["preset"] == sys.argv[2] and "img_per_s" in r["last_log"]]
print(max((r["last_log"]["img_per_s"] for r in rows), default=100.0))
PY
)
steps_for() { python3 -c "print(max(2, min($MAX_STEPS, int($rate * $1 / $BATCH))))"; }

# 2-3. the prior, then EPS fine-tuned from it
PRIOR_STEPS=$(steps_for "$PRIOR_S")
EPS_STEPS=$(steps_for "$EPS_S")
echo "[$(elapsed) s] prior: $PRIOR_STEPS steps at ~$rate img/s" >&2
exactps train --objective denoiser --preset "$TRAIN_PRESET" "${COMMON[@]}" --steps "$PRIOR_STEPS" --lr 1e-3 \
    --ckpt-every "$PRIOR_STEPS" --grid-every "$PRIOR_STEPS" --out "$WORK/prior" > "$WORK/prior.log" 2>&1
echo "[$(elapsed) s] EPS fine-tune: $EPS_STEPS steps" >&2
exactps train --objective eps --task "$TASKS" --init "$WORK/prior" --preset "$TRAIN_PRESET" "${COMMON[@]}" \
    --steps "$EPS_STEPS" --lr 1e-3 --ckpt-every "$EPS_STEPS" --grid-every "$EPS_STEPS" --out "$WORK/eps" \
    > "$WORK/eps.log" 2>&1

# 4. reduced benchmark
echo "[$(elapsed) s] bench images" >&2
exactps bench images --test "$DATA/faces/test" --val "$DATA/faces/val" --prior "$WORK/prior" --eps "$WORK/eps" \
    --tasks "$TASKS" --images "$IMAGES" --samples 4 --val-images "$VAL" --eps-nfe 20,1 --baselines "$BASELINES" \
    --metrics "$METRICS" --lpips-weights "$CARRY/weights" --no-progress --out "$WORK/bench" > "$WORK/bench.log" 2>&1

# 5. what comes back
exactps export "$WORK/prior" --out "$OUT/faces-$SIZE-prior" > /dev/null
exactps export "$WORK/eps" --out "$OUT/faces-$SIZE-eps" > /dev/null
cp "$WORK/bench-paper-sr4.png" "$OUT/bench-paper-sr4.png"
python3 - "$WORK" "$OUT/results.json" "$PRIOR_STEPS" "$EPS_STEPS" "$(elapsed)" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
logs = {name: [json.loads(line) for line in (work / name / "log.jsonl").read_text().splitlines()]
        for name in ("prior", "eps")}
out = {
    "throughput": json.loads((work / "throughput.json").read_text()),
    "steps": {"prior": int(sys.argv[3]), "eps": int(sys.argv[4])},
    "train_logs": logs,
    "bench": json.loads((work / "bench.json").read_text()),
    "bench_log_tail": (work / "bench.log").read_text()[-6000:],
    "seconds": int(sys.argv[5]),
}
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
PY
echo "[$(elapsed) s] done: $(ls "$OUT" | tr '\n' ' ')" >&2
