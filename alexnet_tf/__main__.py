"""`python -m alexnet_tf <command>`: tools that work on run directories.

  curves   learning curves of one or more runs as a PNG (from their TensorBoard logs)
  filters  the conv1 filters of a run as a PNG grid, towers stacked (the paper's Fig. 3)
  config-reference  the configuration table of README, generated from the config dataclasses
  export   the run's model as a TF Serving SavedModel in RUN_DIR/export/<version>/
  predict  top-5 classes of image files or validation images, optionally as a PNG panel (Fig. 4 left)
  features the last hidden layer's vectors of a split, cached in RUN_DIR/features/
  neighbours  the nearest training images of query images as a PNG panel (Fig. 4 right)
  projector   training-set vectors with labels and sprites for TensorBoard's projector
  codes    §7: auto-encoders to binary codes, precision@K and speed of Hamming vs Euclidean search
  stats     mean image and RGB covariance eigen-decomposition of a config's training images (cached)
  evaluate  top-1/top-5 error of a run on the validation split: centre crop and the paper's 10 crops
  benchmark images/s of the training input pipeline next to the model's training step
  profile   where a traced training step's time goes, by op type and by layer (train.profile_steps)
  speed     training/inference images/s, FLOPs and utilisation of the paper and default models (optional: PyTorch)
  ablate    the paper's ablation claims re-measured over seeds (resumable); writes REPRODUCTION.md
"""

import argparse
import json
import os
import sys

from alexnet_tf.config import ConfigError, reference_markdown


def _curves(args):
    from alexnet_tf.figures import plot_curves

    runs = {}
    for item in args.runs:
        label, _, path = item.rpartition("=")
        runs[label or os.path.basename(os.path.normpath(path))] = path
    curves = [tuple(c.split(":", 1)) for c in args.curve]
    plot_curves(runs, args.out, curves=curves, title=args.title)
    print(f"wrote {args.out}")


def _filters(args):
    from alexnet_tf.callbacks import conv1_kernels
    from alexnet_tf.figures import save_filter_grid
    from alexnet_tf.run_dir import load_run

    shape = save_filter_grid(conv1_kernels(load_run(args.run_dir, args.checkpoint).model), args.out)
    print(f"wrote {args.out} ({shape[1]}x{shape[0]} px)")


def _load(args):
    from alexnet_tf.export import Classifier
    from alexnet_tf.run_dir import load_run

    run = load_run(args.run_dir, args.checkpoint)
    return run, Classifier.from_run(run)


def _export(args):
    from alexnet_tf import export

    path = export.export_run(args.run_dir, args.version, args.checkpoint, args.overwrite)
    print(f"wrote {path}")
    print(f"  saved_model_cli show --dir {path} --all")
    print(f"  docker run -p 8501:8501 -v {os.path.abspath(os.path.dirname(path))}:/models/alexnet "
          "-e MODEL_NAME=alexnet tensorflow/serving")


def _predict(args):
    from alexnet_tf import predict

    run, classifier = _load(args)
    if not args.images and not args.val:
        raise SystemExit("error: give image files and/or --val N (validation images)")
    try:
        results = predict.predict_files(classifier, args.images, args.label, args.ten_crop) if args.images else []
    except ValueError as e:  # a --label that is not a class, or a label count that does not match
        raise SystemExit(f"error: {e}") from None
    if args.val:
        blobs, names, labels = predict.validation_samples(run, args.val, args.seed)
        results += predict.predict_bytes(classifier, blobs, names, labels, args.ten_crop)
    print(predict.format_predictions(results))
    if args.out:
        from alexnet_tf.figures import prediction_panel
        size = prediction_panel([r.image for r in results], [r.class_names for r in results],
                                [r.probabilities for r in results], args.out, [r.true_label for r in results],
                                cols=args.cols)
        print(f"wrote {args.out} ({size[0]}x{size[1]} px)")


def _features(args):
    from alexnet_tf import retrieval

    run, classifier = _load(args)
    for split in args.split:
        features, _, _ = retrieval.cached_features(run, classifier, split, args.batch_size)
        print(f"{split}: {features.shape[0]} x {features.shape[1]} {retrieval.FEATURE_LAYER} vectors in "
              f"{os.path.join(args.run_dir, 'features', split + '.npy')}")


