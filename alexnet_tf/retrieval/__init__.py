"""Image retrieval with the last hidden layer (§6.1, Fig. 4 right) and the paper's binary codes (§7).

  features.py   the 4096-d activations of the last hidden layer (fc7 after ReLU; dropout is off at
                inference) for a split, extracted in batches and cached in RUN_DIR/features/
  search.py     Euclidean nearest neighbours (Fig. 4 right); Hamming ranking on packed codes (XOR + popcount)
  codes.py      §7: "training an auto-encoder to compress these vectors to short binary codes" --
                as in Krizhevsky & Hinton (2011), logistic code units with Gaussian noise added to
                their input during training, which drives them to 0/1; the code is the sign;
                precision@K and search speed against Euclidean search
  projector.py  the vectors with labels and sprite thumbnails for TensorBoard's projector
  commands.py   the `features`, `neighbours`, `projector` and `codes` commands
"""

from alexnet_tf.lazy import lazy_exports

# The package's names come from its modules on first use (lazy.py says why: commands.py is in here).
__getattr__, __all__ = lazy_exports(__name__, {
    "codes": ("CodeNoise", "binary_codes", "build_autoencoder", "evaluate_retrieval", "markdown_table",
              "precision_at_k", "random_hyperplane_codes", "time_search", "train_autoencoder"),
    "features": ("FEATURE_LAYER", "cached_features", "extract_features", "feature_model", "features_of_bytes",
                 "weights_fingerprint"),
    "projector": ("SPRITE_MAX", "sprite", "write_projector"),
    "search": ("hamming_distances", "hamming_nearest", "nearest", "pack_bits", "squared_norms"),
}, modules=("codes", "commands", "features", "projector", "search"))
