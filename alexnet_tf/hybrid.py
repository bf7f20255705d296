"""distribute.strategy = hybrid: Krizhevsky's "one weird trick" (arXiv 1404.5997) on the D devices of one process.

  conv1 .. pool5   data parallel: device d runs the feature layers on rows [B·d/D, B·(d+1)/D) of the global
                   batch of B. Every device reads the conv weights; their gradients are summed where the
                   variables live (tf.gradients adds the D contributions next to each variable's read).
  fc6, fc7, fc8    model parallel: device d computes columns [U·d/D, U·(d+1)/D) of each layer's U units for
                   the whole batch, from the whole batch's input to the layer, which it gathers from every
                   device (an all-gather: pool5's row blocks, then the previous layer's column blocks).
                   With D = 2 and the two-tower model, device t's columns of fc6 and fc7 are tower t's
                   layers fc6_t and fc7_t, whose weights `distribute.setup` puts on device t.
  loss             on device 0, from the gathered logits.

The model is the ordinary Keras model (the same layers, names and weights as under `default`): model.keras,
the export, `evaluate` and the recovery checkpoint cannot tell a hybrid run from another. Only the steps
differ: they call the model's feature layers as one sub-model per batch block, and compute the fully
connected layers from the Dense layers' own variables, column block by column block, as Dense does
(matmul, bias, activation, in the layer's compute dtype).

The backward pass comes from tf.gradients, which puts each gradient op on its forward op's device
(tf.GradientTape would put them all on one device): a block's gradient ops run where its forward ops
ran, the gradient of a gathered tensor is summed on the device that produced it, and a weight's on the
variable's device, where PaperSGD then applies the paper's update (optim.PaperSGD.update_step).
"""

import re

import keras
import tensorflow as tf
from keras import ops

from alexnet_tf.data import device_augment
from alexnet_tf.optim import top5_k
from alexnet_tf.train_steps import batch_sums


def blocks(n, parts):
    """[(lo, hi)] of the `parts` contiguous blocks of n items: block i is [n·i//parts, n·(i+1)//parts)."""
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


class _FullyConnected:
    """One fully connected layer of the model (fc6, fc7: one Dense per tower; fc8: one Dense), split in
    column blocks over the devices."""

    def __init__(self, model, name):
        tower = re.compile(rf"{name}(?:_(\d+))?")
        self.name = name
        self.dense = sorted((layer for layer in model.layers if tower.fullmatch(layer.name)), key=lambda layer: layer.name)
        self.dropout = sorted((layer for layer in model.layers if re.fullmatch(rf"dropout{name[2:]}_\d+", layer.name)),
                              key=lambda layer: layer.name)
        self.parts = [(sum(d.units for d in self.dense[:t]), sum(d.units for d in self.dense[:t + 1]))
                      for t in range(len(self.dense))]

    def forward(self, inputs, axis, devices, training):
        """Every device's column block of this layer, from the gathered `inputs` (row blocks with axis 0,
        column blocks with axis 1)."""
        columns = blocks(self.parts[-1][1], len(devices))
        seed = self._seed(columns, training)
        out = []
        for d, (device, (lo, hi)) in enumerate(zip(devices, columns)):
            kernel, bias = self._weights(lo, hi, d)
            with tf.device(device), tf.name_scope(f"{self.name}_slice{d}"):
                x = tf.concat(inputs, axis) if len(inputs) > 1 else inputs[0]   # the all-gather onto d
                dense = self.dense[0]
                x = ops.cast(x, dense.compute_dtype)
                kernel = ops.cast(tf.concat(kernel, 1) if len(kernel) > 1 else kernel[0], dense.compute_dtype)
                bias = ops.cast(tf.concat(bias, 0) if len(bias) > 1 else bias[0], dense.compute_dtype)
                h = dense.activation(ops.add(ops.matmul(x, kernel), bias))
                out.append(self._drop(h, (lo, hi), d, seed, training))
        return out

    def _weights(self, lo, hi, d):
        """The kernel and bias pieces of columns [lo, hi), each read and sliced on its variable's device, so
        that only the block crosses to the computing device."""
        kernels, biases = [], []
        for dense, (a, b) in zip(self.dense, self.parts):
            start, stop = max(lo, a) - a, min(hi, b) - a
            if start >= stop:
                continue
            with tf.device(dense.kernel.value.device), tf.name_scope(f"{self.name}_weights{d}"):
                whole = (start, stop) == (0, b - a)
                kernel, bias = tf.convert_to_tensor(dense.kernel.value), tf.convert_to_tensor(dense.bias.value)
                kernels.append(kernel if whole else kernel[:, start:stop])
                biases.append(bias if whole else bias[start:stop])
        return kernels, biases

    def _seed(self, columns, training):
        """One dropout seed per step for blocks that are not a tower's own columns (None if none needs one)."""
        if not training or not self.dropout or self.dropout[0].rate == 0 or all(c in self.parts for c in columns):
            return None
        return self.dropout[0].seed_generator.next()

    def _drop(self, h, columns, d, seed, training):
        """§4.2 dropout of one block: a block that is tower t's columns gets tower t's own dropout layer (the
        masks `default` draws); another block a mask from the step's seed folded with its device index."""
        if not self.dropout:
            return h
        if columns in self.parts:
            return self.dropout[self.parts.index(columns)](h, training=training)
        if seed is None:
            return h
        seed = tf.random.experimental.stateless_fold_in(seed, d)
        return tf.nn.experimental.stateless_dropout(h, rate=self.dropout[0].rate, seed=seed)


