"""How many intra-op threads a run uses (``trainer.threads``), and the OpenMP wait policy.

PyTorch's CPU operators run on an OpenMP pool of one thread per core. OpenMP's default wait policy
lets a thread that has finished its share *spin* for a while before it sleeps: on a machine whose
cores are busy with other work, the spinning threads fight that work and each other. Measured on a
busy 2-core machine (issue 26): two intra-op threads ran 3.7-35x slower than one; with
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once) two threads ran at one thread's speed.

So:

- the ``mmcore`` command sets ``OMP_WAIT_POLICY=PASSIVE`` before PyTorch is imported, unless the
  user has set it (:func:`prefer_passive_waits`; OpenMP reads it once, when PyTorch loads it, so it
  cannot be changed later in the process);
- ``trainer.threads: auto`` (the default, :func:`auto_threads`) uses the cores the rest of the
  machine leaves idle *now* -- measured over a fifth of a second by psutil, before the run starts --,
  at most PyTorch's one per usable core and at least one: passive waits soften oversubscription but
  do not remove it (on the same machine, two passive threads once ran 5.8x slower than one while two
  other processes were busy). Not the 1-minute load average: it lags by a minute and counts this
  process's own previous run (the demo's four runs in one process each saw the one before and ran
  on one thread of an idle machine);
- ``trainer.threads: N`` uses ``N`` threads whatever the machine does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

#: The environment variable OpenMP reads its wait policy from (when the library is loaded).
WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_waits(environ: Any = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` (default ``os.environ``) unless it is set
    already or PyTorch is imported (then it is too late to matter); returns whether it was set."""
    environ = os.environ if environ is None else environ
    if WAIT_POLICY in environ or "torch" in sys.modules:
        return False
    environ[WAIT_POLICY] = "PASSIVE"
    return True


def invoked_as_command() -> bool:
    """Whether this process is the ``mmcore`` command (console script or ``python -m mmcore``)."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    orig = list(getattr(sys, "orig_argv", []))
    return argv0 in ("mmcore", "mmcore.exe") or any(orig[i:i + 2] == ["-m", "mmcore"] for i in range(len(orig)))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def waits_are_passive(environ: Any = None) -> bool:
    environ = os.environ if environ is None else environ
    return str(environ.get(WAIT_POLICY, "")).strip().upper() == "PASSIVE"


#: Seconds over which :func:`idle_cpus` measures the machine: long enough for a few scheduler ticks on
#: every CPU (psutil reads the kernel's per-CPU tick counters), short next to a run's start-up.
IDLE_WINDOW = 0.2
#: A measurement younger than this is reused (many runs started in one process, as a test suite does).
IDLE_REUSE_S = 10.0
_IDLE_CACHE: tuple[float, float] | None = None  # (time.monotonic() of the measurement, idle CPUs)


def idle_cpus(window: float = IDLE_WINDOW) -> float | None:
    """CPUs of this process's affinity mask left idle by every other process over the next ``window``
    seconds (this process sleeps meanwhile), from psutil's per-CPU utilisation; ``None`` where it
    cannot be measured. A measurement younger than :data:`IDLE_REUSE_S` seconds is reused."""
    global _IDLE_CACHE
    now = time.monotonic()
    if _IDLE_CACHE is not None and now - _IDLE_CACHE[0] < IDLE_REUSE_S:
        return _IDLE_CACHE[1]
    try:
        import psutil

        busy = psutil.cpu_percent(interval=window, percpu=True)
    except Exception:  # noqa: BLE001 -- no psutil, or no per-CPU counters on this system: caller falls back
        return None
    if not busy:
        return None
    if hasattr(os, "sched_getaffinity"):
        mine = [busy[i] for i in sorted(os.sched_getaffinity(0)) if i < len(busy)]
        busy = mine or busy
    idle = sum(max(0.0, 100.0 - b) for b in busy) / 100.0
    _IDLE_CACHE = (time.monotonic(), idle)
    return idle


def auto_threads(*, cpus: int | None = None, default: int | None = None, idle: float | None = None,
                 load: float | None = None, processes: int = 1) -> int:
    """The ``trainer.threads: auto`` choice (module docstring): one thread per idle CPU, rounded to the
    nearest whole CPU, shared among this run's ``processes``, within ``[1, PyTorch's default]``.

    ``cpus``: usable CPUs (default :func:`usable_cpus`); ``default``: PyTorch's own choice (default
    ``torch.get_num_threads()``); ``idle``: idle CPUs (default :func:`idle_cpus`, measured);
    ``load``: the 1-minute load average, used only where idle CPUs cannot be measured (then less this
    run's own processes, which it counts); ``processes``: training processes sharing this machine
    (``LOCAL_WORLD_SIZE`` under torchrun), all starting together, so each takes its share of the idle CPUs.
    """
    cpus = usable_cpus() if cpus is None else cpus
    if default is None:
        import torch

        default = torch.get_num_threads()
    processes = max(1, processes)
    share = max(1, min(default, cpus // processes))
    if idle is None and load is None:
        idle = idle_cpus()
    if idle is None:
        if load is None:
            try:
                load = os.getloadavg()[0]
            except (OSError, AttributeError):  # neither measure on this system: assume the worst
                return 1
        idle = cpus - max(0.0, load - processes)
    # round half up: 1.5 idle CPUs are worth a second (passive) thread; 1.4 are not
    return max(1, min(share, int(idle / processes + 0.5)))


_TORCH_DEFAULT: int | None = None  # PyTorch's own thread count, before any run of this process changed it


def apply_threads(option: int | str, *, processes: int = 1) -> int:
    """Set PyTorch's intra-op threads from ``trainer.threads`` (``"auto"`` or a positive int); returns the count."""
    import torch

    global _TORCH_DEFAULT
    if _TORCH_DEFAULT is None:
        _TORCH_DEFAULT = torch.get_num_threads()
    count = auto_threads(processes=processes, default=_TORCH_DEFAULT) if option == "auto" else int(option)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


__all__ = ["IDLE_REUSE_S", "IDLE_WINDOW", "WAIT_POLICY", "apply_threads", "auto_threads", "idle_cpus", "invoked_as_command", "prefer_passive_waits", "usable_cpus",
           "waits_are_passive"]
