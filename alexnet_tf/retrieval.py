"""Image retrieval with the last hidden layer (§6.1, Fig. 4 right) and the paper's binary codes (§7).

  features      the 4096-d activations of the last hidden layer (fc7 after ReLU; dropout is off at
                inference) for a split, extracted in batches and cached in RUN_DIR/features/
  nearest       the training images with the smallest Euclidean distance to each query (Fig. 4 right)
  autoencoder   §7: "training an auto-encoder to compress these vectors to short binary codes" --
                as in Krizhevsky & Hinton (2011), logistic code units with Gaussian noise added to
                their input during training, which drives them to 0/1; the code is the sign
  hamming       ranking by Hamming distance on packed codes (XOR + popcount)
  projector     the vectors with labels and sprite thumbnails for TensorBoard's projector
"""

import hashlib
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

FEATURE_LAYER = "fc7"


# === Last-hidden-layer features ===

def feature_model(model):
    """images -> the input of fc8, i.e. the last hidden layer (fc7's two halves concatenated, after ReLU)."""
    return keras.Model(model.inputs, model.get_layer("fc8").input, name="features")


def weights_fingerprint(model):
    """A hash of the model's weights: the feature cache is valid only for the same weights."""
    digest = hashlib.sha1()
    for w in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return digest.hexdigest()


def extract_features(classifier, images, batch_size=256, progress=True):
    """(N, H, W, C) 0..255 images -> (N, D) float32 last-hidden-layer vectors, with the evaluation
    preprocessing of `classifier` (export.Classifier), in batches."""
    features = feature_model(classifier.model)

    @tf.function(reduce_retracing=True)
    def run(batch):
        return features(classifier.preprocess(tf.cast(batch, tf.float32)), training=False)

    bar = keras.utils.Progbar(len(images), unit_name="image", verbose=1 if sys.stdout.isatty() else 2) if progress else None
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        out.append(run(batch).numpy())
        if bar:
            bar.add(len(batch))
    return np.concatenate(out).astype(np.float32)


def features_of_bytes(classifier, blobs):
    """Last-hidden-layer vectors of encoded images (any sizes), preprocessed as the serving signature does."""
    features = feature_model(classifier.model)
    return features(classifier.preprocess_bytes(tf.constant(blobs)), training=False).numpy()


def cached_features(run, classifier, split, batch_size=256, progress=True):
    """(features, labels, images) of a split of the run's dataset; features cached in RUN/features/.

    The cache is reused when it was computed from the same weights (fingerprint) and images.
    """
    from alexnet_tf.data import load_arrays

    arrays, _ = load_arrays(run.config)
    images, labels = arrays[split]
    directory = os.path.join(run.run_dir, "features")
    path, meta_path = os.path.join(directory, f"{split}.npy"), os.path.join(directory, f"{split}.json")
    meta = {"layer": FEATURE_LAYER, "weights": weights_fingerprint(classifier.model), "count": len(images),
            "images": hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()}
    if os.path.isfile(path) and os.path.isfile(meta_path):
        with open(meta_path) as f:
            if json.load(f) == meta:
                return np.load(path), labels, images
    if progress:
        print(f"extracting {FEATURE_LAYER} features of {len(images)} {split} images")
    features = extract_features(classifier, images, batch_size, progress)
    os.makedirs(directory, exist_ok=True)
    np.save(path, features)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return features, labels, images


# === Euclidean nearest neighbours (Fig. 4 right) ===

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


# === Binary codes by Hamming distance (§7) ===

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


# === Evaluation ===

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
    """The README table of `evaluate_retrieval` rows."""
    head = ["method", "bits", "bytes/image"] + [f"precision@{k}" for k in ks] + ["ms/query (batch)", "ms (1 query)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], str(r["bits"]), str(r["bytes_per_image"])] + [f"{r[f'p@{k}']:.3f}" for k in ks]
        cells += [f"{r['ms_per_query']:.3f}", f"{r['ms_single_query']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# === TensorBoard projector ===

SPRITE_MAX = 8192  # the projector's limit on the sprite image's side, in pixels


def sprite(images):
    """(N, H, W, C) uint8 images -> one square grid (ceil(sqrt(N)) thumbnails a side), uint8 RGB.

    Thumbnails are shrunk when needed to keep the grid within the projector's 8192x8192 limit.
    Returns (grid, (thumb_height, thumb_width)).
    """
    images = np.asarray(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, h, w, _ = images.shape
    side = int(np.ceil(np.sqrt(n)))
    shrink = min(1.0, SPRITE_MAX / (side * max(h, w)))
    if shrink < 1.0:
        size = [max(1, int(h * shrink)), max(1, int(w * shrink))]
        images = tf.cast(tf.round(tf.image.resize(images, size, antialias=True)), tf.uint8).numpy()
        h, w = size
    grid = np.zeros((side * h, side * w, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, side)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return grid, (h, w)


def write_projector(log_dir, features, labels, class_names, images):
    """Write vectors, a metadata.tsv (label id and name) and sprite.png for TensorBoard's projector.

    `tensorboard --logdir LOG_DIR` (or a parent) shows them in the PROJECTOR tab.
    """
    from PIL import Image
    from tensorboard.plugins import projector

    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "metadata.tsv"), "w") as f:
        f.write("label\tclass\n")
        f.writelines(f"{int(y)}\t{class_names[int(y)]}\n" for y in labels)
    grid, (h, w) = sprite(images)
    Image.fromarray(grid).save(os.path.join(log_dir, "sprite.png"))
    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(np.asarray(features, np.float32), name=FEATURE_LAYER))
    checkpoint.save(os.path.join(log_dir, "embedding.ckpt"))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "metadata.tsv"
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([w, h])
    projector.visualize_embeddings(log_dir, config)
