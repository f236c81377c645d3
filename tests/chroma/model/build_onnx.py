#!/usr/bin/env python3
"""Build an ONNX BertModel graph (output: last_hidden_state) for
sentence-transformers/all-MiniLM-L6-v2 directly from model.safetensors,
using only `onnx` + `numpy` (no torch). Inputs/outputs match what
chromadb's ONNXMiniLM_L6_V2 feeds/reads:
  inputs : input_ids, attention_mask, token_type_ids  (int64 [batch, seq])
  output : last_hidden_state                           (float32 [batch, seq, 384])

usage: build_onnx.py model.safetensors config.json out/model.onnx
"""
import json
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def load_safetensors(path):
    dt = {"F32": np.float32, "I64": np.int64}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for k, v in header.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            f.seek(base + s)
            out[k] = np.frombuffer(f.read(e - s), dtype=dt[v["dtype"]]).reshape(v["shape"]).copy()
    return out


def build(st_path, cfg_path, out_path):
    W = load_safetensors(st_path)
    cfg = json.load(open(cfg_path))
    H = cfg["hidden_size"]
    NH = cfg["num_attention_heads"]
    HD = H // NH
    L = cfg["num_hidden_layers"]
    eps = float(cfg["layer_norm_eps"])
    assert cfg["hidden_act"] == "gelu" and cfg["position_embedding_type"] == "absolute"

    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, **kw))
        return outs[0]

    cnt = [0]

    def t(prefix):
        cnt[0] += 1
        return f"{prefix}_{cnt[0]}"

    def linear(x, prefix):
        w = init(prefix + ".weight_T", W[prefix + ".weight"].T)
        b = init(prefix + ".bias", W[prefix + ".bias"])
        y = node("MatMul", [x, w], [t("mm")])
        return node("Add", [y, b], [t("add")])

    def layernorm(x, prefix):
        g = init(prefix + ".weight", W[prefix + ".weight"])
        b = init(prefix + ".bias", W[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], [t("ln")], axis=-1, epsilon=eps)

    # constants
    c1v = init("const_1_vec", np.array([1], dtype=np.int64))
    one_f = init("const_one_f", np.array(1.0, dtype=np.float32))
    minf = init("const_min_f", np.array(np.finfo(np.float32).min, dtype=np.float32))
    scale = init("const_scale", np.array(1.0 / np.sqrt(HD), dtype=np.float32))
    ax12 = init("const_axes_12", np.array([1, 2], dtype=np.int64))
    shp_heads = init("const_shape_heads", np.array([0, 0, NH, HD], dtype=np.int64))
    shp_hidden = init("const_shape_hidden", np.array([0, 0, H], dtype=np.int64))
    sqrt2 = init("const_sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    half = init("const_half", np.array(0.5, dtype=np.float32))

    # embeddings
    we = init("embeddings.word_embeddings.weight", W["embeddings.word_embeddings.weight"])
    pe = init("embeddings.position_embeddings.weight", W["embeddings.position_embeddings.weight"])
    te = init("embeddings.token_type_embeddings.weight", W["embeddings.token_type_embeddings.weight"])
    x_w = node("Gather", [we, "input_ids"], [t("word")], axis=0)
    # position ids as in HF's torch export: position_ids[:, :seq_len] (1-D Slice inputs)
    shape = node("Shape", ["input_ids"], [t("shape")])
    seq = node("Slice", [shape, c1v, init("const_2_vec", np.array([2], dtype=np.int64))], [t("seqlen")])
    pid = init("embeddings.position_ids", W["embeddings.position_ids"].astype(np.int64))
    pos_ids = node("Slice", [pid, init("const_0_vec", np.array([0], dtype=np.int64)), seq, c1v], [t("pos_ids")])
    x_p = node("Gather", [pe, pos_ids], [t("pos")], axis=0)
    x_t = node("Gather", [te, "token_type_ids"], [t("tt")], axis=0)
    x = node("Add", [x_w, x_p], [t("add")])
    x = node("Add", [x, x_t], [t("add")])
    h = layernorm(x, "embeddings.LayerNorm")

    # extended attention mask: (1 - mask) * finfo(float32).min, shape [B,1,1,S]
    mf = node("Cast", ["attention_mask"], [t("mask_f")], to=TensorProto.FLOAT)
    mu = node("Unsqueeze", [mf, ax12], [t("mask_u")])
    inv = node("Sub", [one_f, mu], [t("mask_inv")])
    ext = node("Mul", [inv, minf], [t("mask_ext")])

    for i in range(L):
        p = f"encoder.layer.{i}."
        q = linear(h, p + "attention.self.query")
        k = linear(h, p + "attention.self.key")
        v = linear(h, p + "attention.self.value")
        q = node("Transpose", [node("Reshape", [q, shp_heads], [t("r")])], [t("qT")], perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, shp_heads], [t("r")])], [t("kT")], perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, shp_heads], [t("r")])], [t("vT")], perm=[0, 2, 1, 3])
        s = node("MatMul", [q, k], [t("scores")])
        s = node("Mul", [s, scale], [t("scaled")])
        s = node("Add", [s, ext], [t("masked")])
        pr = node("Softmax", [s], [t("probs")], axis=-1)
        c = node("MatMul", [pr, v], [t("ctx")])
        c = node("Transpose", [c], [t("ctxT")], perm=[0, 2, 1, 3])
        c = node("Reshape", [c, shp_hidden], [t("ctxR")])
        a = linear(c, p + "attention.output.dense")
        a = node("Add", [a, h], [t("res")])
        a = layernorm(a, p + "attention.output.LayerNorm")
        it = linear(a, p + "intermediate.dense")
        # exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))
        g = node("Div", [it, sqrt2], [t("gdiv")])
        g = node("Erf", [g], [t("gerf")])
        g = node("Add", [g, one_f], [t("gadd")])
        g = node("Mul", [it, g], [t("gmul")])
        g = node("Mul", [g, half], [t("ghalf")])
        o = linear(g, p + "output.dense")
        o = node("Add", [o, a], [t("res")])
        h = layernorm(o, p + "output.LayerNorm")

    nodes.append(helper.make_node("Identity", [h], ["last_hidden_state"]))

    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch_size", "sequence_length"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", H])]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="build_onnx.py (numpy->onnx, from model.safetensors)")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    print("wrote", out_path)


if __name__ == "__main__":
    build(*sys.argv[1:4])
