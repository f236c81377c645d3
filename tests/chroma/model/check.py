"""The offline model embeds as all-MiniLM-L6-v2 does: "hello world" against the
vector sentence-transformers publishes (first 7 of 384 components)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import offline_model  # noqa: E402,F401
from chromadb.utils.embedding_functions import DefaultEmbeddingFunction  # noqa: E402

v = np.asarray(DefaultEmbeddingFunction()(["hello world"])[0])
want = [-3.44772749e-02, 3.10231782e-02, 6.73497003e-03, 2.61089858e-02,
        -3.93620245e-02, -1.60302445e-01, 6.69240132e-02]
err = float(np.abs(v[:7] - want).max())
if v.shape != (384,) or abs(np.linalg.norm(v) - 1) > 1e-5 or err > 1e-5:
    sys.exit(f"the offline model embeds wrongly: shape {v.shape}, max error {err:.2e}")
print(f"default embedding model: ok (max error {err:.1e} against published values)")
