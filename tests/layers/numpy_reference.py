"""Plain-numpy versions of the equations, the references the layers are tested against."""

import numpy as np


def softmax(x, mask=None):
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def attend(scores, value, mask=None):
    weights = softmax(scores, mask)
    return weights @ value, weights


def bahdanau_scores(query, key, w1, w2, v):
    # score(s, h_j) = v^T tanh(W1 s + W2 h_j)
    hidden = np.tanh((query @ w1)[:, :, None, :] + (key @ w2)[:, None, :, :])
    return (hidden @ v)[..., 0]


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def positional_encoding(length, depth, start=0):
    # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
    pe = np.zeros((length, depth))
    for pos in range(start, start + length):
        for i in range(depth // 2):
            angle = pos / 10000 ** (2 * i / depth)
            pe[pos - start, 2 * i] = np.sin(angle)
            pe[pos - start, 2 * i + 1] = np.cos(angle)
    return pe
