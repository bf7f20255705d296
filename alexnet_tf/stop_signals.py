"""Stopping a run on SIGTERM or SIGINT after the current step, with a recovery checkpoint written."""

import signal
import sys
import threading

from alexnet_tf.errors import UserError

# multi_worker: how often (in global steps) the workers all-gather their signal flags. Every step, the
# all-gather would cost a visible share of a step; every 10 steps a small one (docs/distribute.md has
# the measurement), and a signalled job still stops within 10 steps (seconds).
SIGNAL_CHECK_STEPS = 10


class Interrupted(UserError, RuntimeError):
    """SIGTERM or SIGINT stopped the run after a step, with a recovery checkpoint written.

    `status` is the exit status a shell reports for that signal (128 + its number: 143, 130), so a
    scheduler sees the job did not finish; rerunning the same command resumes with no step lost.
    """

    prefix = ""  # the message begins with the signal's name

    def __init__(self, signum, checkpoint):
        self.signum, self.checkpoint, self.status = signum, checkpoint, 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped after saving {checkpoint}; rerun the same command to resume"
                         if checkpoint else f"{name}: stopped before any checkpoint was written")


class StopSignals:
    """While training: SIGTERM and SIGINT only set `signum`; the loop saves at the end of the step.

    A second signal during the save changes nothing (the handler only records it), so the save is
    never cut short. Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum, self.previous = None, {}

    def _handle(self, signum, frame):
        if self.signum is None:
            print(f"\n{signal.Signals(signum).name} received: saving a recovery checkpoint after this step",
                  file=sys.stderr, flush=True)
        self.signum = self.signum or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False