def _neighbours(args):
    import keras
    import numpy as np

    from alexnet_tf import retrieval
    from alexnet_tf.export import decode_image
    from alexnet_tf.figures import neighbours_panel

    run, classifier = _load(args)
    train_features, train_labels, train_images = retrieval.cached_features(run, classifier, "train", args.batch_size)
    names = run.class_names
    if args.images:
        blobs = []
        for path in args.images:
            with open(path, "rb") as f:
                blobs.append(f.read())
        queries = retrieval.features_of_bytes(classifier, blobs)
        query_images = [decode_image(b, classifier.channels).numpy() for b in blobs]
        query_labels = [os.path.basename(p) for p in args.images]
    else:
        val_features, val_labels, val_images = retrieval.cached_features(run, classifier, "val", args.batch_size)
        chosen = np.sort(np.random.default_rng(args.seed).choice(len(val_images), args.queries, replace=False))
        queries, query_images = val_features[chosen], list(val_images[chosen])
        query_labels = [names[val_labels[i]] for i in chosen]
    if args.encoder:
        encoder = keras.saving.load_model(args.encoder)
        database = retrieval.pack_bits(retrieval.binary_codes(encoder, train_features))
        idx, _ = retrieval.hamming_nearest(retrieval.pack_bits(retrieval.binary_codes(encoder, queries)), database, args.k)
    else:
        idx, _ = retrieval.nearest(queries, train_features, args.k)
    size = neighbours_panel(query_images, [list(train_images[row]) for row in idx], args.out, query_labels,
                            [[names[train_labels[j]] for j in row] for row in idx])
    print(f"wrote {args.out} ({size[0]}x{size[1]} px)")


def _projector(args):
    import numpy as np

    from alexnet_tf import retrieval

    run, classifier = _load(args)
    features, labels, images = retrieval.cached_features(run, classifier, args.split, args.batch_size)
    chosen = np.sort(np.random.default_rng(args.seed).choice(len(features), min(args.count, len(features)), replace=False))
    log_dir = args.log_dir or os.path.join(args.run_dir, "tb", "projector")
    retrieval.write_projector(log_dir, features[chosen], labels[chosen], run.class_names, images[chosen])
    print(f"wrote {len(chosen)} {args.split} vectors to {log_dir}; view with: tensorboard --logdir {log_dir}")


def _codes(args):
    import json

    from alexnet_tf import retrieval

    run, classifier = _load(args)
    train_features, train_labels, train_images = retrieval.cached_features(run, classifier, "train", args.batch_size)
    val_features, val_labels, val_images = retrieval.cached_features(run, classifier, "val", args.batch_size)
    extra = {}
    if args.pixels:  # Euclidean search on the raw pixels, for scale
        extra["euclidean pixels"] = (train_images.reshape(len(train_images), -1).astype("float32"),
                                     val_images.reshape(len(val_images), -1).astype("float32"))
    out_dir = os.path.join(args.run_dir, "retrieval")
    rows = retrieval.evaluate_retrieval(train_features, train_labels, val_features, val_labels, args.bits,
                                        tuple(args.k), args.queries, args.epochs, extra=extra, out_dir=out_dir)
    table = retrieval.markdown_table(rows, tuple(args.k))
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {out_dir}/report.json, report.md and the encoders encoder_<bits>.keras")


def _load_config(args):
    from alexnet_tf.config import load_config
    return load_config(args.config, args.set)


def _stats(args):
    import numpy as np

    from alexnet_tf.config import FILE_SOURCES
    from alexnet_tf.data import file_splits, training_stats

    config = _load_config(args)
    if config.data.source not in FILE_SOURCES:
        raise SystemExit(f"error: data.source = {config.data.source} keeps its images in memory and computes its mean "
                         f"when training starts; the stats command is for {', '.join(FILE_SOURCES)}")
    train, _, _, _ = file_splits(config)
    stats, path = training_stats(config, train, recompute=args.recompute)
    np.set_printoptions(precision=4, suppress=True)
    print(f"images: {int(stats['images'])}; mean RGB {stats['pixel_mean']}")
    print(f"eigenvalues of the RGB covariance (0..255 scale): {stats['eigval']}")
    print(f"sqrt(eigenvalues), the lighting amplitudes: {np.sqrt(stats['eigval'])}")
    print(f"eigenvectors (columns; rows R, G, B):\n{stats['eigvec']}")
    print(f"wrote {path}")


