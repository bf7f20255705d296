"""multi_worker started by a real Slurm (tests/slurm_cluster.py: munged, slurmctld and slurmd on this
machine), against one-process training of the same config.

Every worker takes its cluster from TensorFlow's SlurmClusterResolver (distribute.cluster = slurm),
which names the node (`hostname -s`); before any worker starts, the resolved addresses must all
resolve into 127.0.0.0/8, so no traffic leaves this machine. The config is tests/test_distribute.py's
(dropout off, deterministic, checkpoints every 3 steps) for 6 epochs of 4 steps. Tolerances as
there: the two tasks end identical, and within 1e-6 of one process (they sum two half-batch
gradients instead of one batch).
"""

import ipaddress
import json
import os
import random
import re
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf import slurm as slurm_lib
from alexnet_tf.distribute import same_devices, slurm_task
from alexnet_tf.errors import ConfigError
from conftest import ROOT, tiny_overrides
from slurm_cluster import OneNodeSlurm, SlurmUnavailable
from test_distribute import checkpoint_weights, final_weights, max_difference

OVERRIDES = tiny_overrides(**{"model.dropout": 0.0, "train.deterministic": True, "train.epochs": 6,
                               "train.checkpoint_every": 3})
ATOL = 1e-6
STEPS = 24  # 6 epochs of 4 batches of 16 of the 64 synthetic images
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


# === Without daemons: the choice of cluster, the resolver's output, the GPU share (environments as srun sets them) ===

# A task's environment in an srun step on this machine (`srun -n 2 env`, task 1), and in an sbatch
# script and an salloc shell, which are not steps.
SRUN_TASK_1 = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
               "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "vm", "SLURM_STEP_TASKS_PER_NODE": "2",
               "SLURMD_NODENAME": "vm"}
SBATCH_SCRIPT = {"SLURM_JOB_ID": "3", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "2"}
SALLOC_SHELL = {"SLURM_JOB_ID": "4", "SLURM_NTASKS": "2"}
TF_CONFIG = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}'


def distribute_config(*overrides):
    return alexnet_tf.load_config(None, ["distribute.strategy=multi_worker", *overrides]).distribute


@pytest.mark.parametrize("cluster, environ, source", [
    ("auto", SRUN_TASK_1, "slurm"),
    ("auto", {**SRUN_TASK_1, "TF_CONFIG": TF_CONFIG}, "tf_config"),  # an explicit TF_CONFIG wins
    ("auto", {"TF_CONFIG": TF_CONFIG}, "tf_config"),
    ("slurm", {**SRUN_TASK_1, "TF_CONFIG": TF_CONFIG}, "slurm"),
    ("tf_config", {**SRUN_TASK_1, "TF_CONFIG": TF_CONFIG}, "tf_config"),
])
def test_the_cluster_source(cluster, environ, source):
    assert slurm_lib.cluster_source(distribute_config(f"distribute.cluster={cluster}"), environ) == source


@pytest.mark.parametrize("cluster, environ, fragment", [
    ("auto", SBATCH_SCRIPT, "this Slurm job '3' is an allocation, not an srun step: start the command with srun"),
    ("auto", SALLOC_SHELL, "this Slurm job '4' is an allocation, not an srun step"),
    ("auto", {}, "needs the environment variable TF_CONFIG (the cluster and this worker's index) or an srun step"),
    ("slurm", SBATCH_SCRIPT, "distribute.cluster = slurm but this process is not a task of an srun step (SLURM_STEP_ID, "
                             "SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE unset)"),
    ("tf_config", SRUN_TASK_1, "distribute.cluster = tf_config needs the environment variable TF_CONFIG"),
])
def test_no_cluster_is_a_config_error(cluster, environ, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        slurm_lib.cluster_source(distribute_config(f"distribute.cluster={cluster}"), environ)


def test_train_py_outside_an_srun_step_exits_2_in_one_line_before_tensorflow(tmp_path, capsys, monkeypatch):
    from alexnet_tf import train_command
    from conftest import run_main
    for name in [n for n in os.environ if n.startswith("SLURM_")] + ["TF_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    status, out, err = run_main(capsys, train_command.main, [
        "--run-dir", tmp_path, "--set", "distribute.strategy=multi_worker", "--set", "distribute.cluster=slurm"])
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert "distribute.cluster = slurm but this process is not a task of an srun step" in err


