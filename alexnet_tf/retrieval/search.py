"""Nearest neighbours: Euclidean on float vectors (Fig. 4 right) and Hamming on packed binary codes (§7)."""

import numpy as np


def _top_k_by_key(keys, k):
    """Column indices of the k smallest keys in each row, in ascending order."""
    k = min(k, keys.shape[1])
    part = np.argpartition(keys, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(keys, part, 1).argsort(axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def squared_norms(database):
    """|d|^2 of each database vector: computed once per database, like an index."""
    database = np.asarray(database, np.float32)
    return np.einsum("nd,nd->n", database, database)


def nearest(queries, database, k, chunk=256, db_norms=None):
    """Indices (Q, k) and Euclidean distances (Q, k) of each query's k nearest database vectors.

    Squared distances as |q|^2 - 2 q.d + |d|^2 (one matrix product per chunk of queries);
    `db_norms` = squared_norms(database), when searching the same database repeatedly.
    """
    queries, database = np.asarray(queries, np.float32), np.asarray(database, np.float32)
    db_norms = squared_norms(database) if db_norms is None else db_norms
    indices, distances = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d2 = np.einsum("qd,qd->q", q, q)[:, None] - 2.0 * (q @ database.T) + db_norms[None, :]
        idx = _top_k_by_key(d2, k)
        indices.append(idx)
        distances.append(np.sqrt(np.maximum(np.take_along_axis(d2, idx, 1), 0.0)))
    return np.concatenate(indices), np.concatenate(distances)


def pack_bits(bits):
    """(N, B) booleans -> (N, ceil(B / 64)) uint64 words (bit i of the code in word i // 64)."""
    bits = np.asarray(bits, bool)
    packed = np.packbits(bits, axis=1, bitorder="little")              # (N, ceil(B / 8)) uint8
    pad = (-packed.shape[1]) % 8
    packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def hamming_distances(query_words, database_words):
    """(Q, W) and (N, W) packed codes -> (Q, N) Hamming distances (XOR, then popcount)."""
    out = np.zeros((len(query_words), len(database_words)), np.int64)
    for w in range(query_words.shape[1]):
        out += np.bitwise_count(query_words[:, w, None] ^ database_words[None, :, w])
    return out


def hamming_nearest(query_words, database_words, k, chunk=128):
    """Indices (Q, k) and distances of each query's k nearest codes; ties broken by database index."""
    n = len(database_words)
    indices, distances = [], []
    for start in range(0, len(query_words), chunk):
        d = hamming_distances(query_words[start:start + chunk], database_words)
        idx = _top_k_by_key(d * n + np.arange(n)[None, :], k)  # the key orders by (distance, index)
        indices.append(idx)
        distances.append(np.take_along_axis(d, idx, 1))
    return np.concatenate(indices), np.concatenate(distances)
