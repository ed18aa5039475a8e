"""The first load and probe of a downloaded model file, in a child process with limits.

The structural checks (storage.model_files.structure) catch the index attacks we
know of; this catches the rest. Before the service loads a new file itself, a
child process loads, checks and probes it under `resource.setrlimit` limits on
address space (MODEL_PROBE_MEMORY_BYTES) and CPU time, and the service waits
for it with a wall-clock deadline (MODEL_PROBE_TIMEOUT_SECONDS). A file that
segfaults native code, allocates gigabytes or spins kills only that child; the
import is refused with the reason, and the service loads the file only after
the child succeeded on the very same bytes.

The child comes from multiprocessing's *forkserver*: a freshly spawned
interpreter that imports scikit-learn and XGBoost once and forks one child per
probe. Nothing of the service (threads, sockets, event loop, database pool) is
ever copied into a child. Plain spawn per probe cost 2-9 s per import on the
2-core box (interpreter start plus those imports); the forkserver pays that
once, on the first import, and then ~0.1-0.2 s per probe.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

from storage.model_files.store import ModelFileError, load_model

__all__ = ["exit_reason", "probe_in_child"]

# A killed child's pipe closes before its exit status is known; wait this long for it.
_REAP_SECONDS: Final = 10.0


def _address_space_bytes() -> int:
    """The process's current virtual size (what RLIMIT_AS counts)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, hard))


def _child(path: str, max_bytes: int, memory_bytes: int, seconds: float, out: Connection) -> None:
    """Runs in the forked child: the imports are done, now limit and load."""
    # Its own wall-clock end (SIGALRM's default action terminates): a probe blocked
    # in I/O uses no CPU, and it keeps the forkserver alive, so without this it
    # would outlive a service killed meanwhile. The caller's deadline comes first.
    signal.alarm(math.ceil(seconds) + 1)
    _limit(resource.RLIMIT_CORE, 0)  # a crash here is expected, not worth a core file
    # Without /proc (not Linux) only the CPU limit and the wall-clock deadline hold.
    with contextlib.suppress(OSError, ValueError):
        _limit(resource.RLIMIT_AS, _address_space_bytes() + memory_bytes)
    used = resource.getrusage(resource.RUSAGE_SELF)
    _limit(resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime) + math.ceil(seconds))
    try:
        load_model(path, max_bytes=max_bytes)
    except MemoryError:
        out.send(("memory", ""))
    except ModelFileError as exc:
        out_of_memory = isinstance(exc.__cause__, MemoryError)
        out.send(("memory", "") if out_of_memory else ("refused", str(exc)))
    except BaseException as exc:  # anything else is a refusal too, with its reason
        out.send(("refused", f"{type(exc).__name__}: {exc}"))
    else:
        out.send(("ok", ""))
    out.close()


def exit_reason(exitcode: int | None) -> str:
    """How a child that sent no verdict ended, in words."""
    if exitcode is None:
        return "did not finish"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode in (signal.SIGXCPU, signal.SIGALRM):
            return f"ran longer than MODEL_PROBE_TIMEOUT_SECONDS allows ({name})"
        return f"crashed ({name})"
    return f"exited with status {exitcode}"


def probe_in_child(
    path: str | os.PathLike[str], *, max_bytes: int, memory_bytes: int, timeout_seconds: float
) -> None:
    """Load and probe `path` in a limited child process; raise ModelFileError unless it passed.

    Blocking (it waits for the child): run it in a worker thread.
    """
    name = Path(path).name
    context = multiprocessing.get_context("forkserver")
    # The server imports scikit-learn and XGBoost once; each probe forks from it
    # (without the parent's __main__: see storage.model_files.probe_server).
    context.set_forkserver_preload(["storage.model_files.probe_server"])
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child,
        args=(str(path), max_bytes, memory_bytes, timeout_seconds, sender),
        name="model-probe",
        daemon=True,
    )
    child.start()
    sender.close()  # ours; the child holds its own copy, so its death closes the pipe
    verdict: tuple[str, str] | None = None
    exitcode: int | None = None
    try:
        if receiver.poll(timeout_seconds):
            try:
                verdict = receiver.recv()
            except EOFError:  # died without a word: a crash or a limit's signal
                verdict = None
        else:
            child.kill()
            child.join(_REAP_SECONDS)
            raise ModelFileError(
                f"{name}: loading and probing the model took longer than {timeout_seconds:g} s "
                "(MODEL_PROBE_TIMEOUT_SECONDS); the probe process was stopped"
            )
    finally:
        receiver.close()
        child.join(_REAP_SECONDS)
        if child.is_alive():
            child.kill()
            child.join(_REAP_SECONDS)
        exitcode = child.exitcode
        child.close()
    if verdict is None:
        raise ModelFileError(
            f"{name}: the probe process {exit_reason(exitcode)} while loading "
            "the model; the model is refused"
        )
    status, message = verdict
    if status == "memory":
        raise ModelFileError(
            f"{name}: loading the model needs more than {memory_bytes} bytes of memory "
            "(MODEL_PROBE_MEMORY_BYTES)"
        )
    if status != "ok":
        raise ModelFileError(message)
