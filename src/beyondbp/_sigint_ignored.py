"""Imported first by the forkserver of beyondbp's worker pools (see
:func:`beyondbp.interrupts.worker_context`): from here on the forkserver, and every worker it
forks, ignores SIGINT (Ctrl-C reaches the whole process group; only the driver handles it). The
forkserver was started with SIGINT blocked, so a Ctrl-C during its start-up waited, pending, and
is discarded here instead of killing it halfway through its imports."""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
