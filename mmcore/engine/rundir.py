"""Run directories: one folder per training run, mmcore's alone.

A run directory holds (every name is an attribute of :class:`RunDir`; nothing else spells them)::

    .mmcore-run        marker: this folder is an mmcore run (JSON: mmcore version, creation time)
    .mmcore-lock       advisory lock (``fcntl.flock``) held by the writing process; holds its pid
    config.yaml        the resolved config (every option spelled out, path options absolute)
    metrics.csv        one row per epoch
    report.json        the final report (strict JSON: non-finite numbers are written as null)
    data_summary.json  what the run was trained on (rows, labels, files' digests), checked by --resume
    plots/             one PNG per quantity
    tensorboard/       TensorBoard event files
    robustness/        ``mmcore eval --robustness`` tables and plots
    explain/           ``mmcore explain`` waterfalls (one PNG per record) and the data set's summary
    best/, last/       checkpoints (model.safetensors, model.json, and state.pt in last/)

Promises (tested in tests/core/engine/test_rundir.py):

* A folder is never created over a user's files. :meth:`RunDir.create` refuses an empty path,
  the filesystem root, the home folder (and its ancestors), and an existing non-empty folder
  without the marker — unless it is resumed (a run written before the marker existed is
  recognised by its ``config.yaml`` and complete ``last/`` checkpoint) or ``overwrite`` is given.
  Even then only the names above are written; a user's ``best/`` or ``last/`` folder holding
  anything but mmcore's checkpoint files is refused, never replaced. The current folder, when
  non-empty and not a run, is refused even with ``overwrite``.
* One process writes a run at a time: the second gets :class:`RunDirError` naming the first's pid.
* Temporaries of a killed save (``.last.<random>.tmp``, ``.config.yaml.<random>.tmp``) are
  removed, and a checkpoint left as ``.last.old`` by a kill between the two renames of a swap
  is put back, when the run directory is next opened for writing (a new run or a resume).
* Nothing is written through a symbolic link: one of mmcore's names (a file, ``plots/``, ``best/``,
  the lock) that is a link is refused before any work; the lock file is opened with
  ``O_NOFOLLOW`` and must be a regular file with one name (a hard link to a user's file would
  otherwise be truncated); files are written by :mod:`mmcore.engine.atomic`.
* A command that writes files of its own into the run (``fit``: ``data.jsonl``, ...) names them
  (``files=``): under ``overwrite`` a user's file of such a name is refused, never replaced, and
  :meth:`hold` keeps the lock for the whole command, trainer included.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmcore.engine.atomic import TEMPORARY as _TEMPORARY
from mmcore.engine.atomic import write_file
from mmcore.errors import UserInputError

#: How the user named the run directory, for its messages: the command that reads the option sets it
#: (:meth:`RunDir.named_by`; ``mmcore fit --run-dir``), since the library code between does not know it.
_OPTION_DEFAULT = "trainer.run_dir"
_OPTION: contextvars.ContextVar[str] = contextvars.ContextVar("mmcore_run_dir_option", default=_OPTION_DEFAULT)

#: The file names of a checkpoint folder (``best/``, ``last/``).
WEIGHTS = "model.safetensors"
SPEC = "model.json"
STATE = "state.pt"
CHECKPOINT_FILES = (WEIGHTS, SPEC, STATE)

#: Run directories whose lock this process holds through :meth:`RunDir.hold` (real path -> holder).
_HELD: dict[str, RunDir] = {}


def _example(option: str) -> str:
    """An example value of the run-directory option ``option``."""
    return f"{option} runs/name" if option.startswith("--") else f"{option}=runs/name"


class RunDirError(UserInputError):
    """A run directory cannot be used: it is a user's folder, in use by another process, or not a run."""


