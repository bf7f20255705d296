"""The paper's learning rule (§5), its error metrics, `compile_model`, and the numeric precision of a run."""

import keras
import tensorflow as tf
from keras import ops

from alexnet_tf import machine


@keras.saving.register_keras_serializable(package="alexnet_tf")
class PaperSGD(keras.optimizers.SGD):
    """SGD with momentum and weight decay inside the momentum, exactly as in the paper (§5):

        v <- momentum * v - weight_decay * lr * w - lr * dL/dw
        w <- w + v

    Keras's own `SGD(weight_decay=...)` decays the weights outside the momentum
    (w -= lr * wd * w, decoupled), which is a different rule.

    Weight decay applies to the kernels (the paper's "w"; cuda-convnet and Caffe's
    bvlc_alexnet do not decay biases). `decay_biases=True` decays every variable.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, paper_weight_decay=0.0005, decay_biases=False, **kwargs):
        kwargs.pop("weight_decay", None)  # the decoupled variant stays off
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.paper_weight_decay = paper_weight_decay
        self.decay_biases = decay_biases

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._decayed = [self.decay_biases or _is_kernel(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        # Each variable's update runs on the variable's device (as TF1 optimizers colocated them):
        # with the towers strategy, tower k's momentum and weight updates stay on device k.
        with tf.device(variable.device):
            if self.paper_weight_decay and self._decayed[self._get_variable_index(variable)]:
                decay = ops.cast(self.paper_weight_decay, variable.dtype)
                gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(decay, variable))
            super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(paper_weight_decay=self.paper_weight_decay, decay_biases=self.decay_biases)
        return config


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


def make_optimizer(train):
    return PaperSGD(learning_rate=train.lr, momentum=train.momentum,
                    paper_weight_decay=train.weight_decay, decay_biases=train.decay_biases)


def compile_model(model, config, **compile_kwargs):
    """Compile with the paper's optimizer, cross-entropy from logits and top-1/top-5 error."""
    top5 = top5_k(model.output.shape[-1])
    model.compile(
        optimizer=make_optimizer(config.train),
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
