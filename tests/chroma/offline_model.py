"""A pytest plugin (run.py loads it with -p): the chromadb client's default
embedding function reads its model from tests/chroma/.model (made by
model/install.sh from PyPI) instead of downloading it from Chroma's S3 bucket."""
from pathlib import Path

from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

ONNXMiniLM_L6_V2.DOWNLOAD_PATH = Path(__file__).resolve().parent / ".model" / "all-MiniLM-L6-v2"