def _evaluate(args):
    import keras
    import numpy as np
    import tensorflow as tf
    import yaml

    from alexnet_tf import config as config_lib
    from alexnet_tf.data import eval_images
    from alexnet_tf.evaluate import evaluate
    from alexnet_tf.model import build_model

    run_dir = args.run_dir
    for name in ("config.yaml", "mean.npy", "classes.json"):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise SystemExit(f"error: {os.path.join(run_dir, name)} not found; expected a run directory written by train.py")
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = config_lib.from_dict(yaml.safe_load(f), args.set)
    if args.ten_crop and config.data.source not in config_lib.FILE_SOURCES:
        raise SystemExit(f"error: --ten-crop needs images larger than the crop; data.source = {config.data.source} "
                         "gives model.image_size images (use a file source: imagenet, folder, tfds)")
    mean = np.load(os.path.join(run_dir, "mean.npy"))
    with open(os.path.join(run_dir, "classes.json")) as f:
        class_names = tuple(json.load(f))
    if args.checkpoint:
        path = args.checkpoint
        if args.checkpoint in ("best", "last"):
            path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", args.checkpoint))
        if not path:
            raise SystemExit(f"error: no checkpoint in {os.path.join(run_dir, 'checkpoints', args.checkpoint)}")
        model = build_model(config)
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        source = path
    else:
        source = os.path.join(run_dir, "model.keras")
        if not os.path.isfile(source):
            raise SystemExit(f"error: {source} not found; pass --checkpoint best|last|PATH for an unfinished run")
        model = keras.saving.load_model(source, compile=False)  # weights and layers only; no optimizer needed
    batches, size = eval_images(config, mean, class_names, args.split)
    results = evaluate(model, batches, config.model.image_size, ten_crop=args.ten_crop, steps=args.steps, total=size)
    results["weights"], results["split"] = source, args.split
    print(f"{results['images']} {'validation' if args.split == 'val' else 'test'} images, weights {source}")
    names = {"center": "centre crop", "ten_crop": "10 crops (softmax averaged)"}
    for key in ("center", "ten_crop"):
        if key in results:
            r = results[key]
            print(f"{names[key]:28s} top-1 error {r['top1_error']:.4f}   top-5 error {r['top5_error']:.4f}")
    out = os.path.join(run_dir, "evaluation.json" if args.split == "val" else "evaluation_test.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}")


def _benchmark(args):
    import tempfile

    import keras
    import tensorflow as tf

    from alexnet_tf import benchmark, config as config_lib
    from alexnet_tf.data import make_datasets
    from alexnet_tf.model import build_model
    from alexnet_tf.optim import compile_model, resolve_precision

    overrides = list(args.set)
    if args.fake_images:
        root = tempfile.mkdtemp(prefix="alexnet_bench_")
        size = f"{args.fake_side}x{args.fake_side}" if args.fake_side else "ImageNet-sized (500x375)"
        print(f"writing {args.fake_images} {size} JPEGs to {root}", flush=True)
        benchmark.write_fake_imagenet_folder(root, args.fake_images, side=args.fake_side)
        overrides += ["data.source=folder", f"data.path={root}", f"data.cache_dir={os.path.join(root, 'cache')}"]
    config = config_lib.load_config(args.config, overrides)
    d = config.data
    data = make_datasets(config)
    pipeline = benchmark.pipeline_rate(data.train, d.batch_size, args.steps)
    print(f"input pipeline alone: {pipeline:.0f} img/s ({args.steps} batches of {d.batch_size}, "
          f"data.source {d.source}, {os.cpu_count()} CPU cores)", flush=True)
    if args.pipeline_only:
        return

    precision = resolve_precision(config.train.precision)
    keras.mixed_precision.set_global_policy(precision)
    model = compile_model(build_model(config), config)
    m = config.model
    x = tf.random.stateless_normal([d.batch_size, m.image_size, m.image_size, m.channels], [0, 0], stddev=50.0)
    y = tf.zeros([d.batch_size], tf.int32)
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()
    step = benchmark.training_rate(model, in_memory, d.batch_size, args.train_steps)
    print(f"training step alone:   {step:.0f} img/s ({args.train_steps} steps, batch already in memory, {precision})", flush=True)
    fed = benchmark.training_rate(model, data.train, d.batch_size, args.train_steps)
    print(f"training fed by the pipeline: {fed:.0f} img/s (both on the same cores)")
    print(f"pipeline / training step = {pipeline / step:.2f} ({'not the bottleneck' if pipeline >= step else 'THE BOTTLENECK'})")


