#!/usr/bin/env bash
# Pack what scripts/gpu_run.sh needs on a GPU machine that has PyTorch but no internet and no copy of
# the data: a subset of the faces (2000 training, 16 validation and 64 test images), the offline LPIPS
# weights, and wheels of the packages the machine lacks (deepinv, lpips). About 25 MB.
#
#   scripts/gpu_pack.sh CARRY DATA WEIGHTS     (CARRY: a new folder, ignored by git; DATA holds faces/)
set -euo pipefail
CARRY=${1:?usage: scripts/gpu_pack.sh CARRY DATA WEIGHTS}
DATA=${2:?usage: scripts/gpu_pack.sh CARRY DATA WEIGHTS}
WEIGHTS=${3:?usage: scripts/gpu_pack.sh CARRY DATA WEIGHTS}
[ -e "$CARRY" ] && { echo "$CARRY exists; remove it first" >&2; exit 2; }
for split in train:${TRAIN_IMAGES:-2000} val:16 test:64; do
    name=${split%%:*} n=${split##*:}
    mkdir -p "$CARRY/data/faces/$name"
    find "$DATA/faces/$name" -maxdepth 1 -type f -name '*.png' | sort | sed -n "1,${n}p" | xargs -I{} cp {} "$CARRY/data/faces/$name/"
done
mkdir -p "$CARRY/weights" "$CARRY/wheels"
cp "$WEIGHTS"/*.safetensors "$CARRY/weights/"
python3 -m pip download --no-deps --only-binary=:all: -d "$CARRY/wheels" "deepinv>=0.5,<0.6" lpips >/dev/null
python3 -m pip wheel --no-deps -w "$CARRY/wheels" "$(dirname "$0")/.." >/dev/null
du -sh "$CARRY"
