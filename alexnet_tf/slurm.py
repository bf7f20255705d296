"""Where a multi_worker cluster comes from (distribute.cluster), and what Slurm tells a task about it.

  tf_config  the TF_CONFIG environment variable, written by hand or by a launcher (docs/distribute.md)
  slurm      the srun step this process is a task of: TensorFlow's SlurmClusterResolver reads its
             SLURM_* variables (distribute.slurm_cluster); task i of the step is worker i, task 0 the chief
  auto       tf_config where TF_CONFIG is set (it is explicit), else slurm inside an srun step, else an error

An srun step is recognised by the variables srun sets for each task and the resolver needs. An sbatch
script or an salloc shell is not a step (it has SLURM_JOB_ID, even SLURM_PROCID in a batch script, but
no SLURM_STEP_ID): there the command must be started with srun. A step of one task is a cluster of
one worker.

TensorFlow-free, like config.py: train_command calls `cluster_source` before TensorFlow starts.
"""

from alexnet_tf.errors import ConfigError, shown

# What srun sets in every task's environment (and batch scripts and salloc shells lack), and what
# SlurmClusterResolver reads: the task's rank, the step's task count, nodes and tasks per node.
STEP_VARIABLES = ("SLURM_STEP_ID", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST",
                  "SLURM_STEP_TASKS_PER_NODE")
CLUSTERS = ("auto", "tf_config", "slurm")


def in_srun_step(environ):
    """True in a task of an srun step (every one of STEP_VARIABLES set)."""
    return all(environ.get(name) for name in STEP_VARIABLES)


def cluster_source(dist, environ):
    """'tf_config' or 'slurm': where this multi_worker process finds its cluster (`dist` a DistributeConfig).
    Raises ConfigError (one line, before TensorFlow) when that place has no cluster."""
    if dist.cluster == "tf_config" or (dist.cluster == "auto" and environ.get("TF_CONFIG")):
        if not environ.get("TF_CONFIG"):
            raise ConfigError("distribute.cluster = tf_config needs the environment variable TF_CONFIG "
                              "(the cluster and this worker's index; see docs/distribute.md)")
        return "tf_config"
    if in_srun_step(environ):
        return "slurm"
    missing = [name for name in STEP_VARIABLES if not environ.get(name)]
    if dist.cluster == "slurm":
        raise ConfigError(f"distribute.cluster = slurm but this process is not a task of an srun step "
                          f"({', '.join(missing)} unset); expected the command started with srun")
    where = (f"this Slurm job {shown(environ['SLURM_JOB_ID'])} is an allocation, not an srun step: start the command "
             "with srun" if environ.get("SLURM_JOB_ID") else "neither is set here")
    raise ConfigError("distribute.strategy = multi_worker needs the environment variable TF_CONFIG (the cluster "
                      f"and this worker's index) or an srun step to take the cluster from; {where} (docs/distribute.md)")


def gpu_share(visible, tasks_on_node, local_id, bound):
    """(first, count): the GPUs, of the `visible` ones this task sees, that it trains on.

    No GPU: (0, 0), the CPU. Slurm bound GPUs to each task (`bound`: srun --gpus-per-task) or the task
    is alone on its node: all it sees. Otherwise the node's tasks see the same GPUs, and task
    `local_id` (SLURM_LOCALID) of the `tasks_on_node` takes its contiguous share, as the resolver's own
    allocation does; raises ConfigError when they cannot be shared evenly.
    """
    if visible == 0 or bound or tasks_on_node == 1:
        return 0, visible
    if visible % tasks_on_node:
        raise ConfigError(f"this node has {visible} GPUs for its {tasks_on_node} Slurm tasks; expected a "
                          "multiple of the task count (srun --ntasks-per-node dividing the GPUs, or --gpus-per-task)")
    each = visible // tasks_on_node
    return local_id * each, each


def check_ports(port_base, tasks_on_node):
    """A node's tasks listen on port_base .. port_base + tasks - 1: all must be ports."""
    last = port_base + tasks_on_node - 1
    if last > 65535:
        raise ConfigError(f"distribute.port_base = {port_base} with {tasks_on_node} Slurm tasks on a node would "
                          f"need port {last}; expected port_base + tasks per node - 1 <= 65535")
