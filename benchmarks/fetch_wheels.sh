#!/usr/bin/env bash
# Download, here (where a package registry answers), the wheels that benchmarks/gpu_check.sh
# installs on a GPU machine with torch and torchvision but no registry:
#   - what `import tuneable_gan.trainer` and an evaluation need beyond torch, torchvision, numpy
#     and Pillow: torch-fidelity, PyYAML, tqdm (about 1 MiB);
#   - what benchmarks/step_speed.py's data (scikit-learn's bundled digits) needs: scikit-learn,
#     scipy, joblib, threadpoolctl, cloudpickle, narwhals (about 44 MiB).
# Pure-Python wheels where they exist, CPython manylinux x86_64 builds for the compiled ones.
# Ray, optuna, pandas, pyarrow and matplotlib are not needed there (sweeps and reports only).
#
#   bash benchmarks/fetch_wheels.sh [DEST]     # DEST defaults to .wheels (ignored by git)
#   PYVER=3.11 bash benchmarks/fetch_wheels.sh /tmp/wheels311    # for a local smoke test
set -euo pipefail
DEST=${1:-.wheels}
PYVER=${PYVER:-3.12}
PY=${PYTHON:-python3}
# The versions the project is developed and tested with.
PACKAGES=(torch-fidelity==0.4.0 PyYAML==6.0.4 tqdm==4.70.1
          scikit-learn==1.9.1 scipy==1.17.1 joblib==1.6.0 threadpoolctl==3.8.0
          cloudpickle==3.1.3 narwhals==2.29.0)
mkdir -p "$DEST"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${PACKAGES[@]}"
du -sh "$DEST"