@pytest.mark.parametrize("overrides, fragment", [
    (["distribute.cluster=slurm"], "distribute.cluster = slurm with distribute.strategy = default; expected strategy multi_worker"),
    (["distribute.strategy=mirrored", "distribute.cluster=tf_config"], "distribute.cluster = tf_config with distribute.strategy = mirrored"),
    (["distribute.cluster=lsf"], "distribute.cluster = 'lsf' (str); expected one of auto, tf_config, slurm"),
    (["distribute.port_base=80"], "distribute.port_base = 80 (int); expected an integer in [1024, 65535]"),
])
def test_cluster_keys_config_errors(overrides, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        alexnet_tf.load_config(None, overrides)


def test_cluster_slurm_ignores_a_malformed_tf_config(monkeypatch):
    """TF_CONFIG is validated when it is the cluster's source, not when srun's step is."""
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        distribute_config()
    assert distribute_config("distribute.cluster=slurm").cluster == "slurm"


def step_environment(monkeypatch, **variables):
    for name in [n for n in os.environ if n.startswith("SLURM")]:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_slurm_task_on_a_cpu_node(monkeypatch):
    """TensorFlow's resolver with its defaults runs nvidia-smi (absent here), and with gpus_per_node=0
    divides by zero; distribute.slurm_task resolves the same step."""
    step_environment(monkeypatch, **SRUN_TASK_1)
    with pytest.raises((RuntimeError, OSError)):  # no nvidia-smi on this machine
        tf.distribute.cluster_resolver.SlurmClusterResolver().cluster_spec()
    with pytest.raises(ValueError, match="must not be zero"):
        tf.distribute.cluster_resolver.SlurmClusterResolver(gpus_per_node=0, auto_set_gpu=False).cluster_spec()
    task = slurm_task(9000)
    assert (task.cluster, task.rank, task.tasks_on_node, task.local_id) == ({"worker": ["vm:9000", "vm:9001"]}, 1, 2, 1)


def test_slurm_task_ranks_follow_the_step_node_list(monkeypatch):
    """Nodes node9 and node10 with 2 and 1 tasks: srun's block distribution puts ranks 0, 1 on node9 and
    2 on node10 (the node list's order); the resolver alone lists node10 first (sorted names)."""
    environ = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NODELIST": "node[9-10]",
               "SLURM_STEP_TASKS_PER_NODE": "2,1"}
    expected = ["node9:8888", "node9:8889", "node10:8888"]
    for rank, node, on_node, local in [(0, "node9", 2, 0), (1, "node9", 2, 1), (2, "node10", 1, 0)]:
        step_environment(monkeypatch, **environ, SLURM_PROCID=str(rank), SLURMD_NODENAME=node)
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(gpus_per_node=3, gpus_per_task=1, auto_set_gpu=False)
        assert resolver.cluster_spec().as_dict()["worker"][0] == "node10:8888"  # the resolver's own order
        task = slurm_task(8888)
        assert (task.cluster["worker"], task.rank, task.tasks_on_node, task.local_id) == (expected, rank, on_node, local)
    # a task that is not where block distribution puts it (srun -m cyclic) is refused in one line
    step_environment(monkeypatch, **environ, SLURM_PROCID="1", SLURMD_NODENAME="node10")
    with pytest.raises(ConfigError, match=re.escape("Slurm task 1 runs on node 'node10' but the resolved cluster puts it on 'node9'")):
        slurm_task(8888)


def test_slurm_task_refuses_ports_past_65535(monkeypatch):
    step_environment(monkeypatch, **SRUN_TASK_1)
    with pytest.raises(ConfigError, match=re.escape("distribute.port_base = 65535 with 2 Slurm tasks on a node would need port 65536")):
        slurm_task(65535)


@pytest.mark.parametrize("visible, tasks, local, bound, share", [
    (0, 2, 1, False, (0, 0)),   # a CPU node: the CPU
    (4, 1, 0, False, (0, 4)),   # one task per node: all its GPUs
    (4, 2, 1, False, (2, 2)),   # two tasks sharing a node's 4 GPUs: the second takes GPUs 2 and 3
    (8, 4, 3, False, (6, 2)),
    (1, 2, 1, True, (0, 1)),    # srun --gpus-per-task=1 bound one GPU to each task: the one it sees
])
def test_gpu_share(visible, tasks, local, bound, share):
    assert slurm_lib.gpu_share(visible, tasks, local, bound) == share


def test_gpus_that_cannot_be_shared_evenly_are_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("this node has 3 GPUs for its 2 Slurm tasks; expected a multiple")):
        slurm_lib.gpu_share(3, 2, 0, False)


