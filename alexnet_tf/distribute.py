"""Several devices and machines: logical CPU devices, the four strategies, and the paper's tower placement.

  default       one device (the default device, or distribute.devices[0])
  mirrored      data parallel over local devices: tf.distribute.MirroredStrategy
  towers        the paper's model parallelism (§3.2): tower k's layers, forward and backward, on device k
  hybrid        "one weird trick" (arXiv 1404.5997): conv layers data parallel, fc6-fc8 model parallel over
                local devices (hybrid.py builds its steps)
  multi_worker  data parallel over the machines of TF_CONFIG or of an srun step (distribute.cluster):
                tf.distribute.MultiWorkerMirroredStrategy

Every mode reads the same global batches: each process runs the same input pipeline and each
replica takes its contiguous slice of every global batch (`Distribution.split`). The data position
is therefore one plain tf.data iterator per process, which tf.train.Checkpoint can save (a
tf.distribute DistributedIterator cannot be checkpointed), and a run can be resumed under another
strategy.
"""

import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass, field

import keras
import tensorflow as tf
from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import expand_hostlist  # not exported

from alexnet_tf import slurm
from alexnet_tf.errors import ConfigError

# Layers of tower t are named `<kind><i>_<t>` (conv1_0, lrn2_1, fc7_0, dropout6_1, flatten_0, ...);
# the shared ones (pad, concat3, concat6, fc8) carry no tower suffix.
_TOWER_LAYER = re.compile(r"[a-z]+\d*_(\d+)")


# multi_worker: a collective op reports a peer that was killed, restarted or went away with one of
# these errors (TF gives several kinds, see CollectiveAllReduceExtended._check_health), or with
# DeadlineExceeded after distribute.collective_timeout. train.py then restarts the process.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
               tf.errors.FailedPreconditionError, tf.errors.AbortedError)


def split_cpu(count):
    """Split the CPU into `count` logical devices /device:CPU:0..count-1 (they share the same cores).

    TensorFlow only allows this before it initialises its devices; train.py calls it first thing.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(f"distribute.logical_cpus = {count} but TensorFlow has already initialised "
                              f"{have} CPU device(s) in this process; expected a fresh process (train.py is one)") from None


@dataclass
class Distribution:
    """The strategy of a run and what the training loop needs to know about it."""

    kind: str                                   # distribute.strategy
    strategy: tf.distribute.Strategy
    devices: list                               # replica devices, the tower devices (towers), or hybrid's devices
    worker: int = 0                             # this process's index among the workers (0 = chief)
    workers: int = 1
    tower_devices: list = field(default=None)   # towers: device of tower k; hybrid: where tower k's weights live

    @property
    def is_chief(self):
        """Only the chief writes TensorBoard logs, config, model files, exports and metrics."""
        return self.worker == 0

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync

    def scope(self):
        """Build the model and optimizer inside. hybrid: the weights of no tower (fc8, and with one tower
        all) on the first of its devices, which may not be TensorFlow's default one."""
        if self.kind != "hybrid":
            return self.strategy.scope()
        return keras.device(self.devices[0])

    def split(self, tensors):
        """Give each replica its contiguous slice of a global batch: replica r of R takes examples
        [n*r//R, n*(r+1)//R) of the n in the batch (uneven last batches included; a slice may be empty)."""
        def replica_slice(context):
            n = tf.shape(tf.nest.flatten(tensors)[0])[0]
            r, count = context.replica_id_in_sync_group, context.num_replicas_in_sync
            lo, hi = n * r // count, n * (r + 1) // count
            return tf.nest.map_structure(lambda t: t[lo:hi], tensors)
        return self.strategy.experimental_distribute_values_from_function(replica_slice)

    def gradients(self, loss, variables, tape):
        """d loss / d variables. For `towers`, tf.gradients: it colocates every gradient op with its
        forward op, so tower k's backward pass runs on device k like its forward pass (GradientTape
        would put all gradient ops on the default device). tf.gradients needs graph mode (tf.function)."""
        if self.kind in ("towers", "hybrid"):
            return tf.gradients(loss, variables)
        return tape.gradient(loss, variables)

    def apply(self, optimizer, gradients, variables):
        """optimizer.apply_gradients. towers and hybrid: in a merge call (cross-replica context), where Keras
        skips its replica all-reduce. With one replica that all-reduce is an identity, but one op (an
        IdentityN) over every gradient: TensorFlow places it on one device, and the gradients of the
        weights on other devices would go there and back every step."""
        if self.kind not in ("towers", "hybrid"):
            return optimizer.apply_gradients(zip(gradients, variables))
        return tf.distribute.get_replica_context().merge_call(lambda _: optimizer.apply_gradients(zip(gradients, variables)))

    def placement(self, model):
        """A context inside which the model's forward ops run on their towers' devices (towers), else nothing."""
        if self.kind != "towers":
            return contextlib.nullcontext()
        return towers_placed(model, self.tower_devices)

    def all_gather(self, value):
        """Every worker's int `value`, as a list in worker order (a collective: every worker must call it)."""
        gathered = _gather(self.strategy, tf.constant([value], tf.int64))
        return [int(v) for v in self.strategy.experimental_local_results(gathered)[0].numpy()]

    def barrier(self):
        """Wait until every worker gets here (multi_worker; immediate otherwise)."""
        if self.workers > 1:
            self.all_gather(0)

    def describe(self):
        if self.kind == "towers":
            placed = ", ".join(f"tower {t} on {d}" for t, d in enumerate(self.tower_devices))
            return f"strategy: towers (§3.2), {placed}"
        if self.kind == "hybrid":
            return (f"strategy: hybrid (arXiv 1404.5997), conv layers data parallel and fc6-fc8 model parallel "
                    f"on {self.devices}")
        text = f"strategy: {self.kind}, {self.replicas} replica(s) on {self.devices}"
        return text + (f"; worker {self.worker} of {self.workers}" if self.workers > 1 else "")


