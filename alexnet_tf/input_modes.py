"""How the training input reaches the training processes: distribute.input and data.service (no TensorFlow).

  replicated  every process runs the whole input pipeline and each replica keeps its slice of every global
              batch: the global batches equal one device's; the data position is a checkpointed tf.data iterator
  sharded     each worker of a multi_worker job reads and decodes only its own part of every epoch
              (data/sharding.py); the data position is (epoch, step), from which the stream is rebuilt
  service     a tf.data service (data.service) runs the pipeline on its workers, every example once per epoch
              in an order that is not reproducible (data/service.py)

The config's checks of these keys run before TensorFlow starts (`config_checks.check` calls `check_input`).
"""

import json
import os
import re
import socket
import time

from alexnet_tf.errors import ConfigError, UserError, shown

# data.service: the dispatcher's address as tf.data.experimental.service.distribute takes it
SERVICE_ADDRESS = re.compile(r"grpc://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")
# the sources whose training split data/service.py can hand to the service's dispatcher as splits
SERVICE_SOURCES = ("fashion_mnist", "synthetic", "folder", "prepared")


def input_mode(cfg):
    """'replicated', 'sharded' or 'service' for a config (distribute.input auto: sharded under multi_worker)."""
    if cfg.data.service:
        return "service"
    chosen = cfg.distribute.input
    if chosen == "auto":
        return "sharded" if cfg.distribute.strategy == "multi_worker" else "replicated"
    return chosen


def check_input(cfg, environ=os.environ):
    """data.service's address and the strategies and sources it serves; under sharded input, a global batch
    that divides evenly over the workers of TF_CONFIG (validated before this check)."""
    d, dist = cfg.data, cfg.distribute
    if d.service:
        match = SERVICE_ADDRESS.fullmatch(d.service)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            raise ConfigError(f"data.service = {shown(d.service)}; expected grpc://HOST:PORT of a tf.data service "
                              "dispatcher (`alexnet-tf data-service dispatcher --port PORT`), or '' for none")
        if dist.strategy == "multi_worker":
            raise ConfigError("data.service with distribute.strategy = multi_worker; expected one training process "
                              "(default, mirrored, towers or hybrid): the consumers of one distributed_epoch job get uneven "
                              "shares, and synchronous workers need equal ones (use distribute.input = sharded)")
        if dist.input == "sharded":
            raise ConfigError("data.service and distribute.input = sharded both choose who decodes the input; "
                              "expected one of them (distribute.input = auto with data.service)")
        if d.source not in SERVICE_SOURCES:
            raise ConfigError(f"data.service with data.source = {d.source}; expected one of "
                              f"{', '.join(SERVICE_SOURCES)} (prepare a {d.source} dataset first: `alexnet-tf prepare`)")
    # (an srun step's workers are known only at run time, where the batch is checked over the replicas)
    workers = _tf_config_workers(environ) if dist.strategy == "multi_worker" and dist.cluster != "slurm" else None
    if input_mode(cfg) == "sharded" and workers and d.batch_size % workers:
        raise ConfigError(f"data.batch_size = {d.batch_size} with distribute.input = sharded over {workers} workers; "
                          f"expected a multiple of {workers} (each worker feeds an equal part of every global batch)")


def _tf_config_workers(environ):
    """The number of training processes TF_CONFIG lists (chief and workers), or None without TF_CONFIG."""
    text = environ.get("TF_CONFIG")
    if not text:
        return None
    cluster = json.loads(text)["cluster"]
    return len(cluster.get("chief", [])) + len(cluster["worker"])


class DispatcherUnreachable(UserError, ConnectionError):
    """Nothing answers at a tf.data service dispatcher's address; the one line names it and the reason."""


def dispatcher_host_port(address):
    """('host', port) of 'grpc://host:port' or 'host:port'."""
    host, _, port = address.removeprefix("grpc://").rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_dispatcher(address, seconds, named):
    """Return once a TCP connection to the dispatcher at `address` opens; DispatcherUnreachable after
    `seconds` of refused or timed-out attempts. (TensorFlow's own client and worker retry silently for
    an hour.) `named`: the setting or flag the address came from, as the message starts."""
    host, port = dispatcher_host_port(address)
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=max(1.0, min(5.0, seconds))).close()
            return
        except OSError as e:
            reason = e.strerror or type(e).__name__
            if time.monotonic() >= deadline:
                raise DispatcherUnreachable(
                    f"{named}: no tf.data service dispatcher answers there after {seconds:g} s ({reason}); "
                    f"expected `alexnet-tf data-service dispatcher --port {port}` running on {host}") from None
            time.sleep(0.5)