class HybridNet:
    """The Keras `model` computed the hybrid way on `devices`: `net(images, training)` -> logits on devices[0]."""

    def __init__(self, model, devices):
        self.devices = list(devices)
        self.fully_connected = [_FullyConnected(model, name) for name in ("fc6", "fc7", "fc8")]
        first = self.fully_connected[0].dense[0]
        # the layers from the image to fc6's input (pool5, flattened and joined), sharing the model's weights
        self.features = keras.Model(model.inputs, first.input, name="features")

    def __call__(self, images, training):
        n = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
        with tf.name_scope("batch_blocks"):  # sliced where the batch is, so that each device receives only its rows
            rows = [images[lo:hi] for lo, hi in blocks(n, len(self.devices))]
        h = []
        for d, (device, block) in enumerate(zip(self.devices, rows)):
            with tf.device(device), tf.name_scope(f"conv_slice{d}"):
                h.append(self.features(block, training=training))
        axis = 0  # pool5's blocks are rows of the batch; every fc layer's are columns
        for layer in self.fully_connected:
            h = layer.forward(h, axis, self.devices, training)
            axis = 1
        with tf.device(self.devices[0]), tf.name_scope("gather_logits"):
            return tf.concat(h, 1) if len(h) > 1 else h[0]


def _summed_where_it_lives(gradient, variable):
    """A conv weight read by several devices gets the sum of their gradients from tf.gradients as one AddN,
    which TensorFlow places on the default device whatever the variable's: a variable on another device
    would receive its own device's gradient back from there. The same sum, on the variable's device
    (the AddN left unused is pruned from the step's graph)."""
    if gradient.op.type != "AddN":
        return gradient
    with tf.device(variable.value.device), tf.name_scope("summed_gradients"):
        return tf.add_n(list(gradient.op.inputs))


def make_steps(model, dist, jit_compile=False, take=None, augment=None):
    """The hybrid strategy's training and evaluation steps, with `train_steps.make_steps`'s signature and
    results. (jit_compile is refused by the config's checks: one XLA cluster cannot span the devices.)"""
    net = HybridNet(model, dist.devices)
    optimizer, variables = model.optimizer, model.trainable_variables
    top5 = top5_k(model.output.shape[-1])
    host = dist.devices[0]

    @tf.function
    def train_step(iterator):
        if take is not None:
            images, labels, global_batch = take(iterator)
        else:
            images, labels = next(iterator)
            global_batch = tf.cast(tf.shape(labels)[0], tf.float32)
        with tf.device(host):  # data.augment_on device: on the device that feeds the batch blocks
            images = device_augment.apply(augment, images)
        logits = net(images, training=True)
        with tf.device(host), tf.name_scope("loss"):
            per_example, sums = batch_sums(labels, logits, top5)
            scaled = optimizer.scale_loss(ops.sum(per_example) / global_batch)
        grads = [_summed_where_it_lives(g, v) for g, v in zip(dist.gradients(scaled, variables, None), variables)]
        dist.apply(optimizer, grads, variables)  # each variable's update on its device, its gradient sent there only
        return tf.cast(sums, tf.float64)

    @tf.function(reduce_retracing=True)
    def eval_step(images, labels):
        logits = net(images, training=False)
        with tf.device(host), tf.name_scope("loss"):
            return tf.cast(batch_sums(labels, logits, top5)[1], tf.float64)

    return train_step, eval_step
