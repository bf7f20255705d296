"""The paper's learning rule (§5) and LARS, their error metrics, `compile_model`, and the numeric precision of a run."""

import keras
import tensorflow as tf
from keras import ops

from alexnet_tf import lr_schedule, machine


@keras.saving.register_keras_serializable(package="alexnet_tf")
class PaperSGD(keras.optimizers.SGD):
    """SGD with momentum and weight decay inside the momentum, exactly as in the paper (§5):

        v <- momentum * v - weight_decay * lr * w - lr * dL/dw
        w <- w + v

    Keras's own `SGD(weight_decay=...)` decays the weights outside the momentum
    (w -= lr * wd * w, decoupled), which is a different rule.

    Weight decay applies to the kernels (the paper's "w"; cuda-convnet and Caffe's
    bvlc_alexnet do not decay biases). `decay_biases=True` decays every variable.

    Warm-up (Goyal et al. 2017, off by default): the step at iteration t < `warmup_steps` uses
    lr * (warmup_start + (1 - warmup_start) * t / warmup_steps), a linear ramp from
    warmup_start * lr to lr; later steps use lr. `learning_rate` itself stays the rate after the
    ramp, the one the plateau rule divides. The ramp is a function of `iterations` alone, which
    checkpoints hold, so a resumed run continues it exactly.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, paper_weight_decay=0.0005, decay_biases=False,
                 warmup_steps=0, warmup_start=1.0, **kwargs):
        kwargs.pop("weight_decay", None)  # the decoupled variant stays off
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.paper_weight_decay = paper_weight_decay
        self.decay_biases = decay_biases
        self.warmup_steps, self.warmup_start = int(warmup_steps), float(warmup_start)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._decayed = [self.decay_biases or _is_kernel(v) for v in variables]

    def warmup_factor(self, dtype="float32"):
        """The multiplier of `learning_rate` in the next step (1 after the warm-up)."""
        ramp = ops.minimum(ops.divide(ops.cast(self.iterations, "float32"), float(max(self.warmup_steps, 1))), 1.0)
        return ops.cast(self.warmup_start + (1.0 - self.warmup_start) * ramp, dtype)

    def update_step(self, gradient, variable, learning_rate):
        # Each variable's update runs on the variable's device (as TF1 optimizers colocated them):
        # with the towers strategy, tower k's momentum and weight updates stay on device k.
        with tf.device(variable.device):
            if self.warmup_steps:  # without a warm-up the step is the paper's, op for op
                learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), self.warmup_factor(variable.dtype))
            if self.paper_weight_decay and self._decayed[self._get_variable_index(variable)]:
                decay = ops.cast(self.paper_weight_decay, variable.dtype)
                gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(decay, variable))
            super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(paper_weight_decay=self.paper_weight_decay, decay_biases=self.decay_biases)
        if self.warmup_steps:  # without one, model.keras files stay readable by versions before the warm-up
            config.update(warmup_steps=self.warmup_steps, warmup_start=self.warmup_start)
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LARS(PaperSGD):
    """PaperSGD with You et al. 2017's layer-wise adaptive rate (LARS) on every kernel.

    You et al.'s Algorithm 1 ("SGD with LARS", arXiv 1708.03888 and its ICLR 2018 text), per layer l at
    step t with global rate gamma_t, momentum m, weight decay beta and trust coefficient eta:

        lambda_l <- eta * |w_l| / (|g_l| + beta * |w_l|)        (g_l = dL/dw_l, |.| the L2 norm)
        v_l <- m * v_l + gamma_t * lambda_l * (g_l + beta * w_l)
        w_l <- w_l - v_l

    This class implements exactly that, written with the paper's sign convention (v holds the step
    to add, as in PaperSGD):

        v <- momentum * v - lr_t * lambda * (dL/dw + weight_decay * w);   w <- w + v

    i.e. the §5 rule with its rate lr_t (the warm-up included) multiplied by lambda. Why this form:
    it is Algorithm 1 term for term, with the paper's momentum and the decay inside the momentum;
    lambda takes the norm of the raw gradient and adds the decay in its denominator, rather than
    taking the norm of the decayed gradient g + beta * w (a variant some implementations use, which
    tests/test_optimizer.py shows to give other weights). Algorithm 1 decays
    gamma_t polynomially; here the global rate keeps this project's schedule (plateau rule or
    train.lr_drop_epochs, after an optional warm-up). "Layer" is each weight tensor: with two towers
    a layer's two halves are two tensors, each with its own lambda.

    Kernels only: biases (and any other non-kernel variable) follow the plain PaperSGD rule, as LARS
    implementations commonly do for one-dimensional tensors. A kernel whose weights or gradient are
    all zero gets lambda = 1 (lambda would be undefined, or would keep zero weights at zero for ever).
    LARS keeps no state of its
    own: lambda is computed afresh each step from w and g, so the momentum and the iteration count in
    the checkpoint are all that a resume needs.
    """

    def __init__(self, learning_rate=0.01, trust=0.001, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.trust = trust

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._layerwise = [_is_kernel(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        if self._layerwise[self._get_variable_index(variable)]:
            with tf.device(variable.device):
                learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), self.local_rate(gradient, variable))
        super().update_step(gradient, variable, learning_rate)

    def local_rate(self, gradient, variable):
        """lambda = trust * |w| / (|g| + weight_decay * |w|); 1 where |w| or |g| is 0."""
        w = ops.sqrt(ops.sum(ops.square(variable)))
        g = ops.sqrt(ops.sum(ops.square(ops.cast(gradient, variable.dtype))))
        ratio = self.trust * w / (g + self.paper_weight_decay * w)
        return ops.where(ops.logical_and(w > 0, g > 0), ratio, ops.ones_like(ratio))

    def get_config(self):
        return {**super().get_config(), "trust": self.trust}


def _is_kernel(variable):
    return variable.path.split("/")[-1] == "kernel"


# === Top-k error ===
#
# The in-graph rule of the training loop and of the compiled metric (and so of model.evaluate on a
# model.keras): tf.math.in_top_k, under which classes tied with the k-th largest logit all count as
# within the top k. `evaluate.top_k_errors` ranks in numpy instead, by a stable sort (a tie goes to
# the lower class index), the order in which the exported SavedModel serves its class_ids.


def top_k_misses(labels, logits, k):
    """Per example 1.0 if the label is not among the k largest logits (ties count as within), else 0.0."""
    return 1.0 - ops.cast(ops.in_top_k(labels, logits, k), "float32")


def top5_k(num_classes):
    """The k of the "top-5" error: 5, or every class when there are fewer."""
    return min(5, num_classes)


@keras.saving.register_keras_serializable(package="alexnet_tf")
class TopKError(keras.metrics.MeanMetricWrapper):
    """1 - top-k accuracy: the error rates the paper reports (`top_k_misses`, averaged).

    Its saved form is that of keras.metrics.SparseTopKCategoricalAccuracy (name, dtype, k), which
    model.keras files hold under the registered name alexnet_tf>TopKError.
    """

    def __init__(self, k=1, name=None, dtype=None, **kwargs):
        kwargs.pop("from_sorted_ids", None)  # SparseTopKCategoricalAccuracy's option; never set here
        super().__init__(fn=_top_k_misses_of, name=name or f"top{k}_error", dtype=dtype, k=k, **kwargs)
        self.k = k
        self._direction = "down"

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "k": self.k}


def _top_k_misses_of(y_true, y_pred, k):
    """`top_k_misses` on what a compiled metric receives: labels of any integer or float dtype and
    shape (batch,) or (batch, 1)."""
    labels = ops.reshape(ops.convert_to_tensor(y_true, dtype="int32"), [-1])
    return top_k_misses(labels, y_pred, k)


def make_optimizer(config, steps_per_epoch=None):
    """train.optimizer's optimizer at the learning rate of the global batch (lr_schedule.peak_lr), with
    train.warmup_epochs of warm-up when `steps_per_epoch` is given."""
    train = config.train
    lars = {"trust": train.lars_trust} if train.optimizer == "lars" else {}
    return (LARS if lars else PaperSGD)(
        learning_rate=lr_schedule.peak_lr(config), momentum=train.momentum, paper_weight_decay=train.weight_decay,
        decay_biases=train.decay_biases, warmup_steps=lr_schedule.warmup_steps(config, steps_per_epoch),
        warmup_start=lr_schedule.warmup_start(config), **lars)


def compile_model(model, config, steps_per_epoch=None, **compile_kwargs):
    """Compile with the paper's optimizer (or LARS, train.optimizer), cross-entropy from logits and
    top-1/top-5 error. `steps_per_epoch`: the training steps per epoch, which turn train.warmup_epochs
    into steps; None (the tools that time or evaluate a model) = no warm-up."""
    top5 = top5_k(model.output.shape[-1])
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[TopKError(1), TopKError(top5, name="top5_error")],
        **compile_kwargs,
    )
    return model



# === Precision ===

# `train.precision: auto` picks mixed_bfloat16 on a CPU with AVX512-BF16 but no AMX only when a bfloat16
# matmul runs at least this much faster than float32 on this machine (a model gains less than the matmul;
# docs/speed.md has the measured pairs).
BFLOAT16_MIN_SPEEDUP = 1.2


def resolve_precision(precision, cpu_flags=None, bf16_speedup=None, details=None):
    """'auto' -> mixed_bfloat16 where it is faster, else float32; other values are returned as they are.

    GPUs: bfloat16 from compute capability 8.0. CPUs: bfloat16 with AMX; float32 without any native
    bfloat16 (no AVX512-BF16); with AVX512-BF16 but no AMX, bfloat16 when its matmul measures at
    least BFLOAT16_MIN_SPEEDUP x float32 on this machine (`machine.bfloat16_matmul_speedup`); which
    CPUs gain is measured in docs/speed.md.
    `cpu_flags` (the text of /proc/cpuinfo) is read from the machine and `bf16_speedup` (a callable)
    measured when not given. `details` (a dict), if given, receives the probe's result as
    "bf16_matmul_speedup" when the probe decided.
    """
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if cc >= (8, 0) else "float32"
    flags = machine.cpu_flags(cpu_flags)
    if "amx_bf16" in flags:
        return "mixed_bfloat16"
    if "avx512_bf16" not in flags:
        return "float32"
    speedup = (bf16_speedup or machine.bfloat16_matmul_speedup)()
    if details is not None:
        details["bf16_matmul_speedup"] = speedup
    return "mixed_bfloat16" if speedup >= BFLOAT16_MIN_SPEEDUP else "float32"
