"""Ctrl-C during fit: stop after the step in flight, never in the middle of one.

Python raises KeyboardInterrupt at whatever bytecode the main thread is running when SIGINT is
handled. In a training loop that can be between the parameter update and the optimizer's step
count, or between the update and the record of how far training got: a half-changed model. So
while fit runs (in the main thread, with Python's default SIGINT handler in place) SIGINT only
sets a flag, and the loop looks at the flag at step boundaries:

    sigint = defer_sigint()
    try:
        for each step:
            ... forward, backward, update, record the step ...
            if sigint.requested:
                raise KeyboardInterrupt      # caught by fit: History.stopped = "interrupted"
    finally:
        sigint.restore()

A compiled loop gets the same behaviour by calling PyErr_CheckSignals() between steps (which runs
this handler, setting the flag) and then reading ``requested``.

Elsewhere (fit in another thread, or under a SIGINT handler the user installed) nothing is
changed: KeyboardInterrupt, if any, arrives as Python delivers it.
"""

# signal.signal and signal.getsignal wrap these and convert every handler and signal number to
# an enum on the way (many times the cost of _signal's; measured: see bench/README.md, Python call
# costs): partial_fit and fit pay this per call
import _signal
import signal
import threading


class defer_sigint:
    """Install the flag-setting SIGINT handler (where it is safe to); ``restore()`` undoes it."""

    def __init__(self):
        self.requested = False
        self._previous = None
        if (threading.current_thread() is threading.main_thread()
                and _signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = _signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame):
        self.requested = True

    def restore(self):
        if self._previous is not None:
            _signal.signal(signal.SIGINT, self._previous)
            self._previous = None
