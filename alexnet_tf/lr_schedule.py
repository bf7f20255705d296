"""The learning rate of a run at its global batch: train.lr scaled from train.base_batch, and Goyal et
al.'s gradual warm-up to the scaled rate (the per-step multiplier itself is `optim.PaperSGD`'s).

TF-free (it only calls methods of the TensorFlow objects it is given): the start-up line uses it
before the model is built, and it applies a rate changed between a checkpoint and its resume.

The warm-up is a function of the optimizer's iteration count, which every recovery checkpoint holds:
a resumed run continues the ramp at the step it stopped, with nothing else to save. After the ramp
the plateau rule (and train.lr_drop_epochs) divide the scaled rate as they divide train.lr without
scaling.
"""

import math


def global_batch(config):
    """Examples per update, summed over every replica and worker: data.batch_size under every strategy.

    Each process reads the same global batches and each replica takes its slice of every one
    (distribute.Distribution.split; docs/distribute.md), so adding replicas splits data.batch_size
    rather than multiplying it.
    """
    return config.data.batch_size


def peak_lr(config):
    """train.lr scaled to the global batch: x k (linear, Goyal et al. 2017) or x sqrt(k) (sqrt,
    Krizhevsky 2014), k = global batch / train.base_batch; train.lr itself with lr_scaling none."""
    train = config.train
    k = global_batch(config) / train.base_batch
    factor = {"none": 1.0, "linear": k, "sqrt": math.sqrt(k)}[train.lr_scaling]
    return train.lr * factor


def warmup_steps(config, steps_per_epoch):
    """train.warmup_epochs in optimizer steps (rounded; 0 = no warm-up, also when steps_per_epoch is None)."""
    if steps_per_epoch is None:
        return 0
    return int(round(config.train.warmup_epochs * steps_per_epoch))


def warmup_start(config):
    """The fraction of the peak rate used at step 0: train.lr / peak_lr, so that the ramp starts at train.lr."""
    return config.train.lr / peak_lr(config)


def describe(config, steps_per_epoch):
    """One line for the start of a run ('' when the run uses the paper's rule unchanged)."""
    train, peak, steps = config.train, peak_lr(config), warmup_steps(config, steps_per_epoch)
    parts = []
    if train.lr_scaling != "none":
        ratio = f"{global_batch(config)}/{train.base_batch}"
        parts.append(f"learning rate {peak:.4g} = train.lr {train.lr:g} x "
                     f"{'sqrt(' + ratio + ')' if train.lr_scaling == 'sqrt' else ratio} ({train.lr_scaling} scaling)")
    if steps:
        parts.append(f"warmed up linearly from {train.lr:g} over the first {steps} steps (train.warmup_epochs {train.warmup_epochs:g})")
    if train.optimizer == "lars":
        parts.append(f"LARS on the kernels (trust coefficient {train.lars_trust:g})")
    return "; ".join(parts)


def apply_a_changed_rate(config, state, optimizer, plateau):
    """A resumed run whose config sets another learning rate than its checkpoint (train.lr, or its
    scaling to the global batch: `peak_lr`; the checkpoint.TrainState records it as configured_lr):
    the restored optimizer would keep its own rate; the new config's wins, and the plateau count
    starts over (every worker compares the same two numbers, so all agree)."""
    lr, was = peak_lr(config), float(state.configured_lr.numpy())
    if not math.isfinite(was) or was == lr:
        return
    restored_lr = float(optimizer.learning_rate.numpy())
    optimizer.learning_rate.assign(lr)
    plateau.wait.assign(0)
    state.configured_lr.assign(lr)
    what = "train.lr" if config.train.lr_scaling == "none" else "the scaled train.lr"
    print(f"{what} changed from {was:g} to {lr:g}: training continues at {lr:g} "
          f"(the checkpoint's rate was {restored_lr:.3g}); the plateau count restarts")