def _speed(args):
    from alexnet_tf import speed

    speed.main(args)


def _profile(args):
    from alexnet_tf import profile

    profile.main(args)


def _ablate(args):
    from alexnet_tf import ablate

    ablate.main(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m alexnet_tf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("curves", help="learning curves of runs as a PNG")
    p.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--curve", action="append", metavar="SPLIT:TAG",
                   help="e.g. validation:epoch_top1_error, train:batch_loss (repeatable)")
    p.add_argument("--title", default="")
    p.set_defaults(func=_curves)

    def run_parser(name, help):
        p = sub.add_parser(name, help=help)
        p.add_argument("--run-dir", required=True)
        p.add_argument("--checkpoint", help="'last', 'best' or a checkpoint prefix (default: model.keras)")
        return p

    p = run_parser("filters", "conv1 filters of a run as a PNG (Fig. 3)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_filters)
    p = run_parser("export", "the model as a TF Serving SavedModel in RUN_DIR/export/<version>/")
    p.add_argument("--version", type=int, help="integer version (default: one above the highest existing)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.set_defaults(func=_export)
    p = run_parser("predict", "top-5 classes of images, optionally a PNG panel (Fig. 4 left)")
    p.add_argument("images", nargs="*", help="JPEG/PNG/GIF/BMP files")
    p.add_argument("--label", action="append", help="true label (name or id) of each image, in order; "
                   "default: the image's folder when it is named after a class")
    p.add_argument("--val", type=int, default=0, metavar="N", help="also predict N random validation images")
    p.add_argument("--ten-crop", action="store_true", help="average over the paper's ten patches (§4.1)")
    p.add_argument("--out", help="PNG panel: each image with its top-5 bars, the true label's bar in red")
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_predict)
    p = run_parser("features", "last-hidden-layer vectors of a split, cached in RUN_DIR/features/")
    p.add_argument("--split", nargs="+", default=["train", "val"], choices=("train", "val"))
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=_features)
    p = run_parser("neighbours", "nearest training images of queries as a PNG (Fig. 4 right)")
    p.add_argument("images", nargs="*", help="query image files (default: --queries random validation images)")
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--k", type=int, default=6, help="neighbours per query (the paper shows 6)")
    p.add_argument("--encoder", help="rank by Hamming distance of this §7 encoder's codes (from `codes`)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=_neighbours)
    p = run_parser("projector", "vectors, labels and sprite for TensorBoard's projector")
    p.add_argument("--split", default="train", choices=("train", "val"))
    p.add_argument("--count", type=int, default=5000, help="random subset size (the projector runs in the browser)")
    p.add_argument("--log-dir", help="default: RUN_DIR/tb/projector")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=_projector)
    p = run_parser("codes", "§7 binary codes: precision@K and speed, Hamming vs Euclidean")
    p.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100], help="precision@K for these K")
    p.add_argument("--epochs", type=int, default=10, help="auto-encoder training epochs")
    p.add_argument("--queries", type=int, help="use the first N validation images as queries (default: all)")
    p.add_argument("--pixels", action="store_true", help="add Euclidean search on raw pixels as a baseline")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=_codes)
    p = sub.add_parser("config-reference", help="print README's configuration table (markdown)")
    p.set_defaults(func=lambda args: print(reference_markdown()))

    def with_config(p):
        p.add_argument("--config", required=True, help="YAML config, e.g. configs/alexnet_imagenet.yaml")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override; repeatable")

    p = sub.add_parser("stats", help="mean image + RGB covariance eigen-decomposition of the training images (cached)")
    with_config(p)
    p.add_argument("--recompute", action="store_true", help="recompute even if the stats file exists")
    p.set_defaults(func=_stats)
    p = sub.add_parser("evaluate", help="top-1/top-5 error of a run: centre crop and (--ten-crop) the 10 patches")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--checkpoint", help="best, last or a checkpoint path (default: the run's model.keras)")
    p.add_argument("--ten-crop", action="store_true", help="also the paper's 10-patch protocol (10x the compute)")
    p.add_argument("--steps", type=int, help="evaluate only this many batches")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="val (default) or test: the test split a run with data.val_examples set apart")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override the run's config, e.g. data.path on another machine; repeatable")
    p.set_defaults(func=_evaluate)
    p = sub.add_parser("benchmark", help="img/s of the training pipeline next to the training step")
    with_config(p)
    p.add_argument("--steps", type=int, default=20, help="pipeline batches to time")
    p.add_argument("--train-steps", type=int, default=5, help="training steps to time")
    p.add_argument("--fake-images", type=int, default=0,
                   help="write this many ImageNet-sized JPEGs to a temporary folder and benchmark data.source=folder on them")
    p.add_argument("--fake-side", type=int, default=0, help="with --fake-images: square images of this side (e.g. 256, pre-resized)")
    p.add_argument("--pipeline-only", action="store_true", help="time the input pipeline only")
    p.set_defaults(func=_benchmark)
    p = sub.add_parser("speed", help="training/inference img/s, FLOPs and utilisation vs a matmul (synthetic data)")
    p.add_argument("--models", default="paper,default", help="comma-separated: paper, default, tiny")
    p.add_argument("--precisions", default="float32,mixed_bfloat16", help="comma-separated Keras dtype policies")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (after 2 warm-up steps)")
    p.add_argument("--torch", action="store_true", help="also time the same network in PyTorch (optional dependency)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--tiny", action="store_true", help="a few-second run of a tiny model (tests)")
    p.set_defaults(func=_speed)
    p = sub.add_parser("profile", help="op time by op type and by layer from a run's profiler trace (train.profile_steps)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--top", type=int, default=15, help="rows per table")
    p.set_defaults(func=_profile)
    p = sub.add_parser("ablate", help="re-measure the paper's ablation claims (arms x seeds, resumable) -> REPRODUCTION.md")
    p.add_argument("--budget", default="full", choices=("full", "tiny"),
                   help="full: the config as written (~2 h on 2 cores); tiny: a few steps of a tiny model (~2 min)")
    p.add_argument("--seeds", type=int, help="seeds per arm, 0..N-1 (default: 3 full, 1 tiny)")
    p.add_argument("--arms", help="comma-separated subset of the arms (default: all): "
                   "base,tanh,no_lrn,pool_2x2,one_tower,no_dropout,no_conv2,no_conv3,no_conv4")
    p.add_argument("--out", default="REPRODUCTION.md", help="the report; figures go to docs/ablation/ next to it")
    p.add_argument("--runs-dir", default=os.path.join("runs", "ablation"), help="one run directory per arm and seed")
    p.add_argument("--config", default=None, help="base config (default: configs/ablation_fashion_mnist.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override applied to every arm; repeatable")
    p.add_argument("--report-only", action="store_true", help="train nothing: measure finished runs and write the report")
    p.set_defaults(func=_ablate)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)[1:]
    if getattr(args, "curve", 1) is None:
        args.curve = ["train:epoch_top1_error", "validation:epoch_top1_error"]
    if args.command == "config-reference":  # needs no TensorFlow
        args.func(args)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.data.errors import DatasetNotFound
    from alexnet_tf.run_dir import RunDirError
    try:
        args.func(args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (RunDirError, FileExistsError, DatasetNotFound) as e:  # one line for the user
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
