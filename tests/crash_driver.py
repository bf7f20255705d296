"""Run train.py and kill -9 the process at a chosen moment (for the resume tests).

    python tests/crash_driver.py [--kill-at-step N] [--kill-in-save N] [--once MARKER] -- TRAIN_PY_ARGS...

--kill-at-step N   SIGKILL right after global step N (before that step's checkpoint, if any)
--kill-in-save N   SIGKILL inside the N-th recovery checkpoint write of this process: after TensorFlow
                   has written the checkpoint's files, before CheckpointManager updates its pointer
--fill-disk-at-step N   after global step N, fill the run directory's file system (a file `filler`
                   written until ENOSPC), so that the next checkpoint write meets a real full disk
--print-steps      print "global step N" after every step (flushed), for a kill from outside
--once MARKER      kill only if MARKER does not exist yet (and create it first), so that a process
                   that restarts itself (multi_worker) is killed once

Otherwise this is `python train.py TRAIN_PY_ARGS...`.
"""

import argparse
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--kill-in-save", type=int)
    parser.add_argument("--fill-disk-at-step", type=int)
    parser.add_argument("--print-steps", action="store_true")
    parser.add_argument("--once")
    args, train_args = parser.parse_known_args()
    train_args = [a for a in train_args if a != "--"]

    def kill(where):
        if args.once:
            if os.path.exists(args.once):
                return
            open(args.once, "w").close()
        print(f"crash_driver: kill -9 {where}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    import alexnet_tf  # noqa: F401  (before TensorFlow: oneDNN on, as in train.py)
    import keras
    import tensorflow as tf

    from alexnet_tf import train_command as train_py
    from alexnet_tf import training

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if args.print_steps:
                print(f"global step {step}", flush=True)
            if step == args.kill_at_step:
                kill(f"after global step {step}")
            if step == args.fill_disk_at_step:
                fill(train_args[train_args.index("--run-dir") + 1])

    def fill(run_dir):
        block = b"\0" * (1 << 20)
        with open(os.path.join(run_dir, "filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(block)
            except OSError as e:
                print(f"crash_driver: filled the disk ({e.strerror})", flush=True)

    if args.kill_in_save:
        saves = [0]
        original_save = tf.train.CheckpointManager.save

        def save(self, checkpoint_number=None, check_interval=True, options=None):
            if os.path.basename(self.directory) == "best":
                return original_save(self, checkpoint_number, check_interval, options)
            saves[0] += 1
            if saves[0] == args.kill_in_save:
                options = tf.train.CheckpointOptions(
                    experimental_write_callbacks=[lambda path: kill(f"while writing {path} (files written, pointer not)")])
            return original_save(self, checkpoint_number, check_interval, options)

        tf.train.CheckpointManager.save = save

    original_train = training.train
    training.train = lambda config, run_dir, **kw: original_train(config, run_dir, callbacks=[Crash()], **kw)
    sys.argv = [os.path.join(ROOT, "train.py")] + train_args  # a multi_worker restart re-executes train.py itself
    sys.exit(train_py.main(train_args))


if __name__ == "__main__":
    main()
