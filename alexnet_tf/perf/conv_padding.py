"""Convolutions run on channel counts rounded up to the CPU's block, with the padding sliced off: the
same network, the same weights, the same outputs, only the shapes oneDNN sees change.

oneDNN's AVX-512 and AMX convolution kernels work on blocks of 16 float32 channels (8 with AVX2);
a layer of 18 or 72 channels per tower is padded to its block and reordered inside every op. Here
the padding is done once in the graph instead: the kernel and the bias are zero-padded to a
multiple of `block` output channels (and input channels, where the input has at least a block), the
input gets zero channels to match, and after the activation the extra output channels are sliced
off. Zero kernels and zero biases give relu(0) = 0 (or tanh(0) = 0) in the extra channels, and zero
input channels meet zero kernel rows, so the result equals the unpadded layer's. The trainable
weights keep their shapes, so the parameter count and a checkpoint are unchanged.

Used by where_time_goes to measure whether the padded shapes pay for the pad and slice around them.
"""

import keras
from keras import ops


def padded(count, block):
    """`count` rounded up to a multiple of `block`."""
    return -(-count // block) * block


class BlockPaddedConv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D whose convolution runs on channel counts padded to a multiple of `block`."""

    def __init__(self, *args, block=16, **kwargs):
        super().__init__(*args, **kwargs)
        self.block = block

    def _padded_in(self, channels):
        """Input channels as the convolution sees them: padded where the input has at least a block
        (conv1's 1 or 3 image channels stay as they are: 16 would multiply its work)."""
        return padded(channels, self.block) if channels >= self.block else channels

    def call(self, inputs):
        c_in, c_out = inputs.shape[-1], self.filters
        extra_in, extra_out = self._padded_in(c_in) - c_in, padded(c_out, self.block) - c_out
        # nothing to pad (the paper model's 48-192 kernels per tower): the plain layer's ops, no pad op
        kernel = ops.pad(self.kernel, [[0, 0], [0, 0], [0, extra_in], [0, extra_out]]) if extra_in or extra_out else self.kernel
        x = ops.pad(inputs, [[0, 0]] * 3 + [[0, extra_in]]) if extra_in else inputs
        y = self.convolution_op(x, kernel)
        if self.use_bias:
            y = ops.add(y, ops.pad(self.bias, [[0, extra_out]]) if extra_out else self.bias)
        if self.activation is not None:
            y = self.activation(y)
        return y[..., :c_out] if extra_out else y

    def get_config(self):
        return {**super().get_config(), "block": self.block}


def pad_convolutions(model, block=16):
    """A copy of the functional `model` whose Conv2D layers are BlockPaddedConv2D, with the same weights."""

    def clone(layer):
        if type(layer) is keras.layers.Conv2D:
            return BlockPaddedConv2D.from_config({**layer.get_config(), "block": block})
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
