"""The compiled training and evaluation steps, and the statistics they sum (`EpochSums`)."""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from alexnet_tf.data import device_augment
from alexnet_tf.optim import top5_k, top_k_misses


@dataclass(frozen=True)
class EpochSums:
    """Summed statistics of training steps or of an evaluation pass: what the compiled steps return
    and what a recovery checkpoint keeps of the epoch so far (`TrainState.sums`)."""

    loss: float = 0.0         # the examples' cross-entropy, summed
    top1_errors: float = 0.0  # examples whose label is not the top class
    top5_errors: float = 0.0  # ... not among the top 5 (all classes if fewer)
    examples: float = 0.0

    @classmethod
    def from_vector(cls, vector):
        """From the float64 4-vector (loss, top-1 errors, top-5 errors, examples) of a step or a checkpoint."""
        return cls(*np.asarray(vector, np.float64).tolist())

    def vector(self):
        """The float64 4-vector that `from_vector` reads."""
        return np.array([self.loss, self.top1_errors, self.top5_errors, self.examples], np.float64)

    def __add__(self, other):
        return EpochSums(self.loss + other.loss, self.top1_errors + other.top1_errors,
                         self.top5_errors + other.top5_errors, self.examples + other.examples)

    @property
    def mean_loss(self):
        return self.loss / max(self.examples, 1.0)

    def logs(self):
        """The means Keras reports: {"loss", "top1_error", "top5_error"} (zeros before any example)."""
        count = max(self.examples, 1.0)
        return {"loss": self.loss / count, "top1_error": self.top1_errors / count, "top5_error": self.top5_errors / count}


def batch_sums(labels, logits, top5):
    """(per-example cross-entropy, the float32 4-vector of loss sum, top-1 and top-`top5` misses, examples)."""
    per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    wrong1, wrong5 = top_k_misses(labels, logits, 1), top_k_misses(labels, logits, top5)
    count = ops.cast(ops.shape(labels)[0], "float32")
    return per_example, ops.stack([ops.sum(per_example), ops.sum(wrong1), ops.sum(wrong5), count])


def make_steps(model, dist, jit_compile=False, take=None, augment=None):
    """The compiled training and evaluation steps of `model` under `dist`.

    train_step(iterator): takes the next global batch, gives each replica its slice (or, with `take`,
    takes per-replica batches: `take(iterator)` -> (images, labels, global batch size)), and applies the
    paper's update with the gradient of the global batch's mean loss (each replica's loss is its
    examples' loss sum divided by the *global* batch size; the optimizer all-reduces the gradients by
    summing them). With `augment` (data.augment_on device: a device_augment.DeviceAugment), each replica first
    turns its uint8 crops and draws into the network's inputs, on its device. Both steps return the batch's summed statistics, reduced over replicas and
    workers, as the float64 vector of `EpochSums.from_vector`.
    """
    optimizer, variables = model.optimizer, model.trainable_variables
    top5 = top5_k(model.output.shape[-1])
    strategy = dist.strategy

    def replica_train(images, labels, global_batch):
        images = device_augment.apply(augment, images)  # outside the tape: no gradient flows to the input
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example, sums = batch_sums(labels, logits, top5)
            loss = ops.sum(per_example) / global_batch
            scaled = optimizer.scale_loss(loss)  # mixed_float16: loss scaling (identity otherwise)
        dist.apply(optimizer, dist.gradients(scaled, variables, tape), variables)
        return sums

    def replica_eval(images, labels):
        return batch_sums(labels, model(images, training=False), top5)[1]

    if jit_compile:  # XLA on each replica's forward, backward and update (GPUs; slower on CPU)
        replica_train = tf.function(replica_train, jit_compile=True)

    @tf.function
    def train_step(iterator):
        if take is not None:  # train_input.Sharded: the replicas' batches of a distributed iterator
            images, labels, global_batch = take(iterator)
        else:
            images, labels = next(iterator)
            global_batch = tf.cast(tf.shape(labels)[0], tf.float32)
            images, labels = dist.split((images, labels))
        sums = strategy.run(replica_train, args=(images, labels, global_batch))
        return tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None), tf.float64)

    @tf.function(reduce_retracing=True)
    def eval_step(images, labels):
        images, labels = dist.split((images, labels))
        sums = strategy.run(replica_eval, args=(images, labels))
        return tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None), tf.float64)

    return train_step, eval_step


def evaluate(eval_step, dataset):
    """Loss, top-1 and top-5 error over one pass of a batched (images, labels) dataset."""
    sums = EpochSums()
    for images, labels in dataset:
        sums = sums + EpochSums.from_vector(eval_step(images, labels).numpy())
    return sums.logs()
