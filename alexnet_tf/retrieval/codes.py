"""§7: an auto-encoder compresses the last-hidden-layer vectors to short binary codes; precision@K
and search speed of Hamming-distance retrieval on them against Euclidean retrieval on the vectors."""

import os
import time

import keras
import numpy as np

from alexnet_tf.retrieval.features import FEATURE_LAYER
from alexnet_tf.retrieval.search import hamming_nearest, nearest, pack_bits, squared_norms


@keras.saving.register_keras_serializable(package="alexnet_tf")
class CodeNoise(keras.layers.Layer):
    """Adds N(0, stddev^2) noise in training only (keras.layers.GaussianNoise caps stddev at 1)."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.stddev, self.seed = stddev, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or not self.stddev:
            return inputs
        return inputs + keras.random.normal(keras.ops.shape(inputs), stddev=self.stddev, seed=self.seed_generator,
                                            dtype=inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


def build_autoencoder(dim, bits, hidden=512, noise=4.0):
    """The §7 auto-encoder on standardised vectors: dim -> hidden -> bits logistic code units -> hidden -> dim.

    During training, Gaussian noise (std `noise`) is added to the input of the logistic code
    units: to get information through, the encoder learns large pre-activations, so the code
    units saturate at 0 or 1 and thresholding them at 0.5 loses little (Krizhevsky & Hinton 2011,
    "Using very deep autoencoders for content-based image retrieval", after Salakhutdinov &
    Hinton's semantic hashing). Returns (autoencoder, encoder); the encoder maps vectors to the
    code units' pre-activations, and the binary code is `logits > 0`.
    """
    x = keras.Input((dim,), name="features")
    h = keras.layers.Dense(hidden, activation="relu", name="encoder_hidden")(x)
    logits = keras.layers.Dense(bits, name="code_logits")(h)
    noisy = CodeNoise(noise, name="code_noise")(logits)
    code = keras.layers.Activation("sigmoid", name="code")(noisy)
    h = keras.layers.Dense(hidden, activation="relu", name="decoder_hidden")(code)
    reconstruction = keras.layers.Dense(dim, name="reconstruction")(h)
    return keras.Model(x, reconstruction, name=f"autoencoder_{bits}"), keras.Model(x, logits, name=f"encoder_{bits}")


class _EpochLines(keras.callbacks.Callback):
    """One printed line per auto-encoder epoch: a long training shows how far it is."""

    def __init__(self, bits, epochs):
        super().__init__()
        self.bits, self.epochs, self.start = bits, epochs, None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print(f"  auto-encoder, {self.bits} bits: epoch {epoch + 1}/{self.epochs}, reconstruction loss "
              f"{(logs or {}).get('loss', float('nan')):.4f}, {time.perf_counter() - self.start:.0f} s", flush=True)


def train_autoencoder(features, bits, epochs=20, batch_size=256, hidden=512, noise=4.0, lr=1e-3, seed=0,
                      progress=False):
    """Train the §7 auto-encoder on (N, D) vectors (standardised per dimension, squared reconstruction
    error, Adam); `progress`: print a line per epoch. Returns the encoder: raw vectors -> code logits
    (the standardisation is its first layer)."""
    keras.utils.set_random_seed(seed)
    normalizer = keras.layers.Normalization(name="standardize")
    normalizer.adapt(features)
    z = keras.ops.convert_to_numpy(normalizer(features))
    autoencoder, encoder = build_autoencoder(features.shape[1], bits, hidden, noise)
    autoencoder.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    autoencoder.fit(z, z, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                    callbacks=[_EpochLines(bits, epochs)] if progress else [])
    x = keras.Input((features.shape[1],), name="features")
    return keras.Model(x, encoder(normalizer(x)), name=f"encoder_{bits}")


def binary_codes(encoder, features, batch_size=4096):
    """(N, D) vectors -> (N, bits) booleans: the code units thresholded at 0.5 (logits at 0)."""
    return encoder.predict(features, batch_size=batch_size, verbose=0) > 0


def random_hyperplane_codes(train_features, bits, seed=0):
    """Baseline: sign of random projections of the centred vectors (LSH, Charikar 2002). Returns a function."""
    rng = np.random.default_rng(seed)
    planes = rng.normal(size=(train_features.shape[1], bits)).astype(np.float32)
    centre = train_features.mean(0)
    return lambda f: (np.asarray(f, np.float32) - centre) @ planes > 0

# === Precision and speed ===

def precision_at_k(retrieved_labels, query_labels):
    """Mean fraction of the retrieved items that share the query's label: (Q, K), (Q,) -> float."""
    return float(np.mean(np.asarray(retrieved_labels) == np.asarray(query_labels)[:, None]))


def time_search(search, queries, repeat=3):
    """Best-of-`repeat` wall time of search(queries), in seconds."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        search(queries)
        best = min(best, time.perf_counter() - start)
    return best


def _scored(method, bits, bytes_per_image, search, queries, timing_queries, labels, ks):
    """A row: precision@K of search(queries) -> (Q, max K) database indices, and its time per query
    on a batch and on one query. `labels` = (database labels, query labels)."""
    database_labels, query_labels = labels
    idx, _ = search(queries)
    row = {"method": method, "bits": bits, "bytes_per_image": bytes_per_image}
    row.update({f"p@{k}": precision_at_k(database_labels[idx[:, :k]], query_labels) for k in ks})
    row["ms_per_query"] = 1e3 * time_search(search, timing_queries) / len(timing_queries)
    row["ms_single_query"] = 1e3 * time_search(search, timing_queries[:1], repeat=20)
    return row


def _euclidean_row(method, database, queries, timing_queries, labels, ks):
    """Euclidean search on float32 vectors (4 bytes a dimension)."""
    database = np.ascontiguousarray(database, np.float32)
    norms = squared_norms(database)

    def search(q):
        return nearest(q, database, max(ks), db_norms=norms)

    return _scored(method, 32 * database.shape[1], 4 * database.shape[1], search, queries, timing_queries, labels, ks)


def _hamming_row(method, database_bits, query_bits, timing_bits, labels, ks):
    """Hamming search on binary codes packed into 64-bit words, and how many distinct codes the database holds."""
    words = pack_bits(database_bits)

    def search(q):
        return hamming_nearest(q, words, max(ks))

    row = _scored(method, database_bits.shape[1], 8 * words.shape[1], search, pack_bits(query_bits),
                  pack_bits(timing_bits), labels, ks)
    row["distinct_codes"] = int(len(np.unique(words, axis=0)))
    return row


def evaluate_retrieval(train_features, train_labels, val_features, val_labels, bits_list=(16, 32, 64, 128),
                       ks=(1, 10, 100), queries=None, epochs=20, timing_queries=1000, extra=None, verbose=True,
                       out_dir=None):
    """Precision@K and search speed of Euclidean (fc7) vs Hamming (auto-encoder codes) retrieval.

    Queries are validation vectors, the database is the training set. Returns a list of rows
    (dicts). `extra` maps a name to (train_vectors, val_vectors) for more Euclidean baselines.
    """
    if queries:
        val_features, val_labels = val_features[:queries], val_labels[:queries]
    labels, timing = (train_labels, val_labels), val_features[:timing_queries]
    rows = []

    def log(row):
        rows.append(row)
        if verbose:
            print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)

    log(_euclidean_row(f"euclidean {FEATURE_LAYER}", train_features, val_features, timing, labels, ks))
    for name, (db, q) in (extra or {}).items():
        q = q[:queries] if queries else q  # the same queries as the fc7 vectors
        log(_euclidean_row(name, db, q, q[:timing_queries], labels, ks))
    for bits in bits_list:
        start = time.perf_counter()
        encoder = train_autoencoder(train_features, bits, epochs=epochs, progress=verbose)
        seconds = time.perf_counter() - start
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            encoder.save(os.path.join(out_dir, f"encoder_{bits}.keras"))
        log(_hamming_row(f"hamming autoencoder ({seconds:.0f} s training)", binary_codes(encoder, train_features),
                         binary_codes(encoder, val_features), binary_codes(encoder, timing), labels, ks))
        lsh = random_hyperplane_codes(train_features, bits)
        log(_hamming_row("hamming random hyperplanes", lsh(train_features), lsh(val_features), lsh(timing), labels, ks))
    return rows


def markdown_table(rows, ks=(1, 10, 100)):
    """The Markdown table of `evaluate_retrieval` rows (as in docs/retrieval.md)."""
    head = ["method", "bits", "bytes/image"] + [f"precision@{k}" for k in ks] + ["ms/query (batch)", "ms (1 query)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], str(r["bits"]), str(r["bytes_per_image"])] + [f"{r[f'p@{k}']:.3f}" for k in ks]
        cells += [f"{r['ms_per_query']:.3f}", f"{r['ms_single_query']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
