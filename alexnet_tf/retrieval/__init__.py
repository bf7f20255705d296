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

import importlib

# The package's names and modules are imported on first use (PEP 562): they start TensorFlow, and
# `import alexnet_tf.retrieval` must not (commands.py, inside this package, is the retrieval commands'
# module: their --help and argument errors would wait for TensorFlow). Each name by the module that
# defines it:
_FROM_CODES = ("CodeNoise", "binary_codes", "build_autoencoder", "evaluate_retrieval", "markdown_table",
               "precision_at_k", "random_hyperplane_codes", "time_search", "train_autoencoder")
_FROM_FEATURES = ("FEATURE_LAYER", "cached_features", "extract_features", "feature_model", "features_of_bytes",
                  "weights_fingerprint")
_FROM_PROJECTOR = ("SPRITE_MAX", "sprite", "write_projector")
_FROM_SEARCH = ("hamming_distances", "hamming_nearest", "nearest", "pack_bits", "squared_norms")
_MODULES = ("codes", "commands", "features", "projector", "search")


def __getattr__(name):
    if name in _FROM_CODES:
        from alexnet_tf.retrieval import codes as module
    elif name in _FROM_FEATURES:
        from alexnet_tf.retrieval import features as module
    elif name in _FROM_PROJECTOR:
        from alexnet_tf.retrieval import projector as module
    elif name in _FROM_SEARCH:
        from alexnet_tf.retrieval import search as module
    elif name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)


__all__ = [*_FROM_CODES, *_FROM_FEATURES, *_FROM_PROJECTOR, *_FROM_SEARCH]
