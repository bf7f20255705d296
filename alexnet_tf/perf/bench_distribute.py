"""Step time of each distribution strategy, and the cost of a recovery checkpoint (docs/distribute.md, "What each mode costs").

    python -m alexnet_tf.perf.bench_distribute [--config PATH] [--set section.key=value ...] [--steps 10]
           [--strategies default mirrored towers hybrid multi_worker] [--logical-cpus 2] [--checkpoint]

Each strategy runs in a fresh process (the CPU split and MultiWorkerMirroredStrategy need an
uninitialised TensorFlow); multi_worker starts two local worker processes on 127.0.0.1;
hybrid (conv layers data parallel, fc6-fc8 model parallel) runs on the logical CPUs like mirrored and towers. Every
strategy trains on the same global batch (data.batch_size). On a machine without GPUs the logical
CPUs share the same cores, so this measures each mode's overhead, not a speed-up. Prints a markdown
table; --checkpoint also times one recovery checkpoint write and reports its size.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# the repository: the measuring subprocesses run there (`-m` finds alexnet_tf in their working directory,
# and a relative --config is read from there)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(args):
    """In this process: time `args.steps` training steps of one strategy (after 3 warm-up steps)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.config import load_config

    config = load_config(args.config, args.set + [f"distribute.strategy={args.strategy}"] +
                         ([f"distribute.logical_cpus={args.logical_cpus}"] if args.strategy in ("mirrored", "towers", "hybrid") else []))
    from alexnet_tf import distribute
    dist = distribute.setup(config.distribute, config.model.towers)
    import keras
    import tensorflow as tf

    from alexnet_tf.data import make_datasets
    from alexnet_tf.model import build_model
    from alexnet_tf.optim import compile_model, resolve_precision
    from alexnet_tf.hybrid import make_steps as hybrid_steps
    from alexnet_tf.training import make_steps

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(resolve_precision(config.train.precision))
    data = make_datasets(config)
    iterator = iter(data.train)
    with dist.scope():
        model = build_model(config, tower_devices=dist.tower_devices)
        compile_model(model, config)
        model.optimizer.build(model.trainable_variables)
    steps = hybrid_steps if dist.kind == "hybrid" else make_steps
    train_step, _ = steps(model, dist, augment=data.device_augment)
    result = {"strategy": args.strategy, "replicas": dist.replicas, "devices": dist.devices}
    with dist.placement(model):
        for _ in range(3):
            train_step(iterator).numpy()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(iterator).numpy()
        seconds = (time.perf_counter() - start) / args.steps
    result.update(step_seconds=round(seconds, 4), images_per_second=round(config.data.batch_size / seconds, 1))
    if args.checkpoint and dist.is_chief:
        import shutil
        import tempfile

        from alexnet_tf.callbacks import DivideLROnPlateau
        from alexnet_tf.checkpoint import TrainState
        from alexnet_tf.train_steps import EpochSums
        directory = tempfile.mkdtemp()
        state = TrainState(model, iterator, DivideLROnPlateau(), directory)
        start = time.perf_counter()
        path = state.save(0, 0, EpochSums(), 0.0)
        result["checkpoint_seconds"] = round(time.perf_counter() - start, 2)
        result["checkpoint_mb"] = round(sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)) / 1e6, 1)
        without_data = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        result["checkpoint_mb_without_data_position"] = round(
            sum(os.path.getsize(p) for p in tf.io.gfile.glob(without_data.write(path + "-nodata") + "*")) / 1e6, 1)
        shutil.rmtree(directory)
    if dist.is_chief:
        print("RESULT " + json.dumps(result), flush=True)


def run_strategy(args, strategy):
    """Measure one strategy in a fresh process (two worker processes for multi_worker) -> its RESULT dict."""
    command = [sys.executable, "-m", "alexnet_tf.perf.bench_distribute", "--measure", "--strategy", strategy,
               "--steps", str(args.steps), "--logical-cpus", str(args.logical_cpus)]
    command += ["--config", args.config] if args.config else []
    command += [x for s in args.set for x in ("--set", s)] + (["--checkpoint"] if args.checkpoint else [])
    if strategy != "multi_worker":
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        outputs = [out.stdout + out.stderr]
    else:
        from alexnet_tf.distribute import local_tf_configs
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                  env={**os.environ, "TF_CONFIG": tf_config})
                 for tf_config in local_tf_configs(2)]
        outputs = [p.communicate()[0] for p in procs]
    for text in outputs:
        for line in text.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{strategy}: no result\n" + "\n".join(o[-3000:] for o in outputs))


def main():
    """`python -m alexnet_tf.perf.bench_distribute`: every strategy in turn, as a markdown table (with
    --measure: one strategy, in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strategies", nargs="+", default=["default", "mirrored", "towers", "hybrid", "multi_worker"])
    parser.add_argument("--logical-cpus", type=int, default=2)
    parser.add_argument("--checkpoint", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    rows = ["| strategy | replicas / devices | step (s) | images/s |", "|---|---|---|---|"]
    for strategy in args.strategies:
        r = run_strategy(args, strategy)
        devices = ", ".join(d.split("/")[-1].replace("device:", "") for d in r["devices"])
        where = f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ''} on {devices}"
        if strategy == "towers":
            where = f"2 towers on {devices}"
        elif strategy == "hybrid":
            where = f"conv data parallel, fc model parallel on {devices}"
        elif strategy == "multi_worker":
            where = f"{r['replicas']} worker processes, {devices} each"
        rows.append(f"| {strategy} | {where} | {r['step_seconds']:.3f} | {r['images_per_second']:.0f} |")
        print(rows[-1], flush=True)
        if "checkpoint_seconds" in r:
            print(f"  recovery checkpoint: {r['checkpoint_mb']} MB in {r['checkpoint_seconds']} s "
                  f"({r['checkpoint_mb_without_data_position']} MB without the data position)", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