@tf.function
def _gather(strategy, value):
    def replica_fn():
        local = tf.identity(value)  # a copy on the replica's device, where the collective runs
        return tf.distribute.get_replica_context().all_gather(local, axis=0)
    return strategy.run(replica_fn)


def setup(dist, towers=2):
    """Create the devices and the strategy of a `DistributeConfig`. Call before any other TensorFlow
    work: logical CPUs and MultiWorkerMirroredStrategy both need an uninitialised runtime."""
    if dist.logical_cpus:
        split_cpu(dist.logical_cpus)
    if dist.strategy == "multi_worker":
        return _multi_worker(dist)
    local = _local_devices()
    _check_present(dist.devices)
    if dist.strategy == "default":
        if dist.devices:
            return Distribution("default", tf.distribute.OneDeviceStrategy(dist.devices[0]), list(dist.devices))
        return Distribution("default", tf.distribute.get_strategy(), [local[0]])
    if dist.strategy == "mirrored":
        devices = list(dist.devices) or local
        return Distribution("mirrored", tf.distribute.MirroredStrategy(devices), devices)
    if dist.strategy == "hybrid":
        devices = list(dist.devices) or local
        if len(devices) < 2:
            raise ConfigError(f"distribute.strategy = hybrid needs at least 2 devices; found {devices}. "
                              "On a machine without GPUs set distribute.logical_cpus = 2")
        return Distribution("hybrid", tf.distribute.get_strategy(), devices,
                            tower_devices=[devices[t * len(devices) // towers] for t in range(towers)])
    devices = list(dist.devices) or local[:towers]
    if len(devices) < towers:
        raise ConfigError(f"distribute.strategy = towers needs {towers} devices; found {devices}. "
                          "On a machine without GPUs set distribute.logical_cpus = 2")
    return Distribution("towers", tf.distribute.get_strategy(), devices, tower_devices=devices)


def _check_present(requested):
    """Every device of distribute.devices must exist here: TensorFlow's soft placement would otherwise
    run the model silently on the CPU (a '/gpu:7' on a machine without it)."""
    specs = [tf.DeviceSpec.from_string(d.name) for d in tf.config.list_logical_devices()]
    present = {(s.device_type, s.device_index) for s in specs}
    for name in requested:
        spec = tf.DeviceSpec.from_string(name)
        if (spec.device_type or "CPU", spec.device_index or 0) not in present:
            names = ", ".join(f"/{t.lower()}:{i}" for t, i in sorted(present))
            raise ConfigError(f"distribute.devices names {name!r}, which this machine does not have; "
                              f"expected some of {names} (distribute.logical_cpus = N splits the CPU into /cpu:0..N-1)")


def _local_devices():
    """Every GPU; else the logical CPUs; else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def local_tf_configs(count):
    """TF_CONFIG strings for `count` worker processes on this machine (127.0.0.1, free ports).

    To try `multi_worker` without a cluster: start one process per string, each with its
    TF_CONFIG set to it (the tests and alexnet_tf/perf/bench_distribute.py do).
    """
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(count)]


def _multi_worker(dist):
    if slurm.cluster_source(dist, os.environ) == "slurm":
        task = slurm_task(dist.port_base)
        gpus = _slurm_gpus(task)
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(task.cluster), task_type="worker", task_id=task.rank,
            num_accelerators={"GPU": gpus} if gpus else {}, rpc_layer="grpc")
        worker, workers = task.rank, len(task.cluster["worker"])
    else:
        resolver = None  # MultiWorkerMirroredStrategy's default: TFConfigClusterResolver
        worker, workers = _tf_config_worker()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=dist.collective_timeout or None)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    devices = list(strategy.extended.worker_devices)
    _check_same_devices(devices, worker, workers, dist.collective_timeout)
    return Distribution("multi_worker", strategy, devices, worker=worker, workers=workers)


def _check_same_devices(devices, worker, workers, timeout):
    """MultiWorkerMirroredStrategy sizes its collectives as (this worker's devices) x (workers): workers
    with different device counts (a GPU node next to a CPU node, nodes with other GPU counts) would
    wait on each other until the collective timeout. Every worker posts its devices in the cluster's
    coordination service (up once the strategy is) and reads everyone's, before any collective."""
    from tensorflow.python.eager import context  # the key-value store has no public API
    kind = tf.DeviceSpec.from_string(devices[0]).device_type
    try:
        context.context().set_config_key_value(f"alexnet_tf/devices/{worker}", f"{len(devices)} {kind}")
    except tf.errors.AlreadyExistsError:  # this worker restarted (train_command._peer_lost): posted by its first run
        pass
    posted = [context.context().get_config_key_value(f"alexnet_tf/devices/{i}", 1000 * timeout)
              for i in range(workers)]
    same_devices(posted)


def same_devices(posted):
    """Raise ConfigError unless every worker posted the same "<count> <device type>" (one per worker)."""
    if len(set(posted)) > 1:
        each = ", ".join(f"worker {i}: {p}" for i, p in enumerate(posted))
        raise ConfigError(f"the multi_worker workers have different devices ({each}); expected the same number "
                          "and kind on every worker (on Slurm: the same GPUs per task, e.g. srun --gpus-per-task, "
                          "or CUDA_VISIBLE_DEVICES= on every task for CPUs only)")


def _tf_config_worker():
    """(this worker's index, the worker count) from TF_CONFIG."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if not cluster or task.get("type") not in cluster:
        raise ConfigError("distribute.strategy = multi_worker needs the environment variable TF_CONFIG "
                          "with a cluster and this process's task, e.g. "
                          '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    # MultiWorkerMirroredStrategy's chief is the "chief" task if there is one, else worker 0.
    order = [("chief", i) for i in range(len(cluster.get("chief", [])))] + \
            [("worker", i) for i in range(len(cluster.get("worker", [])))]
    return order.index((task["type"], int(task.get("index", 0)))), len(order)


@dataclass
class SlurmTask:
    """This srun task in the cluster TensorFlow's SlurmClusterResolver resolves for its step."""

    cluster: dict       # {"worker": ["host:port", ...]}, one address per task, in rank order
    rank: int           # SLURM_PROCID: the worker index (0 = the chief)
    tasks_on_node: int  # the step's tasks on this task's node
    local_id: int       # this task's place among them (its port is port_base + local_id)


def slurm_task(port_base):
    """Resolve the cluster of the srun step this process is a task of (SLURM_PROCID, SLURM_STEP_*),
    with TensorFlow's SlurmClusterResolver.

    The resolver's GPU arguments only number the tasks of a node here: it pairs each node's tasks
    with range(0, gpus_per_node, gpus_per_task), so by default it runs nvidia-smi (absent on CPU
    nodes), gpus_per_node=0 makes that a zero step, and too few "GPUs" drop tasks. One slot per task
    of the step (gpus_per_node = the task count, gpus_per_task = 1) numbers every node's tasks, and
    auto_set_gpu=False leaves CUDA_VISIBLE_DEVICES alone: this task's GPUs come from _slurm_gpus.
    """
    try:
        tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])  # the resolver reads os.environ too
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=port_base, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)
        cluster = resolver.cluster_spec().as_dict()
        task_type, rank = resolver.get_task_info()
        if task_type is None:
            raise ValueError(f"SLURM_PROCID {os.environ['SLURM_PROCID']} is not one of the step's {tasks} tasks")
    except (RuntimeError, ValueError) as e:  # malformed or inconsistent SLURM_STEP_* variables
        raise ConfigError(f"Slurm's step variables do not describe a cluster ({str(e).splitlines()[0]}); "
                          "expected the environment srun gives its tasks") from None
    # The resolver lists the nodes sorted by name (node10 before node9), srun's block distribution
    # (the default) puts ranks on them in the step's node-list order (node9, node10): its addresses,
    # node by node in that order, are the workers in rank order.
    nodes = expand_hostlist(os.environ["SLURM_STEP_NODELIST"])
    workers = sorted(cluster[task_type], key=lambda a: (nodes.index(a.rsplit(":", 1)[0]), int(a.rsplit(":", 1)[1])))
    host, port = workers[rank].rsplit(":", 1)
    node = os.environ.get("SLURMD_NODENAME")  # where this task runs; another distribution (-m cyclic) differs
    if node and node != host:
        raise ConfigError(f"Slurm task {rank} runs on node {node!r} but the resolved cluster puts it on {host!r}; "
                          "expected srun's block distribution of tasks to nodes (the default; not -m cyclic)")
    tasks_on_node = sum(address.rsplit(":", 1)[0] == host for address in workers)
    slurm.check_ports(port_base, tasks_on_node)
    return SlurmTask({"worker": workers}, rank, tasks_on_node, int(port) - port_base)


def _slurm_gpus(task):
    """Make this task's share of its node's GPUs (slurm.gpu_share) the only ones TensorFlow uses;
    return how many (0: it trains on the CPU). Counted by TensorFlow, never with nvidia-smi."""
    gpus = tf.config.list_physical_devices("GPU")
    first, count = slurm.gpu_share(len(gpus), task.tasks_on_node, task.local_id,
                                   bound=bool(os.environ.get("SLURM_GPUS_PER_TASK")))
    if count != len(gpus):
        tf.config.set_visible_devices(gpus[first:first + count], "GPU")
    return count


def tower_of(layer_name):
    """conv3_1 -> 1; concat6, fc8 -> None."""
    match = _TOWER_LAYER.fullmatch(layer_name)
    return int(match.group(1)) if match else None


def _on_device(call, device):
    def call_on_device(*args, **kwargs):
        with tf.device(device):
            return call(*args, **kwargs)
    return call_on_device


@contextlib.contextmanager
def towers_placed(model, devices):
    """Inside, each tower layer's call runs under tf.device(devices[its tower]): every forward op a
    tf.function traces there is placed on the tower's device. (tf.device around the layer calls
    that *build* a functional model only places the weights, see model.alexnet's tower_devices.)
    Keras looks `layer.call` up on the instance at every call, so an instance attribute wraps it;
    leaving the context restores the class's method."""
    wrapped = []
    for layer in model.layers:
        tower = tower_of(layer.name)
        if tower is not None:
            layer.call = _on_device(layer.call, devices[tower])
            wrapped.append(layer)
    try:
        yield
    finally:
        for layer in wrapped:
            del layer.call
