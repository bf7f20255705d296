"""Custom layers: the paper's local response normalisation (§3.3) and dropout (§4.2) that differs per replica."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from alexnet_tf.ops import fused_lrn


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels, paper §3.3.

        b[..., i] = a[..., i] / (k + alpha_eff * sum_{j=max(0,i-n//2)}^{min(C-1,i+n//2)} a[..., j]**2) ** beta

    `convention="paper"` (default): alpha_eff = alpha and k defaults to 2, exactly the paper's
    formula with its constants k=2, n=5, alpha=1e-4, beta=0.75. This is also what
    `tf.nn.local_response_normalization(depth_radius=n//2, bias=k, alpha=alpha, beta=beta)` computes.

    `convention="caffe"`: alpha_eff = alpha / n and k defaults to 1, as Caffe's LRN layer,
    `torch.nn.LocalResponseNorm` and cuda-convnet's own code do (they divide the configured
    scale by the window size). With the same alpha=1e-4 the Caffe convention normalises five
    times more weakly than the paper's formula, and k=1 instead of 2 makes the output larger;
    bvlc_alexnet uses this convention.

    The sum is a matrix product with a fixed band matrix (channels x channels), so the layer
    runs under any dtype policy and under XLA (TF's LRN op has no bfloat16 CPU kernel and fails
    under XLA in reduced precision); the gradient is written out by hand (see `_normalize`). Under a mixed policy the normaliser is computed in
    float32 (k + alpha*sum is about 2.01 and bfloat16 cannot resolve it), and the output is
    cast back to the compute dtype.

    `output_channels=(start, stop)` returns only b[..., start:stop], with the sums still running
    over all C input channels: given the concatenation of both towers' maps, tower t's layer
    normalises its own half with windows that cross the tower boundary, as Caffe's one LRN layer
    over a grouped convolution's whole output does (`model.lrn_across_towers`).

    `kernel` picks the implementation, not the result: "reference" is the pure-TF formula below;
    "fused" the C++ op of alexnet_tf/ops (one pass forward, one backward; float32 inside for
    bfloat16); "auto" the op where it is built and may run (alexnet_tf/ops/fused_lrn.py: not while
    a SavedModel is traced, not under XLA, not with a GPU), else the formula. It is a property of
    the process, so it is not in `get_config`: a saved model.keras never asks for the op.

    Args:
        size: n, the number of adjacent channels summed over (odd).
        k: additive constant; None = 2 (paper) or 1 (caffe).
        alpha: scale of the sum of squares (divided by `size` under the caffe convention).
        beta: exponent.
        convention: "paper" or "caffe".
        output_channels: None (every channel) or [start, stop), the input channels returned.
        kernel: "auto", "fused" or "reference" (`model.lrn_kernel`).
    """

    def __init__(self, size=5, k=None, alpha=1e-4, beta=0.75, convention="paper", output_channels=None,
                 kernel="auto", **kwargs):
        super().__init__(**kwargs)
        if convention not in ("paper", "caffe"):
            raise ValueError(f"LocalResponseNormalization: convention={convention!r}; expected 'paper' or 'caffe'")
        if kernel not in fused_lrn.MODES:
            raise ValueError(f"LocalResponseNormalization: kernel={kernel!r}; expected one of {fused_lrn.MODES}")
        self.kernel = kernel
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization: size={size}; expected a positive odd window")
        self.size = size
        self.k = (2.0 if convention == "paper" else 1.0) if k is None else float(k)
        self.alpha = alpha
        self.beta = beta
        self.convention = convention
        if output_channels is not None:
            start, stop = (int(c) for c in output_channels)
            if not 0 <= start < stop:
                raise ValueError(f"LocalResponseNormalization: output_channels={output_channels!r}; "
                                 "expected (start, stop) with 0 <= start < stop")
            output_channels = (start, stop)
        self.output_channels = output_channels

    @property
    def alpha_eff(self):
        """The coefficient that multiplies the sum of squares in the formula above."""
        return self.alpha if self.convention == "paper" else self.alpha / self.size

    @property
    def constant_factor(self):
        """k^-beta: b / a when alpha_eff * sum a^2 << k (2^-0.75 = 0.595 for the paper's constants);
        `model.lrn_constant` puts this factor where the layer was."""
        return self.k ** -self.beta

    def window_sum_of_squares(self, a):
        """sum_{j=max(0,i-n//2)}^{min(C-1,i+n//2)} a[..., j]**2 for every output channel i of a built
        layer's input `a`, in float64 numpy: the sum in the formula above, for inspecting a trained model."""
        return np.square(np.asarray(a, np.float64)) @ self._band.astype(np.float64)

    def build(self, input_shape):
        channels = input_shape[-1]
        r = self.size // 2
        idx = np.arange(channels)
        # band[j, i] = 1 when channel j lies in channel i's window; x**2 @ band sums the window.
        self._band = (np.abs(idx[:, None] - idx[None, :]) <= r).astype("float32")
        if self.output_channels is not None:
            start, stop = self.output_channels
            if stop > channels:
                raise ValueError(f"LocalResponseNormalization: output_channels={self.output_channels!r} for an input "
                                 f"of {channels} channels; expected stop <= {channels}")
            self._band = self._band[:, start:stop]  # (C, S): only the output channels' windows

    def call(self, inputs):
        if fused_lrn.use_fused(self.kernel):
            return self._fused(inputs)
        x = ops.cast(inputs, "float32")
        return ops.cast(self._normalize(x), self.compute_dtype)

    def _fused(self, inputs):
        """The op in float32 or bfloat16 as given (it computes in float32 either way); other dtypes via float32."""
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16) else tf.cast(inputs, tf.float32)
        start, stop = self.output_channels or (0, -1)
        y = fused_lrn.lrn(x, self.size, self.k, self.alpha_eff, self.beta, start, stop)
        return ops.cast(y, self.compute_dtype)

    def _normalize(self, x):
        """The formula in float32, with its gradient written out (half the ops of autodiff), for the
        output channels [s0, s1) (all C by default; band is (C, S), S = s1 - s0):

            d = k + alpha_eff * x**2 @ band;  y = x[..., s0:s1] * d**-beta
            dL/dx = pad(g * d**-beta) - 2 * alpha_eff * beta * x * (g * y / d) @ band^T

        pad places its S channels at s0:s1 of C (zero elsewhere); with every channel it is the
        identity and band^T = band (symmetric), which is the paper model's path.
        """
        band = tf.constant(self._band)
        k, alpha, beta, name = self.k, self.alpha_eff, self.beta, self.name
        channels = self._band.shape[0]
        whole = self.output_channels is None
        start, stop = (0, channels) if whole else self.output_channels

        @tf.custom_gradient
        def lrn(x):
            d = k + alpha * tf.matmul(tf.square(x), band)
            if beta == 0.75:
                r = tf.math.rsqrt(d)  # d**-0.75 = rsqrt(d) * sqrt(rsqrt(d)): exact, ~3x faster than pow
                scale = r * tf.sqrt(r)
            else:
                scale = tf.pow(d, -beta)
            y = (x if whole else x[..., start:stop]) * scale

            def grad(g):
                with tf.name_scope(name), tf.name_scope("backward"):  # the profiler's op names (alexnet_tf.profile)
                    own = g * scale
                    if not whole:
                        own = tf.pad(own, [[0, 0]] * (len(x.shape) - 1) + [[start, channels - stop]])
                    return own - (2.0 * alpha * beta) * x * tf.matmul(g * y / d, band, transpose_b=not whole)

            return y, grad

        return lrn(x)

    def compute_output_shape(self, input_shape):
        if self.output_channels is None:
            return input_shape
        start, stop = self.output_channels
        return (*input_shape[:-1], stop - start)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, k=self.k, alpha=self.alpha, beta=self.beta, convention=self.convention,
                      output_channels=None if self.output_channels is None else list(self.output_channels))
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class ReplicaDropout(keras.layers.Dropout):
    """keras.layers.Dropout (§4.2) that draws a different mask on every data-parallel replica.

    Keras's Dropout draws its mask from a seed variable that tf.distribute mirrors, so under
    MirroredStrategy every replica would use the same seed: example i of replica 0 and example i
    of replica 1 would drop the same units. Here the seed is folded with the replica's index
    (`tf.random.experimental.stateless_fold_in`). With one replica the layer is exactly
    keras.layers.Dropout (same masks for the same seed).
    """

    def call(self, inputs, training=False):
        context = tf.distribute.get_replica_context()
        if not training or self.rate == 0 or context is None or context.num_replicas_in_sync == 1:
            return super().call(inputs, training=training)
        seed = tf.random.experimental.stateless_fold_in(self.seed_generator.next(), context.replica_id_in_sync_group)
        noise_shape = None
        if self.noise_shape is not None:
            noise_shape = [tf.shape(inputs)[i] if d is None else d for i, d in enumerate(self.noise_shape)]
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed, noise_shape=noise_shape)
