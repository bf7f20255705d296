"""`alexnet-tf data-service dispatcher|worker --port P`: the servers of a tf.data service, for data.service.

One dispatcher per training job hands out the epochs' splits; any number of workers, on other hosts,
read, decode and augment the examples and send them to the training process. Both run until SIGTERM or
SIGINT (Ctrl-C), then stop their server and exit 0. A port that cannot be bound (in use) and a
dispatcher that does not answer within --wait seconds are one-line errors (exit 1): TensorFlow itself
would abort with a gRPC message or, for a worker, retry silently for an hour.

This module imports TensorFlow only in the handler, so that `data-service --help` starts none.
"""

import os
import signal
import socket
import threading

from alexnet_tf.errors import ConfigError, UserError
from alexnet_tf.input_modes import dispatcher_host_port, wait_for_dispatcher


class PortUnavailable(UserError, OSError):
    """The server's port cannot be bound (another process listens there); the one line names it and the reason."""


def add_arguments(parser):
    """The `data-service` command's arguments."""
    parser.add_argument("role", choices=("dispatcher", "worker"), help="which server to run")
    parser.add_argument("--port", type=int, required=True, metavar="P", help="the port to serve on (1-65535)")
    parser.add_argument("--dispatcher", metavar="HOST:PORT", help="worker: the dispatcher's HOST:PORT (what data.service names, grpc:// optional)")
    parser.add_argument("--host", default=socket.gethostname(), metavar="HOST",
                        help="worker: the name or address the training process reaches this worker at "
                             "(default: this machine's name)")
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="worker: seconds to wait for the dispatcher to answer (default 60)")


def main(args):
    """Run the server until SIGTERM or SIGINT."""
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}; expected a port in 1..65535")
    if args.role == "worker":
        if not args.dispatcher:
            raise ConfigError("data-service worker needs --dispatcher HOST:PORT (the dispatcher's address)")
        try:
            dispatcher_host_port(args.dispatcher)
        except ValueError:
            raise ConfigError(f"--dispatcher {args.dispatcher!r}; expected HOST:PORT") from None
    if args.wait < 0:
        raise ConfigError(f"--wait {args.wait:g}; expected seconds >= 0")
    _check_port_free(args.port)
    if args.role == "worker":
        wait_for_dispatcher(args.dispatcher, args.wait, f"--dispatcher {args.dispatcher}")
    stop = _stop_on_signals()
    server = _start(args)
    print(f"data-service {args.role}: serving on port {args.port}"
          + (f" (data.service = grpc://{socket.gethostname()}:{args.port})" if args.role == "dispatcher"
             else f" for the dispatcher at {args.dispatcher}, reached at {args.host}:{args.port}")
          + "; SIGTERM or Ctrl-C stops it", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    print(f"data-service {args.role}: stopped ({signal.Signals(stop.signum).name})", flush=True)


def _check_port_free(port):
    """The server binds every interface at `port`; a port in use is named with the system's reason."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("", port))
    except OSError as e:
        raise PortUnavailable(f"--port {port} cannot be bound ({e.strerror}); expected a free port "
                              "(another server listens there?)") from None
    finally:
        probe.close()


def _stop_on_signals():
    """An Event set by SIGTERM or SIGINT (its `signum` the signal's number)."""
    stop = threading.Event()

    def handler(signum, frame):
        stop.signum = signum
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _start(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    service = tf.data.experimental.service
    try:
        if args.role == "dispatcher":
            return service.DispatchServer(service.DispatcherConfig(port=args.port))
        return service.WorkerServer(service.WorkerConfig(
            dispatcher_address=args.dispatcher.removeprefix("grpc://"), worker_address=f"{args.host}:%port%", port=args.port,
            data_transfer_address=f"{args.host}:%dts_port%"))
    except RuntimeError as e:  # "Could not start gRPC server": the port was taken since the check
        raise PortUnavailable(f"--port {args.port}: the {args.role} could not start ({e}); expected a free port") from None