def test_workers_with_different_devices_are_a_config_error():
    """MultiWorkerMirroredStrategy assumes every worker has as many devices as this one (a mixed job
    would wait until the collective timeout); the posted counts are compared first."""
    same_devices(["2 GPU", "2 GPU", "2 GPU"])
    with pytest.raises(ConfigError, match=re.escape("different devices (worker 0: 2 GPU, worker 1: 1 CPU)")):
        same_devices(["2 GPU", "1 CPU"])


# === A real one-node Slurm ===

@pytest.fixture(scope="session")
def slurm():
    """A one-node Slurm for the session; its daemons are stopped by pid afterwards, also after a failure."""
    cluster = OneNodeSlurm()
    try:
        cluster.start()
    except SlurmUnavailable as e:
        cluster.stop()
        pytest.fail(f"Slurm could not be brought up: {e}", pytrace=False)
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


def _two_free_ports():
    """A port p with p and p + 1 free, below the ephemeral range (where other processes' sockets land)."""
    for _ in range(100):
        port = random.randrange(20000, 30000)
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("", p))
            return port
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports in 20000-30000")


def srun(slurm, tmp_path, name, args):
    """`srun -N 1 -n 2 python ARGS` as job `name`; each task's output in tmp_path/<name>-<task>.log,
    srun's own messages in tmp_path/<name>-srun.log."""
    command = ["srun", "-N", "1", "-n", "2", "-J", name, f"--output={tmp_path}/{name}-%t.log", sys.executable, *args]
    with open(tmp_path / f"{name}-srun.log", "w") as log:
        return subprocess.Popen(command, cwd=ROOT, env=slurm.env, stdout=log, stderr=subprocess.STDOUT)


def task_log(tmp_path, name, task):
    path = tmp_path / f"{name}-{task}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def logs(tmp_path, name):
    return "\n".join(f"--- {part}:\n" + (task_log(tmp_path, name, part)[-3000:]) for part in (0, 1, "srun"))


@pytest.fixture(scope="module")
def port_base(slurm, tmp_path_factory):
    """A free distribute.port_base, once the cluster the resolver gives a 2-task step there is known to
    stay on this machine: every worker address resolves into 127.0.0.0/8, checked before any worker
    process starts (this step only resolves; it connects nothing)."""
    tmp_path, port = tmp_path_factory.mktemp("resolve"), _two_free_ports()
    code = ("import json; from alexnet_tf.distribute import slurm_task; "
            f"t = slurm_task({port}); print('RESOLVED ' + json.dumps([t.cluster, t.rank, t.tasks_on_node, t.local_id]))")
    assert srun(slurm, tmp_path, "resolve", ["-c", code]).wait(timeout=240) == 0, logs(tmp_path, "resolve")
    resolved = [json.loads(task_log(tmp_path, "resolve", t).split("RESOLVED ")[1]) for t in (0, 1)]
    assert [r[1:] for r in resolved] == [[0, 2, 0], [1, 2, 1]]
    cluster = resolved[0][0]
    assert cluster == resolved[1][0] == {"worker": [f"{slurm.node}:{port}", f"{slurm.node}:{port + 1}"]}
    for address in cluster["worker"]:
        host, worker_port = address.rsplit(":", 1)
        ips = {info[4][0] for info in socket.getaddrinfo(host, int(worker_port), proto=socket.IPPROTO_TCP)}
        outside = [ip for ip in ips if ipaddress.ip_address(ip.split("%")[0]) not in LOOPBACK]
        if not ips or outside:
            pytest.fail(f"worker address {address} resolves to {sorted(ips)}, not only into 127.0.0.0/8: "
                        "refusing to start workers that could send traffic off this machine", pytrace=False)
    return port


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Final weights of one-process training (default strategy) of the same config, in this process."""
    from alexnet_tf.training import train
    run_dir = str(tmp_path_factory.mktemp("one_process"))
    train(alexnet_tf.load_config(None, OVERRIDES), run_dir, verbose=0)
    return final_weights(run_dir)


def train_args(tmp_path, port_base):
    config_file = tmp_path / "config.yaml"
    if not config_file.exists():
        from alexnet_tf.config import dump
        dump(alexnet_tf.load_config(None, OVERRIDES), str(config_file))
    args = ["--config", str(config_file), "--run-dir", str(tmp_path / "run")]
    for o in ["distribute.strategy=multi_worker", "distribute.input=replicated", "distribute.cluster=slurm",
              f"distribute.port_base={port_base}",
              "train.export=true"]:
        args += ["--set", o]
    return args


def assert_job_matches(tmp_path, reference):
    """Both tasks wrote the one run directory as two TF_CONFIG workers do; their weights agree."""
    run = tmp_path / "run"
    chief = final_weights(str(run))
    worker = checkpoint_weights(tf.train.latest_checkpoint(str(run / "checkpoints" / "worker-1")))
    assert max_difference(chief, worker) == 0.0
    assert max_difference(chief, reference) < ATOL
    assert sorted(os.listdir(run / "checkpoints")) == ["best", "last", "worker-1"]
    for name in (".lock-chief", ".lock-worker-1", "metrics.json", "model.keras", "export", "tb", "config.yaml"):
        assert (run / name).exists(), name


def finish(process, timeout=300):
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_srun_two_tasks_train_as_one_process(slurm, port_base, reference, tmp_path):
    status = finish(srun(slurm, tmp_path, "train", [os.path.join(ROOT, "train.py"), *train_args(tmp_path, port_base)]))
    assert status == 0, logs(tmp_path, "train")
    assert "worker 0 of 2" in task_log(tmp_path, "train", 0) and "worker 1 of 2" in task_log(tmp_path, "train", 1)
    assert_job_matches(tmp_path, reference)


def task_statuses(srun_log):
    """{task: exit status} from srun's own report, e.g. 'srun: error: vm: tasks 0-1: Exited with exit code 143'."""
    statuses = {}
    for tasks, code in re.findall(r"tasks? ([\d,-]+): Exited with exit code (\d+)", srun_log):
        for part in tasks.split(","):
            lo, _, hi = part.partition("-")
            statuses.update({t: int(code) for t in range(int(lo), int(hi or lo) + 1)})
    return statuses