class RunDir:
    """Names, creation, locking and clean-up of one run directory (see the module docstring).

    ``RunDir(path)`` only names files (no side effects: fine for reading a run); a writing
    process gets one from :meth:`create`, which checks, marks and locks the folder.
    """

    MARKER = ".mmcore-run"
    LOCK = ".mmcore-lock"
    CONFIG = "config.yaml"
    METRICS = "metrics.csv"
    REPORT = "report.json"
    DATA = "data_summary.json"
    PLOTS = "plots"
    TENSORBOARD = "tensorboard"
    ROBUSTNESS = "robustness"
    EXPLAIN = "explain"
    BEST = "best"
    LAST = "last"
    CHECKPOINTS = (BEST, LAST)
    #: top-level files and folders mmcore writes (``--overwrite`` touches these and nothing else)
    FILES = (MARKER, LOCK, CONFIG, METRICS, REPORT, DATA)
    FOLDERS = (PLOTS, TENSORBOARD, ROBUSTNESS, EXPLAIN, BEST, LAST)

    def __init__(self, path: str | Path, files: Sequence[str] = ()) -> None:
        self.path = Path(path)
        #: files a command writes into the run beside mmcore's own (``fit``: data.jsonl, ...)
        self.files = tuple(files)
        self._lock_fd: int | None = None
        self._holder: RunDir | None = None  # the RunDir whose lock this one shares (see hold())
        #: whether :meth:`create` made the folder (it did not exist): :meth:`discard_unused` may then remove it
        self.created = False

    @staticmethod
    @contextlib.contextmanager
    def named_by(option: str, *, unless_named: bool = False) -> Iterator[None]:
        """Within the block, a refused run directory's message names it as ``option`` (``--run-dir``,
        ``run_dir=``) instead of ``trainer.run_dir``: the command that read the option says how.
        ``unless_named``: keep a name an outer block gave (a library function called by a command)."""
        named = unless_named and _OPTION.get() != _OPTION_DEFAULT
        token = _OPTION.set(_OPTION.get() if named else option)
        try:
            yield
        finally:
            _OPTION.reset(token)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ names
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def data_record(self) -> Path:
        """What the run was trained on (:mod:`mmcore.engine.data_record`), checked by ``--resume``."""
        return self.path / self.DATA

    def read_data_record(self) -> dict[str, Any] | None:
        """The run's data record, or None for a run written before it existed. RunDirError when damaged."""
        if not self.data_record.is_file():
            return None
        if self.data_record.stat().st_size > 64 << 20:
            raise RunDirError(f"{self.data_record} is over 64 MiB: not a record mmcore wrote")
        try:
            record = json.loads(self.data_record.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:
            raise RunDirError(f"{self.data_record} is not valid JSON ({exc}); delete it to resume unchecked") from None
        if not isinstance(record, dict):
            raise RunDirError(f"{self.data_record} must hold a JSON object, got {type(record).__name__}")
        return record

    @property
    def plots(self) -> Path:
        return self.path / self.PLOTS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def robustness(self) -> Path:
        return self.path / self.ROBUSTNESS

    @property
    def explain(self) -> Path:
        return self.path / self.EXPLAIN

    @property
    def marker(self) -> Path:
        return self.path / self.MARKER

    @property
    def lock_file(self) -> Path:
        return self.path / self.LOCK

    def checkpoint(self, which: str = BEST) -> Path:
        """The folder of checkpoint ``which`` ("best" or "last"), as written."""
        if which not in self.CHECKPOINTS:
            raise ValueError(f"a run's checkpoints are {self.CHECKPOINTS}, got {which!r}")
        return self.path / which

    def readable_checkpoint(self, which: str = BEST) -> Path:
        """``checkpoint(which)``, or the previous one kept as ``.which.old`` by a save killed between its renames."""
        path = self.checkpoint(which)
        old = self.path / f".{which}.old"
        if not (path / WEIGHTS).is_file() and (old / WEIGHTS).is_file():
            return old
        return path

    def has_checkpoint(self, which: str = BEST) -> bool:
        return (self.readable_checkpoint(which) / WEIGHTS).is_file()

    @property
    def is_marked(self) -> bool:
        return self.marker.is_file()

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, path: str | Path, checkpoint: str = BEST) -> RunDir:
        """An existing run to read (``mmcore eval``/``predict``); RunDirError unless it holds
        ``config.yaml`` and the checkpoint ``checkpoint``."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{str(path)!r} is not a run directory: no such folder")
        if not run.config.is_file() or not run.has_checkpoint(checkpoint):
            raise RunDirError(f"{str(path)!r} is not a run directory (expected {cls.CONFIG} and {checkpoint}/{WEIGHTS})")
        return run

    def read_config(self) -> dict[str, Any]:
        """The run's resolved config (``config.yaml``), read with :func:`mmcore.yamlio.load_yaml_file`
        (plain data only; YamlError naming the file, line and column otherwise), its paths taken
        where the run is now (:meth:`located`)."""
        from mmcore.yamlio import load_yaml_file

        if not self.config.is_file():
            raise RunDirError(f"{self.config} is missing: the run's config cannot be read")
        config = load_yaml_file(self.config)
        if not isinstance(config, dict):
            raise RunDirError(f"{self.config} must hold a mapping, got {type(config).__name__}")
        return self.located(config)

    # ------------------------------------------------------------------ paths inside the run
    #: ``trainer.run_dir`` as a run's own config.yaml records it: "this folder, wherever it is now".
    HERE = "."

    def portable(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` as the run's config.yaml stores it: ``trainer.run_dir`` is :attr:`HERE` and every
        path option naming something inside the run (a ``fit`` run's ``data.jsonl``, a feature cache
        kept there) is relative to the run; paths outside it stay absolute. A copy (``cp -r``,
        ``Predictor.save``) or a move of the folder then reads and writes only itself."""
        from mmcore.engine.pathopts import map_path_options

        root = Path(os.path.abspath(self.path))

        def inside(value: str) -> str:
            path = Path(os.path.abspath(Path(value).expanduser()))
            return path.relative_to(root).as_posix() or self.HERE if path.is_relative_to(root) else value

        out = map_path_options(config, inside)
        if isinstance(out.get("trainer"), dict):
            out["trainer"]["run_dir"] = self.HERE
        return out

    def located(self, config: dict[str, Any]) -> dict[str, Any]:
        """A run's stored ``config`` with its paths taken where the run is now: relative path options
        of a config stored by :meth:`portable` (``trainer.run_dir: .``) are relative to the run;
        absolute ones inside the folder the config names as its run (a run written before, then
        copied or moved) are taken inside this one; ``trainer.run_dir`` is this folder."""
        from mmcore.engine.pathopts import map_path_options

        trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
        recorded = trainer.get("run_dir")
        here = Path(os.path.abspath(self.path))
        portable = recorded == self.HERE
        old = Path(os.path.abspath(Path(recorded).expanduser())) if isinstance(recorded, str) and recorded and not portable else None

        def locate(value: str) -> str:
            path = Path(value).expanduser()
            if not path.is_absolute():
                return str(here / path) if portable else value  # an older run's: relative to its working folder
            if old is not None and old != here and Path(os.path.abspath(path)).is_relative_to(old):
                return str(here / Path(os.path.abspath(path)).relative_to(old))
            return value

        out = map_path_options(config, locate)
        if isinstance(out.get("trainer"), dict):
            out["trainer"]["run_dir"] = str(here)
        return out

    @classmethod
    def owning(cls, config_file: str | Path) -> RunDir | None:
        """The run whose own ``config.yaml`` ``config_file`` is (its folder is a marked run), else None."""
        file = Path(config_file)
        if file.name != cls.CONFIG:
            return None
        run = cls(file.parent)
        return run if run.is_marked else None

    # ------------------------------------------------------------------ writing
    @classmethod
    def check(cls, path: str | Path, *, resume: bool = False, overwrite: bool = False, files: Sequence[str] = ()) -> RunDir:
        """Whether a process may write the run directory ``path``; raises RunDirError if not.

        Touches nothing. ``resume``: continue the run there (it must hold ``config.yaml`` and a
        ``last/`` checkpoint). ``overwrite``: write mmcore's files into an existing folder that
        is not a run (its other files stay). ``files``: names the caller writes into the run
        besides mmcore's own; under ``overwrite`` a user's file of such a name is refused.
        """
        raw = str(path)
        if not raw.strip():
            raise RunDirError(f"{_OPTION.get()} is empty: name a folder for the run (an empty path would write into "
                              "the current folder)")
        run = cls(Path(raw).expanduser(), files)
        here = Path(os.path.abspath(run.path))
        real = here.resolve()
        if real.parent == real:
            raise RunDirError(f"run directory {raw!r} is the root of the file system; choose a folder of its own")
        home = Path.home().resolve()
        if real == home or real in home.parents:
            raise RunDirError(f"run directory {raw!r} is your home folder{'' if real == home else ' or above it'}; "
                              "choose a folder of its own, e.g. runs/name")
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(f"run directory {raw!r} exists and is not a folder")
        run._check_links(raw)
        if resume:
            return run._check_resume(raw)
        entries = sorted(p.name for p in run.path.iterdir()) if run.path.is_dir() else []
        # The lock and the marker's temporary are another mmcore process claiming this folder right
        # now: under torchrun, rank 0 creates the run while the other ranks are still checking it.
        claiming = f".{cls.MARKER}."
        if not [e for e in entries if e != cls.LOCK and not (e.startswith(claiming) and e.endswith(".tmp"))] \
                or run.is_marked:
            return run
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        if real == Path.cwd().resolve():
            raise RunDirError(f"run directory {raw!r} is the current folder, which is not empty and not an mmcore run "
                              f"(it holds {shown}); choose a folder of its own, e.g. {_example(_OPTION.get())}")
        if not overwrite:
            raise RunDirError(f"run directory {raw!r} exists, is not empty and is not an mmcore run (it holds {shown}); "
                              "pass --overwrite to write mmcore's files into it (only "
                              f"{', '.join(dict.fromkeys(cls.FILES[2:] + tuple(files) + cls.FOLDERS))} are written; "
                              f"nothing else is touched), or choose another {_OPTION.get()}")
        run._check_overwrite(raw)
        return run

    def _check_links(self, raw: str) -> None:
        """Refuse a symbolic link in place of any name mmcore (or the caller, ``files``) writes."""
        for name in (*self.FILES, *self.FOLDERS, *self.files):
            item = self.path / name
            if item.is_symlink():
                raise RunDirError(f"{raw}/{name} is a symbolic link (to {os.readlink(item)}); mmcore writes its own "
                                  f"{'folder' if name in self.FOLDERS else 'file'} there and never through a link: "
                                  "remove the link, or choose another run directory")

    def _check_resume(self, raw: str) -> RunDir:
        if not self.has_checkpoint(self.LAST) or not (self.readable_checkpoint(self.LAST) / STATE).is_file():
            raise RunDirError(f"--resume: {raw} holds no checkpoint to resume (expected {raw}/{self.LAST}/ with "
                              f"{WEIGHTS} and {STATE})")
        if not self.config.is_file():
            raise RunDirError(f"--resume: {raw}/{self.CONFIG} is missing, so the config cannot be checked against the "
                              "run's; put the run's config back there, or start a new run")
        return self

    def _check_overwrite(self, raw: str) -> None:
        """Under --overwrite, refuse where mmcore would replace or write into something of the user's."""
        for name in self.FILES:
            if (self.path / name).is_dir():
                raise RunDirError(f"--overwrite: {raw}/{name} is a folder of yours; mmcore writes a file there. "
                                  f"Move it, or choose another {_OPTION.get()}")
        for name in self.FOLDERS:
            folder = self.path / name
            if folder.exists() and not folder.is_dir():
                raise RunDirError(f"--overwrite: {raw}/{name} is a file of yours; mmcore writes a folder there. "
                                  f"Move it, or choose another {_OPTION.get()}")
        for name in self.files:
            if (self.path / name).exists():
                raise RunDirError(f"--overwrite: {raw}/{name} is a file of yours; mmcore writes its own {name} there and "
                                  "never replaces a file it did not write. Move it, or choose another run directory")
        for name in self.CHECKPOINTS:
            folder = self.path / name
            # A checkpoint folder is replaced as a whole: only one holding nothing but mmcore's
            # checkpoint files may go.
            foreign = sorted(p.name for p in folder.iterdir() if p.name not in CHECKPOINT_FILES) if folder.is_dir() else []
            if foreign:
                raise RunDirError(f"--overwrite: {raw}/{name}/ holds files mmcore did not write ({', '.join(foreign[:5])}) "
                                  f"and would be replaced by a checkpoint; move it, or choose another trainer.run_dir")

    @classmethod
    def create(cls, path: str | Path, *, resume: bool = False, overwrite: bool = False, files: Sequence[str] = ()) -> RunDir:
        """Check (:meth:`check`), create, lock and mark the run directory ``path``; clean what a
        killed process left. The lock is held until :meth:`release` (or the process ends).

        Inside :meth:`hold` of the same folder (this process), the holder's lock is shared: the
        returned RunDir's :meth:`release` leaves it to the holder.
        """
        run = cls.check(path, resume=resume, overwrite=overwrite, files=files)
        created = not run.path.exists()
        run.path.mkdir(parents=True, exist_ok=True)
        run.created = created
        holder = _HELD.get(os.path.realpath(run.path))
        if holder is not None and holder.locked:
            run._holder = holder
            run.files = tuple(dict.fromkeys((*holder.files, *run.files)))
        else:
            run.lock()
        try:
            # Again, now that the lock is held: it may have changed before. A run the holder marked
            # is checked as the holder was (its overwrite let it in).
            cls.check(run.path, resume=resume, overwrite=overwrite or holder is not None, files=run.files)
            if not run.is_marked:
                from mmcore import __version__

                stamp = {"mmcore": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                write_file(run.marker, json.dumps(stamp) + "\n")
            run.recover()
        except BaseException:
            run.release()
            raise
        return run

    @classmethod
    @contextlib.contextmanager
    def hold(cls, path: str | Path, *, resume: bool = False, overwrite: bool = False,
             files: Sequence[str] = ()) -> Iterator[RunDir]:
        """:meth:`create` the run directory and keep its lock for the whole ``with`` block.

        For a command that prepares a run and then trains it (``fit``): a :class:`Trainer` (any
        :meth:`create` of the same folder in this process) inside the block shares the lock
        instead of taking and dropping its own, so no second process can start writing between
        the preparation, the trainer and the files written after it.
        """
        run = cls.create(path, resume=resume, overwrite=overwrite, files=files)
        key = os.path.realpath(run.path)
        _HELD[key] = run
        try:
            yield run
        finally:
            if _HELD.get(key) is run:
                del _HELD[key]
            run.release()

    def lock(self) -> None:
        """Take the run's advisory lock (``fcntl.flock`` on :attr:`lock_file`, which then holds our pid).

        RunDirError naming the holder's pid when another process holds it. The lock file is opened
        without following a symbolic link, and must be a regular file with a single name: a link
        or a hard link planted there would otherwise have its target truncated. Without fcntl
        (Windows) there is no lock.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.lock_file, flags, 0o666)
        except OSError as exc:
            if self.lock_file.is_symlink():
                raise RunDirError(f"{self.lock_file} is a symbolic link (to {os.readlink(self.lock_file)}); mmcore's lock "
                                  "file is a plain file of its own and is never opened through a link: remove the link") from exc
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            what = "not a regular file" if not stat.S_ISREG(info.st_mode) else f"a file with {info.st_nlink} names (a hard link)"
            raise RunDirError(f"{self.lock_file} is {what}, not mmcore's lock file, and is left as it is: remove it, or "
                              "choose another run directory")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"run directory {self.path} is in use by process {holder} (another training run); wait for "
                              "it to finish, or choose another trainer.run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def discard_unused(self) -> bool:
        """Remove the folder :meth:`create` made when nothing but its marker and lock went in (the run failed
        before any work: bad data, a bad option) -- a failed start leaves no empty run behind. Anything
        else in it, a folder that existed before, or a lock shared with a holder: left as it is. True when
        removed. Releases the lock either way."""
        removable = self.created and self._holder is None and self._lock_fd is not None
        try:
            if removable and {p.name for p in self.path.iterdir()} <= {self.MARKER, self.LOCK}:
                for name in (self.MARKER, self.LOCK):  # the lock file goes while still held: no one can take it between
                    with contextlib.suppress(FileNotFoundError):
                        (self.path / name).unlink()
                self.path.rmdir()
                return True
        except OSError:  # a file appeared meanwhile, or the folder cannot be removed: it stays
            pass
        finally:
            self.release()
        return False

    def release(self) -> None:
        """Drop the lock (idempotent); a RunDir sharing a :meth:`hold` leaves it to the holder."""
        self._holder = None
        if self._lock_fd is None:
            return
        import fcntl

        fd, self._lock_fd = self._lock_fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a RunDir dropped without release() (e.g. Trainer.setup() alone)
        try:
            self.release()
        except Exception:  # noqa: S110 - interpreter shutdown: the OS drops the lock with the process
            pass

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None or (self._holder is not None and self._holder.locked)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def recover(self) -> list[Path]:
        """Undo what a killed save left (call with the lock held); returns what was removed.

        ``.best.old``/``.last.old`` is moved back where its swap died before the new folder came
        in, and removed where the new folder is complete; ``.<name>.<random>.tmp`` files and
        folders of mmcore's names (top level and ``plots/``) are removed.
        """
        removed = []
        for name in self.CHECKPOINTS:
            current, old = self.path / name, self.path / f".{name}.old"
            if not old.is_dir():
                continue
            if (current / WEIGHTS).is_file():
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
            elif not current.exists() and (old / WEIGHTS).is_file():
                os.replace(old, current)
        own = {*self.FILES, *self.FOLDERS, *self.files}
        for folder, names in ((self.path, lambda n: n in own), (self.plots, lambda n: n.endswith(".png"))):
            if not folder.is_dir():
                continue
            for item in folder.iterdir():
                match = _TEMPORARY.match(item.name)
                if match and names(match["name"]):
                    if item.is_dir() and not item.is_symlink():
                        shutil.rmtree(item, ignore_errors=True)
                    else:
                        item.unlink(missing_ok=True)
                    removed.append(item)
        return removed
