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


def train_autoencoder(features, bits, epochs=20, batch_size=256, hidden=512, noise=4.0, lr=1e-3, seed=0,
                      verbose=0):
    """Train the §7 auto-encoder on (N, D) vectors (standardised per dimension, squared reconstruction
    error, Adam). Returns the encoder: raw vectors -> code logits (the standardisation is its first layer)."""
    keras.utils.set_random_seed(seed)
    normalizer = keras.layers.Normalization(name="standardize")
    normalizer.adapt(features)
    z = keras.ops.convert_to_numpy(normalizer(features))
    autoencoder, encoder = build_autoencoder(features.shape[1], bits, hidden, noise)
    autoencoder.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    autoencoder.fit(z, z, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
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


def evaluate_retrieval(train_features, train_labels, val_features, val_labels, bits_list=(16, 32, 64, 128),
                       ks=(1, 10, 100), queries=None, epochs=20, timing_queries=1000, extra=None, verbose=True,
                       out_dir=None):
    """Precision@K and search speed of Euclidean (fc7) vs Hamming (auto-encoder codes) retrieval.

    Queries are validation vectors, the database is the training set. Returns a list of rows
    (dicts). `extra` maps a name to (train_vectors, val_vectors) for more Euclidean baselines.
    """
    if queries:
        val_features, val_labels = val_features[:queries], val_labels[:queries]
    kmax = max(ks)
    rows = []
    timing = val_features[:timing_queries]

    def log(row):
        rows.append(row)
        if verbose:
            print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)

    def euclidean_row(name, db, q, q_timing):
        db = np.ascontiguousarray(db, np.float32)
        norms = squared_norms(db)
        idx, _ = nearest(q, db, kmax, db_norms=norms)
        row = {"method": name, "bits": 32 * db.shape[1], "bytes_per_image": 4 * db.shape[1]}
        row.update({f"p@{k}": precision_at_k(train_labels[idx[:, :k]], val_labels) for k in ks})
        def search(qq):
            return nearest(qq, db, kmax, db_norms=norms)

        row["ms_per_query"] = 1e3 * time_search(search, q_timing) / len(q_timing)
        row["ms_single_query"] = 1e3 * time_search(search, q_timing[:1], repeat=20)
        log(row)

    def hamming_row(name, db_bits, q_bits, q_timing_bits):
        db_words, q_words = pack_bits(db_bits), pack_bits(q_bits)
        t_words = pack_bits(q_timing_bits)
        idx, _ = hamming_nearest(q_words, db_words, kmax)
        row = {"method": name, "bits": db_bits.shape[1], "bytes_per_image": 8 * db_words.shape[1]}
        row.update({f"p@{k}": precision_at_k(train_labels[idx[:, :k]], val_labels) for k in ks})
        row["ms_per_query"] = 1e3 * time_search(lambda qq: hamming_nearest(qq, db_words, kmax), t_words) / len(t_words)
        row["ms_single_query"] = 1e3 * time_search(lambda qq: hamming_nearest(qq, db_words, kmax), t_words[:1],
                                                   repeat=20)
        row["distinct_codes"] = int(len(np.unique(db_words, axis=0)))
        log(row)

    euclidean_row(f"euclidean {FEATURE_LAYER}", train_features, val_features, timing)
    for name, (db, q) in (extra or {}).items():
        euclidean_row(name, db, q, q[:timing_queries])
    for bits in bits_list:
        start = time.perf_counter()
        encoder = train_autoencoder(train_features, bits, epochs=epochs)
        seconds = time.perf_counter() - start
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            encoder.save(os.path.join(out_dir, f"encoder_{bits}.keras"))
        hamming_row(f"hamming autoencoder ({seconds:.0f} s training)", binary_codes(encoder, train_features),
                    binary_codes(encoder, val_features), binary_codes(encoder, timing))
        lsh = random_hyperplane_codes(train_features, bits)
        hamming_row("hamming random hyperplanes", lsh(train_features), lsh(val_features), lsh(timing))
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