def squeue_step(slurm, name):
    """The step id (JOB.STEP) of job `name`, once Slurm lists it."""
    result = subprocess.run(["squeue", "-h", "-s", "-n", name, "-o", "%i"], capture_output=True, text=True,
                            env=slurm.env, timeout=30)
    return result.stdout.split()[0] if result.stdout.split() else None


@pytest.mark.slow
def test_scancel_term_saves_both_tasks_and_another_srun_resumes(slurm, port_base, reference, tmp_path):
    """scancel --signal=TERM JOB.STEP mid-epoch: both tasks save the same step and exit 143 with one line
    each; the same srun again resumes from that step and the job ends as an uninterrupted one."""
    args = train_args(tmp_path, port_base)
    process = srun(slurm, tmp_path, "signalled", [os.path.join(ROOT, "tests", "crash_driver.py"), "--print-steps",
                                                  "--", *args])
    try:
        deadline = time.time() + 240
        while "global step 2" not in task_log(tmp_path, "signalled", 1):
            assert time.time() < deadline and process.poll() is None, logs(tmp_path, "signalled")
            time.sleep(0.05)
        step_id = squeue_step(slurm, "signalled")
        assert step_id and step_id.endswith(".0"), step_id
        subprocess.run(["scancel", "--signal=TERM", step_id], env=slurm.env, check=True, timeout=30)
    finally:
        finish(process)
    srun_log = task_log(tmp_path, "signalled", "srun")
    assert task_statuses(srun_log) == {0: 143, 1: 143}, logs(tmp_path, "signalled")
    run = tmp_path / "run"
    chief = tf.train.latest_checkpoint(str(run / "checkpoints" / "last"))
    worker = tf.train.latest_checkpoint(str(run / "checkpoints" / "worker-1"))
    step = chief.rsplit("-", 1)[1]
    assert worker.endswith(f"ckpt-{step}") and int(step) < STEPS, (chief, worker)
    for task, saved in enumerate((chief, worker)):
        lines = task_log(tmp_path, "signalled", task).splitlines()
        assert lines.count(f"SIGTERM: stopped after saving {saved}; rerun the same command to resume") == 1, lines[-10:]
    assert not (run / "model.keras").exists()

    status = finish(srun(slurm, tmp_path, "resumed", [os.path.join(ROOT, "train.py"), *args]))
    assert status == 0, logs(tmp_path, "resumed")
    resumed = task_log(tmp_path, "resumed", 0)
    assert f"ckpt-{step}" in resumed.split("resuming from")[1].splitlines()[0]
    assert_job_matches(tmp_path, reference)
