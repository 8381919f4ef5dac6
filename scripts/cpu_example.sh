#!/usr/bin/env bash
# The README's CPU example of `exactps bench images`: two `tiny` models trained for 1200 steps of 32
# images on 32x32 faces (an unconditional prior for the baselines, and EPS from scratch on the five
# paper-* tasks, one process each, side by side), then the benchmark on 8 test images x 4 samples,
# with the baselines tuned on 4 validation images. About 65 minutes on 2 CPU cores.
#
#   scripts/cpu_example.sh DATA WEIGHTS OUT     (DATA holds faces/{train,val,test}; WEIGHTS the LPIPS files)
set -euo pipefail
DATA=${1:?usage: scripts/cpu_example.sh DATA WEIGHTS OUT}
WEIGHTS=${2:?usage: scripts/cpu_example.sh DATA WEIGHTS OUT}
OUT=${3:?usage: scripts/cpu_example.sh DATA WEIGHTS OUT}
TASKS=paper-inpaint-random,paper-inpaint-box,paper-sr4,paper-deblur-gauss,paper-deblur-motion
COMMON=(--preset tiny --size 32 --data "$DATA/faces/train" --steps 1200 --batch 32 --lr 5e-4 --warmup 200
        --ckpt-every 400 --grid-every 400 --keep 2 --seed 0 --threads 1 --no-progress)
exactps train --objective denoiser "${COMMON[@]}" --out "$OUT/faces-32-prior" &
exactps train --objective eps --task "$TASKS" --sigma-y 0.05 "${COMMON[@]}" --out "$OUT/faces-32-eps" &
wait
exactps bench images --test "$DATA/faces/test" --val "$DATA/faces/val" --prior "$OUT/faces-32-prior" \
    --eps "$OUT/faces-32-eps" --tasks "$TASKS" --images 8 --samples 4 --val-images 4 \
    --baselines dps:250,pigdm,ddrm,diffpir,ddnm,daps,mpgd --metrics psnr,psnr_mean,ssim,lpips,crps_pix,mmd_pix,coverage \
    --lpips-weights "$WEIGHTS" --threads 2 --no-progress --out "$OUT/bench-faces-32"
