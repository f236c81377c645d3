"""Helpers the Python benchmark drivers share: the fvecs/ivecs formats of
../shared/data and a latency quantile."""
import numpy as np


def fvecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].view(np.float32).copy()


def ivecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].copy()


def quantile(xs, q):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * q)]
