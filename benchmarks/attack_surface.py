"""Attack mmcore as a hostile user would, and record what each attack did (issue 28).

Every case runs in a fresh temporary folder holding a copy of the small run(s) and table it needs
and a ``user/`` folder of the user's own files (the targets planted links point at). The case is
one process: by default a child *forked* from this harness after it imported mmcore once, running
the real command line (``mmcore.cli.main(argv)``, what the ``mmcore`` console script calls) or a
snippet of the public Python API; cases about how a process starts (``python -m mmcore``,
``torchrun``, two concurrent fits, kill -9 mid-fit) exec the real ``mmcore`` / ``python -m mmcore``.
``--exec`` execs a fresh ``python -c`` for every case instead (the same results, each case paying
torch's import: ~4 s of CPU each).

Recorded per case (one JSON line each in ``--out``): exit code, whether the error is one line (or
the documented indented block), every path of the case folder that changed outside mmcore's own
names for that case (compared by name, type, size, mtime and SHA-256 before and after; links by
target), peak RSS of the process and its children, and a verdict: ``clean``, or ``danger`` with
the reasons -- a file of the user's changed, memory past ``--rss-limit`` (the process is killed;
``RLIMIT_AS`` bounds it too), a traceback or an internal error, a hang past the case's timeout,
an exit code other than the one due (2 for bad input), code of the attacker's that ran.

    nice -n 5 python benchmarks/attack_surface.py --out benchmarks/results/attack_surface.jsonl

prints a table (kind x surface: cases, clean, dangers) and the dangers by name. ``--only SUBSTR``
runs the cases whose name holds it; ``--list`` names them. The fixtures (a 30-row table of PNG,
WAV, text files, a number and a category; a ``fit`` run of it; a 2-epoch ``train`` run of
scikit-learn's wine; an embedding and a FAISS index) are built first, in the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import stat
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1 << 30
MiB = 1 << 20
VICTIM = b"the user's own file: must never change\n"

# --------------------------------------------------------------------------------------- one process


@dataclass
class Outcome:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int
    timed_out: bool = False
    memory_killed: bool = False


def _limit_memory(extra: int) -> None:
    try:
        with open("/proc/self/status") as fh:
            vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        vm = 4 * GiB
    limit = vm + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _memory(proc) -> int:
    """Proportional set size (a page shared by n processes counts 1/n: forked data-loader workers
    share the parent's pages, which summed RSS would count once per worker); RSS where unknown."""
    try:
        return proc.memory_full_info().pss
    except Exception:
        return proc.memory_info().rss


def _tree_rss(pid: int) -> int:
    """PSS of ``pid`` and its descendants."""
    try:
        import psutil

        proc = psutil.Process(pid)
        total = _memory(proc)
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += _memory(child)
        return total
    except Exception:
        return 0


def _watch(pid: int, timeout: float, rss_limit: int, started: float) -> tuple[int | None, int, bool, bool]:
    """Wait for ``pid`` (its own process group) with a time limit and an RSS watchdog."""
    peak, timed_out, memory_killed = 0, False, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            peak = max(peak, usage.ru_maxrss * 1024)
            return os.waitstatus_to_exitcode(status), peak, timed_out, memory_killed
        rss = _tree_rss(pid)
        peak = max(peak, rss)
        if not timed_out and not memory_killed:
            if rss > rss_limit:
                memory_killed = True
            elif time.monotonic() - started > timeout:
                timed_out = True
            if timed_out or memory_killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        time.sleep(0.05)


def _child_body(target: tuple[str, Any]) -> int:
    kind, what = target
    if kind == "cli":
        from mmcore.cli import main

        try:
            return int(main(list(what)) or 0)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    namespace: dict[str, Any] = {"__name__": "__attack__"}
    try:
        exec(compile(what, "<case>", "exec"), namespace)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # the public API's contract: bad input raises UserInputError
        from mmcore.errors import UserInputError

        if isinstance(exc, UserInputError):
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        raise


def run_process(target: tuple[str, Any], cwd: Path, *, timeout: float, rss_limit: int, mode: str,
                env: dict[str, str] | None = None) -> Outcome:
    """Run ``target`` (``("cli", argv)``, ``("py", code)`` or ``("exec", argv)``) in ``cwd``."""
    out, err = cwd / ".attack.stdout", cwd / ".attack.stderr"
    started = time.monotonic()
    if target[0] == "exec" or mode == "exec":
        if target[0] == "exec":
            argv = list(target[1])
        elif target[0] == "cli":
            argv = [sys.executable, "-c", "import sys; from mmcore.cli import main; sys.exit(main(sys.argv[1:]))", *target[1]]
        else:
            argv = [sys.executable, "-c", _EXEC_PY, target[1]]
        with open(out, "wb") as o, open(err, "wb") as e:
            pid = _spawn(argv, cwd, o, e, env)
    else:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the case
            code = 1
            try:
                os.setpgid(0, 0)
                os.chdir(cwd)
                fd_in = os.open(os.devnull, os.O_RDONLY)
                fd_out = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd_in, 0)
                os.dup2(fd_out, 1)
                os.dup2(fd_err, 2)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                _limit_memory(8 * GiB)
                if env is not None:
                    os.environ.clear()
                    os.environ.update(env)
                code = _child_body(target)
            except BaseException:  # noqa: BLE001  (what escapes is a traceback, as Python prints it)
                traceback.print_exc()
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
    rc, peak, timed_out, memory_killed = _watch(pid, timeout, rss_limit, started)
    seconds = time.monotonic() - started
    text = [p.read_text(errors="replace") if p.exists() else "" for p in (out, err)]
    for p in (out, err):
        with contextlib.suppress(OSError):
            p.unlink()
    return Outcome(rc, text[0], text[1], seconds, peak, timed_out, memory_killed)


_EXEC_PY = textwrap.dedent("""
    import sys
    sys.path.insert(0, %r)
    from attack_surface import _child_body
    sys.exit(_child_body(("py", sys.argv[1])))
""") % str(Path(__file__).resolve().parent)


def _spawn(argv: list[str], cwd: Path, out, err, env) -> int:
    def prepare() -> None:
        os.setpgid(0, 0)
        resource.setrlimit(resource.RLIMIT_AS, (16 * GiB, 16 * GiB))

    import subprocess

    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                            preexec_fn=prepare)
    # os.wait4 reaps it in _watch; keep Popen from trying to reap it again.
    proc.returncode = 0
    return proc.pid


# ------------------------------------------------------------------------------------------ snapshots


def snapshot(root: Path) -> dict[str, tuple]:
    """``{relative path: (type, size, mtime_ns, hash or link target)}`` of everything under root,
    links not followed; FIFOs and devices are never opened."""
    seen: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel.startswith(".attack."):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                seen[rel] = ("file", st.st_size, st.st_mtime_ns, _digest(path, st.st_size))
            elif stat.S_ISDIR(st.st_mode):
                seen[rel] = ("dir",)
            else:
                seen[rel] = ("other", stat.S_IFMT(st.st_mode), st.st_mtime_ns)
    return seen


def _digest(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= 64 * MiB:
            for block in iter(lambda: fh.read(MiB), b""):
                h.update(block)
        else:  # a size bomb: its ends and its size
            h.update(fh.read(MiB))
            fh.seek(size - MiB)
            h.update(fh.read(MiB))
    return h.hexdigest()


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


# ------------------------------------------------------------------------------------------- fixtures

WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {"encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 16, "dropout": 0.1},
                           "second": {"name": "tabular_mlp", "num_features": 7, "dim": 16, "dropout": 0.1}},
              "fusion": {"name": "concat", "dim": 16, "dropout": 0.1}, "head": {"name": "classification", "num_classes": 3}},
    "trainer": {"epochs": 2, "batch_size": 32, "lr": 0.01, "progress": False, "plots": True, "tensorboard": False,
                "run_dir": "run"},
}
# --time-limit is generous: on a loaded machine fit's measured plan must not be refused for time
FIT = ["fit", "data/train.csv", "--target", "label", "--preset", "fast", "--max-epochs", "1", "--time-limit", "15m"]


def write_table(folder: Path, rows: int = 30, seed: int = 0) -> list[dict]:
    import numpy as np
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("img", "wav", "docs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    table = []
    for i in range(rows):
        y = i % 3
        Image.fromarray((rng.random((8, 8)) * 80 + 60 * y).astype("uint8")).save(folder / "img" / f"{i}.png")
        sf.write(folder / "wav" / f"{i}.wav", (rng.standard_normal(1600) * 0.1 * (y + 1)).astype("float32"), 8000)
        (folder / "docs" / f"{i}.txt").write_text(["a red apple", "a green leaf", "the blue sky"][y] + f" number {i}\n")
        table.append({"image": f"img/{i}.png", "audio": f"wav/{i}.wav", "doc": f"docs/{i}.txt",
                      "note": ["red apple", "green leaf", "blue sky"][y] + f" {i}", "ink": round(float(y + rng.random()), 4),
                      "scanner": ["flatbed", "phone"][i % 2], "label": ["cat", "dog", "eel"][y]})
    save_table(folder / "train.csv", table)
    return table


def save_table(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


def build_fixtures(base: Path, args) -> None:
    """base/data (table), base/fitrun, base/emb (e.npy + g.faiss), base/wine.yaml + base/run."""
    import yaml

    if (base / "ready").exists():
        return
    write_table(base / "data")
    steps = [
        ("cli", FIT + ["--run-dir", "fitrun"]),
        ("cli", ["embed", "fitrun", "--data", "data/train.csv", "--out", "emb/e.npy", "--index", "emb/g.faiss"]),
        ("cli", ["train", "wine.yaml"]),
    ]
    (base / "emb").mkdir()
    (base / "wine.yaml").write_text(yaml.safe_dump(WINE))
    for target in steps:
        got = run_process(target, base, timeout=600, rss_limit=args.rss_limit, mode="fork")
        if got.rc != 0:
            raise SystemExit(f"fixture {target} failed ({got.rc}):\n{got.stderr[-3000:]}")
    (base / "ready").write_text("")


# ----------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    kind: str  # symlink, fifo, tmp-race, overwrite, crafted, bomb, plugin, concurrent, kill, hostile
    surface: str
    target: tuple[str, Any] | None  # None: `custom` does the running
    setup: Callable[[Path], None] = lambda d: None
    needs: tuple[str, ...] = ()  # fixtures copied in: data, fitrun, emb, run (+ wine.yaml)
    expect: str = "refuse"  # refuse (exit 2), ok (exit 0), either (0 or 2)
    own: tuple[str, ...] = ()  # globs of paths that are mmcore's to write in this case
    timeout: float = 180
    check: Callable[[Path, Outcome], list[str]] | None = None  # extra danger reasons
    custom: Callable[[Path, Any], tuple[Outcome, list[str]]] | None = None
    env: dict[str, str] | None = None
    mine: tuple[str, ...] = ()  # the user's paths that must not change even where `own` matches


RUN_NAMES = ("run", "run/*", "run/**")
FRESH = ("fresh", "fresh/*", "fresh/**")
FIT_OWN = ("out", "out/*", "out/**")


def victim(d: Path) -> Path:
    path = d / "user" / "victim.txt"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_bytes(VICTIM)
    return path


def victim_dir(d: Path) -> Path:
    path = d / "user" / "figures"
    path.mkdir(parents=True, exist_ok=True)
    for name in ("loss.png", "accuracy.png", "summary.json", "record_1.png", "events.out.tfevents.1"):
        (path / name).write_bytes(VICTIM)
    return path


def plant_link(rel: str, *, folder: bool = False, dangling: bool = False):
    def setup(d: Path) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        target = victim_dir(d) if folder else (d / "user" / "absent.txt" if dangling else victim(d))
        victim(d)
        path.symlink_to(target)
    return setup


def plant_fifo(rel: str):
    def setup(d: Path) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        os.mkfifo(path)
    return setup


def chain(*steps):
    def setup(d: Path) -> None:
        for step in steps:
            step(d)
    return setup


def rewrite_table(edit: Callable[[list[dict], Path], list[dict]], name: str = "train.csv"):
    def setup(d: Path) -> None:
        rows = list(csv.DictReader(open(d / "data" / "train.csv")))
        save_table(d / "data" / name, edit(rows, d))
    return setup


def cell(row: int, column: str, value: str, name: str = "train.csv"):
    def edit(rows, d):
        rows[row][column] = value
        return rows
    return rewrite_table(edit, name)


def marker_absent(rel: str):
    def check(d: Path, got: Outcome) -> list[str]:
        return [f"attacker's code ran ({rel} exists)"] if (d / rel).exists() else []
    return check


def cases() -> list[Case]:
    out: list[Case] = []
    add = out.append

    # ---------------------------------------------------------------- links at every name mmcore writes
    train_names = ["config.yaml", "metrics.csv", "report.json", ".mmcore-lock", ".mmcore-run", "best", "last",
                   "last/model.safetensors", "last/model.json", "last/state.pt", "best/model.json", "plots/loss.png",
                   ".config.yaml.tmp", ".metrics.csv.tmp", ".report.json.tmp", ".last.tmp", ".last.old"]
    for name in train_names:
        add(Case(f"train --resume, link at run/{name}", "symlink", "train --resume",
                 ("cli", ["train", "wine.yaml", "--resume", "run", "trainer.epochs=3"]), plant_link(f"run/{name}"),
                 needs=("run",), expect="either", own=RUN_NAMES))
    for name in ["config.yaml", "metrics.csv", "report.json", ".mmcore-lock", "last", "plots/loss.png"]:
        add(Case(f"train again into its run, link at run/{name}", "symlink", "train",
                 ("cli", ["train", "wine.yaml"]), plant_link(f"run/{name}"), needs=("run",), expect="either", own=RUN_NAMES))
    for name in ["plots", "tensorboard", "robustness"]:
        add(Case(f"train --resume, run/{name} a link to the user's folder", "symlink", "train --resume",
                 ("cli", ["train", "wine.yaml", "--resume", "run", "trainer.epochs=3", "trainer.tensorboard=true"]),
                 plant_link(f"run/{name}", folder=True), needs=("run",), expect="either", own=RUN_NAMES))
    add(Case("eval --robustness, run/robustness a link to the user's folder", "symlink", "eval --robustness",
             ("cli", ["eval", "run", "--robustness"]), plant_link("run/robustness", folder=True), needs=("run",),
             expect="either", own=RUN_NAMES))
    add(Case("train --overwrite into the user's folder holding links at mmcore's names", "symlink", "train --overwrite",
             ("cli", ["train", "wine.yaml", "--overwrite", "trainer.run_dir=mine"]),
             chain(plant_link("mine/config.yaml"), plant_link("mine/report.json"), plant_link("mine/plots", folder=True),
                   lambda d: (d / "mine" / "notes.txt").write_text("mine")), expect="either",
             own=("mine/best", "mine/best/*", "mine/last", "mine/last/*", "mine/metrics.csv", "mine/.mmcore-*",
                  "mine/config.yaml", "mine/report.json", "mine/plots", "mine/plots/*", "mine/.*.tmp")))
    fit_names = ["data.jsonl", "autofit.json", "fit_summary.json", "config.yaml", "report.json", "metrics.csv",
                 "data_summary.json", ".mmcore-lock", "plots", "tensorboard", ".autofit.json.tmp", ".data.jsonl.tmp"]
    for name in fit_names:
        folder = name in ("plots", "tensorboard")
        add(Case(f"fit --overwrite into a folder with a link at {name}", "symlink", "fit",
                 ("cli", FIT + ["--run-dir", "out", "--overwrite"]),
                 chain(plant_link(f"out/{name}", folder=folder), lambda d: (d / "out" / "notes.txt").write_text("mine")),
                 needs=("data",), expect="either", own=FIT_OWN[1:], timeout=300,
                 check=lambda d, got: [] if (d / "out" / "notes.txt").read_text() == "mine" else ["out/notes.txt changed"]))
    for name in ["plots", "tensorboard", "autofit.json", "data.jsonl"]:
        add(Case(f"fit into its own earlier run, link at {name}", "symlink", "fit",
                 ("cli", FIT + ["--run-dir", "fitrun"]), plant_link(f"fitrun/{name}", folder=name in ("plots", "tensorboard")),
                 needs=("data", "fitrun"), expect="either", own=("fitrun/*", "fitrun/**"), timeout=300))
    predict = ["predict", "fitrun", "--data", "data/train.csv", "--out", "p.jsonl"]
    add(Case("predict --out, a link at the out name", "symlink", "predict --out", ("cli", predict), plant_link("p.jsonl"),
             needs=("data", "fitrun")))
    add(Case("predict --out --overwrite, a link at the out name", "symlink", "predict --out",
             ("cli", predict + ["--overwrite"]), plant_link("p.jsonl"), needs=("data", "fitrun"), expect="either",
             own=("p.jsonl",)))
    add(Case("predict --out, a dangling link at the out name", "symlink", "predict --out", ("cli", predict),
             plant_link("p.jsonl", dangling=True), needs=("data", "fitrun"), expect="either", own=("p.jsonl",)))
    for tmp in [".p.jsonl.tmp", "p.jsonl.tmp", ".p.jsonl.1234.tmp"]:  # the last: a pid-style guess
        add(Case(f"predict --out, a link at the guessable temporary {tmp}", "tmp-race", "predict --out", ("cli", predict),
                 plant_link(tmp), needs=("data", "fitrun"), expect="ok", own=("p.jsonl",)))
    embed = ["embed", "fitrun", "--data", "data/train.csv", "--out", "e.npy"]
    for name in ["e.npy", "e.image.npy", "e.fused.npy", "e.npy.json", "e.note.npy"]:
        for over in ([], ["--overwrite"]):
            add(Case(f"embed --out e.npy {' '.join(over)}, a link at {name}", "symlink", "embed --out",
                     ("cli", embed + over), plant_link(name), needs=("data", "fitrun"), expect="either",
                     own=("e.npy", "e.*.npy", "e.npy.json"), mine=() if over and name == "e.npy" else (name,)))
    for name in [".e.npy.tmp", ".e.npz.tmp.npz", "e.npz.tmp", ".e.npy.json.tmp"]:
        add(Case(f"embed --out, a link at the guessable temporary {name}", "tmp-race", "embed --out",
                 ("cli", embed), plant_link(name), needs=("data", "fitrun"), expect="ok",
                 own=("e.npy", "e.*.npy", "e.npy.json")))
    for fmt in ["e.npz", "e.parquet"]:
        add(Case(f"embed --out {fmt}, a link at it", "symlink", "embed --out",
                 ("cli", embed[:-1] + [fmt]), plant_link(fmt), needs=("data", "fitrun")))
    index = embed + ["--index", "g.faiss"]
    for name in ["g.faiss", "g.faiss.json", ".g.faiss.tmp"]:
        add(Case(f"embed --index g.faiss, a link at {name}", "symlink" if "tmp" not in name else "tmp-race", "embed --index",
                 ("cli", index), plant_link(name), needs=("data", "fitrun"), expect="either" if "tmp" not in name else "ok",
                 own=("e.npy", "e.*.npy", "e.npy.json", "g.faiss", "g.faiss.json") if "tmp" in name else ()))
    explain = ["explain", "fitrun", "--data", "data/train.csv", "--limit", "2"]
    add(Case("explain, fitrun/explain a link to the user's folder", "symlink", "explain --out", ("cli", explain),
             plant_link("fitrun/explain", folder=True), needs=("data", "fitrun"), expect="either", own=("fitrun/**",)))
    add(Case("explain --out, a link at out/summary.json", "symlink", "explain --out", ("cli", explain + ["--out", "ex"]),
             plant_link("ex/summary.json"), needs=("data", "fitrun"), expect="either", own=("ex", "ex/*")))
    add(Case("explain --out, a link at out/record_1.png", "symlink", "explain --out", ("cli", explain + ["--out", "ex"]),
             plant_link("ex/record_1.png"), needs=("data", "fitrun"), expect="either", own=("ex", "ex/*")))
    add(Case("explain --out the user's folder holding summary.json and record_1.png", "overwrite", "explain --out",
             ("cli", explain + ["--out", "user/figures"]), lambda d: victim_dir(d), needs=("data", "fitrun"),
             expect="either", own=("user/figures/.*",)))
    add(Case("export --out, a link to the user's folder", "symlink", "export",
             ("cli", ["export", "fitrun", "--out", "ex"]), plant_link("ex", folder=True), needs=("fitrun",), expect="either",
             timeout=300))
    add(Case("export --out the user's non-empty folder", "overwrite", "export",
             ("cli", ["export", "fitrun", "--out", "user/figures"]), lambda d: victim_dir(d), needs=("fitrun",)))
    add(Case("export --out --overwrite the user's non-empty folder", "overwrite", "export",
             ("cli", ["export", "fitrun", "--out", "user/figures", "--overwrite"]), lambda d: victim_dir(d), needs=("fitrun",)))
    save = "import mmcore; mmcore.Predictor.load('fitrun').save('saved')"
    add(Case("Predictor.save into a link to the user's folder", "symlink", "Predictor.save", ("py", save),
             plant_link("saved", folder=True), needs=("fitrun",), expect="either"))
    add(Case("Predictor.save into the user's non-empty folder", "overwrite", "Predictor.save", ("py", save),
             lambda d: (d / "saved").mkdir() or (d / "saved" / "notes.txt").write_bytes(VICTIM), needs=("fitrun",)))
    for name in ["model.json", "best/model.safetensors", "autofit.json", "best/model.json", "config.yaml"]:
        add(Case(f"Predictor.save of a run whose {name} is a link", "symlink", "Predictor.save", ("py", save),
                 plant_link(f"fitrun/{name}"), needs=("fitrun",), expect="refuse", own=("saved", "saved/**", ".saved*")))
    for name in ["best/model.json", "autofit.json", "best/model.safetensors"]:
        add(Case(f"Predictor.load of a run whose {name} is a link to /dev/zero", "symlink", "Predictor.load",
                 ("py", "import mmcore; mmcore.Predictor.load('fitrun')"),
                 lambda d, n=name: ((d / "fitrun" / n).unlink(), (d / "fitrun" / n).symlink_to("/dev/zero")),
                 needs=("fitrun",)))

    # ---------------------------------------------------------------------------- FIFOs where files go
    for column, value in [("image", "img/fifo.png"), ("audio", "wav/fifo.wav"), ("doc", "docs/fifo.txt")]:
        setup = chain(plant_fifo(f"data/{value}"), cell(3, column, value))
        add(Case(f"fit, a FIFO in a {column} cell", "fifo", "fit", ("cli", FIT + ["--run-dir", "out"]), setup,
                 needs=("data",), expect="either", own=FIT_OWN, timeout=300))
        add(Case(f"fit --strict, a FIFO in a {column} cell", "fifo", "fit", ("cli", FIT + ["--run-dir", "out", "--strict"]),
                 setup, needs=("data",), own=FIT_OWN, timeout=300))
        add(Case(f"predict --data, a FIFO in a {column} cell", "fifo", "predict --data",
                 ("cli", ["predict", "fitrun", "--data", "data/train.csv"]), setup, needs=("data", "fitrun"), expect="ok"))
        add(Case(f"embed --data, a FIFO in a {column} cell", "fifo", "embed",
                 ("cli", embed), setup, needs=("data", "fitrun"), expect="ok", own=("e.npy", "e.*.npy", "e.npy.json")))
        add(Case(f"explain --data, a FIFO in a {column} cell", "fifo", "explain",
                 ("cli", explain + ["--out", "ex", "--limit", "5"]), setup, needs=("data", "fitrun"), expect="either",
                 own=("ex", "ex/*")))
        add(Case(f"Predictor.predict, a FIFO in a {column} cell", "fifo", "Predictor.predict",
                 ("py", "import mmcore; mmcore.Predictor.load('fitrun').predict('data/train.csv', strict=True)"),
                 chain(setup, lambda d: None), needs=("data", "fitrun"), expect="either"))
        add(Case(f"Predictor.evaluate, a FIFO in a {column} cell", "fifo", "Predictor.evaluate",
                 ("py", "import mmcore; mmcore.Predictor.load('fitrun').evaluate('data/train.csv')"),
                 setup, needs=("data", "fitrun"), expect="ok"))
    add(Case("predict one record, image=FIFO", "fifo", "predict", ("cli", ["predict", "fitrun", "image=f.png"]),
             plant_fifo("f.png"), needs=("fitrun",), expect="either"))
    add(Case("predict one record, doc=FIFO", "fifo", "predict", ("cli", ["predict", "fitrun", "doc=f.txt"]),
             plant_fifo("f.txt"), needs=("fitrun",), expect="either"))
    add(Case("search --query a FIFO .wav", "fifo", "search", ("cli", ["search", "fitrun", "--index", "emb/g.faiss", "--query", "q.wav"]),
             plant_fifo("q.wav"), needs=("fitrun", "emb")))
    add(Case("search --index a FIFO", "fifo", "search", ("cli", ["search", "fitrun", "--index", "q.faiss", "--query", "red"]),
             plant_fifo("q.faiss"), needs=("fitrun",)))
    add(Case("search --index sidecar a FIFO", "fifo", "search", ("cli", ["search", "fitrun", "--index", "emb/g.faiss", "--query", "red"]),
             plant_fifo("emb/g.faiss.json"), needs=("fitrun", "emb")))
    for table in ["t.csv", "t.jsonl", "t.parquet"]:
        add(Case(f"fit on a FIFO table {table}", "fifo", "fit", ("cli", ["fit", table, "--target", "label", "--run-dir", "out"]),
                 plant_fifo(table), own=FIT_OWN))
        add(Case(f"predict --data a FIFO table {table}", "fifo", "predict --data", ("cli", ["predict", "fitrun", "--data", table]),
                 plant_fifo(table), needs=("fitrun",)))
    add(Case("train, config file a FIFO", "fifo", "train", ("cli", ["train", "c.yaml"]), plant_fifo("c.yaml")))
    add(Case("fit, a /dev/zero image cell with --allow-outside-paths", "fifo", "fit",
             ("cli", FIT + ["--run-dir", "out", "--allow-outside-paths", "--strict"]), cell(2, "image", "/dev/zero"),
             needs=("data",), own=FIT_OWN, timeout=300))

    # --------------------------------------------------------------------------- overwrite guards
    add(Case("predict --out the user's existing file", "overwrite", "predict --out", ("cli", predict),
             lambda d: (d / "p.jsonl").write_bytes(VICTIM), needs=("data", "fitrun")))
    add(Case("embed --out the user's existing e.npy", "overwrite", "embed --out", ("cli", embed),
             lambda d: (d / "e.npy").write_bytes(VICTIM), needs=("data", "fitrun")))
    add(Case("embed --out --overwrite, the user's e.image.npy beside it", "overwrite", "embed --out",
             ("cli", embed + ["--overwrite"]), lambda d: (d / "e.image.npy").write_bytes(VICTIM), needs=("data", "fitrun")))
    add(Case("embed --index the user's existing file", "overwrite", "embed --index", ("cli", index),
             lambda d: (d / "g.faiss").write_bytes(VICTIM), needs=("data", "fitrun")))
    add(Case("embed --index --overwrite, the user's g.faiss.json beside it", "overwrite", "embed --index",
             ("cli", index + ["--overwrite"]), lambda d: (d / "g.faiss.json").write_bytes(VICTIM), needs=("data", "fitrun")))
    add(Case("fit --overwrite into a folder holding the user's data.jsonl", "overwrite", "fit",
             ("cli", FIT + ["--run-dir", "out", "--overwrite"]), lambda d: (d / "out").mkdir() or (d / "out" / "data.jsonl").write_bytes(VICTIM),
             needs=("data",)))
    add(Case("fit --overwrite into the table's own folder (table named data.jsonl)", "overwrite", "fit",
             ("cli", ["fit", "data/data.jsonl", "--target", "label", "--preset", "fast", "--max-epochs", "1",
                      "--run-dir", "data", "--overwrite"]),
             rewrite_table(lambda rows, d: rows, "data.jsonl"), needs=("data",)))
    add(Case("fit without --overwrite into the user's folder", "overwrite", "fit", ("cli", FIT + ["--run-dir", "user"]),
             victim, needs=("data",)))
    add(Case("train into the user's non-empty folder", "overwrite", "train", ("cli", ["train", "wine.yaml", "trainer.run_dir=user"]),
             victim, needs=("run",)))
    for where in ["/", "~", ".", ""]:
        add(Case(f"train run_dir={where!r}", "hostile", "train", ("cli", ["train", "wine.yaml", f"trainer.run_dir={where}"]),
                 victim, needs=("run",)))
    add(Case("fit --run-dir .", "overwrite", "fit", ("cli", FIT + ["--run-dir", "."]), victim, needs=("data",)))

    # ---------------------------------------------------------------------------- crafted artefacts
    crafted_json = {
        "NaN": lambda t: t.replace("{", '{"nan_here": NaN, ', 1),
        "deep nesting": lambda t: "[" * 100000 + "]" * 100000,
        "not JSON": lambda t: t[: len(t) // 2],
        "a duplicate key": lambda t: t.replace("{", '{"dup": 1, "dup": 2, ', 1),
        "a list": lambda t: "[1, 2, 3]",
        "an integer of 10**400": lambda t: t.replace("{", '{"big": 1' + "0" * 400 + ", ", 1),
        "invalid UTF-8": lambda t: t[:20] + "\udcff" + t[20:],
    }

    def edit_text(rel: str, fn):
        def setup(d: Path) -> None:
            path = d / rel
            text = path.read_text()
            path.write_bytes(fn(text).encode("utf-8", "surrogateescape"))
        return setup

    def sparse(rel: str, size: int, head: bytes = b""):
        def setup(d: Path) -> None:
            path = d / rel
            with open(path, "wb") as fh:
                fh.write(head)
                fh.truncate(size)
        return setup

    load = ("py", "import mmcore; p = mmcore.Predictor.load('fitrun'); p.predict('data/train.csv')")
    for rel in ["fitrun/autofit.json", "fitrun/best/model.json"]:
        for label, fn in crafted_json.items():
            add(Case(f"Predictor.load, {rel.split('/', 1)[1]} with {label}", "crafted", "Predictor.load", load,
                     edit_text(rel, fn), needs=("data", "fitrun"),
                     expect="either" if label in ("a duplicate key", "an integer of 10**400") else "refuse"))
        add(Case(f"Predictor.load, {rel.split('/', 1)[1]} a 4 GiB sparse file", "crafted", "Predictor.load", load,
                 sparse(rel, 4 * GiB, b'{"a": "'), needs=("data", "fitrun")))
        add(Case(f"predict (CLI), {rel.split('/', 1)[1]} with deep nesting", "crafted", "predict",
                 ("cli", ["predict", "fitrun", "note=red"]), edit_text(rel, crafted_json["deep nesting"]), needs=("fitrun",)))

    def json_field(rel: str, edit: Callable[[Any], None]):
        def setup(d: Path) -> None:
            path = d / rel
            doc = json.loads(path.read_text())
            edit(doc)
            path.write_text(json.dumps(doc))
        return setup

    def deep_set(doc, key, value):
        """Set every ``key`` anywhere in doc to value (crafting without knowing the layout);
        KeyError when there is none (the case would test nothing)."""
        if not _deep_set(doc, key, value):
            raise KeyError(f"no {key!r} in the file")

    def _deep_set(doc, key, value) -> int:
        found = 0
        if isinstance(doc, dict):
            for k in list(doc):
                if k == key:
                    doc[k] = value
                    found += 1
                else:
                    found += _deep_set(doc[k], key, value)
        elif isinstance(doc, list):
            for v in doc:
                found += _deep_set(v, key, value)
        return found

    for key, value in [("dim", 2**31 - 1), ("dim", 10**12), ("dim", 0), ("num_features", 10**9), ("vocab_size", 10**10),
                       ("image_size", 10**6), ("n_mels", 2**20), ("max_length", 10**9), ("std", [0.0]), ("mean", "x"),
                       ("classes", ["a"] * 100000), ("classes", None), ("head", None), ("name", "../../evil"), ("epoch", -1)]:
        add(Case(f"Predictor.load, model.json {key}={str(value)[:20]}", "crafted", "Predictor.load", load,
                 json_field("fitrun/best/model.json", lambda doc, k=key, v=value: deep_set(doc, k, v)), needs=("data", "fitrun")))
    for key, value in [("classes", ["x", "y"]), ("classes", [1] * 3), ("slots", ["nope"]), ("target", None), ("columns", {"a": 1}),
                       ("kind", "pickle"), ("time_limit_s", 10**9)]:
        add(Case(f"Predictor.load, autofit.json {key}={str(value)[:20]}", "crafted", "Predictor.load", load,
                 json_field("fitrun/autofit.json", lambda doc, k=key, v=value: deep_set(doc, k, v)), needs=("data", "fitrun"),
                 expect="either"))

    def safetensors_edit(rel: str, how: str):
        def setup(d: Path) -> None:
            import struct

            path = d / rel
            raw = bytearray(path.read_bytes())
            n = struct.unpack("<Q", raw[:8])[0]
            header = json.loads(raw[8:8 + n])
            first = next(k for k in header if k != "__metadata__")
            if how == "truncated":
                raw = raw[: len(raw) // 2]
            elif how == "header 2**60":
                raw[:8] = struct.pack("<Q", 2**60)
            elif how == "header 90 MB sparse":
                path.write_bytes(struct.pack("<Q", 90 * MiB) + b"{")
                with open(path, "r+b") as fh:
                    fh.truncate(90 * MiB + 8)
                return
            elif how in ("offsets beyond", "dtype I8", "shape huge", "NaN weights", "a missing tensor", "an extra tensor"):
                body = raw[8 + n:]
                if how == "offsets beyond":
                    header[first]["data_offsets"] = [0, 2**40]
                elif how == "dtype I8":
                    header[first]["dtype"] = "I8"
                elif how == "shape huge":
                    header[first]["shape"] = [2**31, 2**31]
                elif how == "a missing tensor":
                    del header[first]
                elif how == "an extra tensor":
                    header["evil.weight"] = dict(header[first])
                elif how == "NaN weights":
                    import numpy as np

                    a, b = header[first]["data_offsets"]
                    body[a:b] = np.full((b - a) // 4, np.nan, dtype=np.float32).tobytes()
                text = json.dumps(header).encode()
                raw = bytearray(struct.pack("<Q", len(text)) + text + body)
            elif how == "empty":
                raw = bytearray()
            elif how == "random bytes":
                raw = bytearray(os.urandom(len(raw)))
            path.write_bytes(bytes(raw))
        return setup

    for how in ["truncated", "header 2**60", "header 90 MB sparse", "offsets beyond", "dtype I8", "shape huge", "NaN weights",
                "a missing tensor", "an extra tensor", "empty", "random bytes"]:
        add(Case(f"Predictor.load, model.safetensors {how}", "crafted", "Predictor.load", load,
                 safetensors_edit("fitrun/best/model.safetensors", how), needs=("data", "fitrun")))
        add(Case(f"train --resume, last/model.safetensors {how}", "crafted", "train --resume",
                 ("cli", ["train", "wine.yaml", "--resume", "run", "trainer.epochs=3"]),
                 safetensors_edit("run/last/model.safetensors", how), needs=("run",), own=RUN_NAMES))

    def state_edit(how: str):
        def setup(d: Path) -> None:
            import torch

            path = d / "run" / "last" / "state.pt"
            if how == "a pickle that runs code":
                import pickle

                class Evil:
                    def __reduce__(self):
                        return (os.system, (f"touch {d / 'PWNED'}",))

                path.write_bytes(pickle.dumps({"epoch": Evil()}))
                return
            if how == "random bytes":
                path.write_bytes(os.urandom(4096))
                return
            if how == "empty":
                path.write_bytes(b"")
                return
            state = torch.load(path, weights_only=True)
            text = json.dumps(sorted(state.keys()))
            if how == "epoch -5":
                state["epoch"] = -5
            elif how == "epoch 10**12":
                state["epoch"] = 10**12
            elif how == "step a string":
                state["step"] = "x"
            elif how == "a huge exp_avg":
                opt = state["optimizer"]["state"]
                first = next(iter(opt.values()))
                first["exp_avg"] = torch.zeros(3, 3)
            elif how == "NaN moments":
                for v in state["optimizer"]["state"].values():
                    v["exp_avg"] = torch.full_like(v["exp_avg"], float("nan"))
            elif how == "no optimizer":
                state.pop("optimizer")
            elif how == "rng a string":
                for k in list(state):
                    if "rng" in k:
                        state[k] = "x"
            elif how == "best NaN":
                for k in list(state):
                    if "best" in k:
                        state[k] = float("nan")
            del text
            torch.save(state, path)
        return setup

    for how in ["a pickle that runs code", "random bytes", "empty", "epoch -5", "epoch 10**12", "step a string",
                "a huge exp_avg", "NaN moments", "no optimizer", "rng a string", "best NaN"]:
        add(Case(f"train --resume, state.pt {how}", "crafted", "train --resume",
                 ("cli", ["train", "wine.yaml", "--resume", "run", "trainer.epochs=3"]), state_edit(how), needs=("run",),
                 own=RUN_NAMES, check=marker_absent("PWNED")))
    for label, fn in [("a !!python tag", lambda t: t + "\nevil: !!python/object/apply:os.system ['touch PWNED']\n"),
                      ("a billion laughs", lambda t: "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
                          f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + t),
                      ("deep nesting", lambda t: t + "\ndeep: " + "[" * 5000 + "]" * 5000 + "\n")]:
        add(Case(f"train --resume, run/config.yaml with {label}", "crafted", "train --resume",
                 ("cli", ["train", "wine.yaml", "--resume", "run", "trainer.epochs=3"]), edit_text("run/config.yaml", fn),
                 needs=("run",), own=RUN_NAMES, check=marker_absent("PWNED")))
        add(Case(f"train, a config with {label}", "hostile", "train", ("cli", ["train", "wine.yaml"]),
                 edit_text("wine.yaml", fn), needs=("run",), own=RUN_NAMES, check=marker_absent("PWNED")))

    def faiss_edit(how: str):
        def setup(d: Path) -> None:
            path, side = d / "emb" / "g.faiss", d / "emb" / "g.faiss.json"
            raw = bytearray(path.read_bytes())
            if how == "random bytes":
                path.write_bytes(os.urandom(len(raw)))
            elif how == "truncated":
                path.write_bytes(bytes(raw[: len(raw) // 2]))
            elif how == "huge ntotal":
                raw[8:16] = (2**40).to_bytes(8, "little")  # IndexFlat: fourcc, d (int32), ntotal (int64)
                path.write_bytes(bytes(raw))
            elif how == "huge dimension":
                raw[4:8] = (2**30).to_bytes(4, "little")
                path.write_bytes(bytes(raw))
            elif how == "sidecar count 10**12":
                doc = json.loads(side.read_text())
                deep_set(doc, "count", 10**12)
                side.write_text(json.dumps(doc))
            elif how == "sidecar ids deep":
                side.write_text('{"ids": ' + "[" * 100000 + "]" * 100000 + "}")
            elif how == "sidecar names ../":
                doc = json.loads(side.read_text())
                for k, v in list(doc.items()):
                    if isinstance(v, str) and v.endswith((".npy", ".faiss")):
                        doc[k] = "../../user/victim.txt"
                side.write_text(json.dumps(doc))
                victim(d)
            elif how == "a 4 GiB sparse index":
                with open(path, "r+b") as fh:
                    fh.truncate(4 * GiB)
            elif how == "an IVF fourcc on flat data":
                raw[0:4] = b"IwFl"
                path.write_bytes(bytes(raw))
        return setup

    for how in ["random bytes", "truncated", "huge ntotal", "huge dimension", "sidecar count 10**12", "sidecar ids deep",
                "sidecar names ../", "a 4 GiB sparse index", "an IVF fourcc on flat data"]:
        add(Case(f"search, FAISS index {how}", "crafted", "search",
                 ("cli", ["search", "fitrun", "--index", "emb/g.faiss", "--query", "red apple"]), faiss_edit(how),
                 needs=("fitrun", "emb")))

    cache_snippet = textwrap.dedent("""
        import os, warnings, torch
        from pathlib import Path
        from mmcore.feature_cache import FeatureCache, sample_key
        cache = FeatureCache('cache'); fp = 'f' * 64; key = sample_key('a sample')
        cache.put(fp, key, torch.ones(4, 8), torch.ones(8)); cache.close()
        index = sorted(Path('cache').rglob('*.idx'))[0]; data = index.with_suffix('.bin')
        {edit}
        warnings.simplefilter('ignore')
        got = FeatureCache('cache').get(fp, key, 8)
        assert got is None or (torch.isfinite(got[0]).all() and got[0].shape[-1] == 8), got
        assert open('user/victim.txt', 'rb').read().startswith(b"the user's own file")
        FeatureCache('cache').put(fp, key, torch.ones(4, 8), torch.ones(8))
    """)
    for label, edit in [
        ("a link as data file", "data.unlink(); data.symlink_to(os.path.abspath('user/victim.txt'))"),
        ("a link as index", "index.unlink(); index.symlink_to(os.path.abspath('user/victim.txt'))"),
        ("a FIFO as data file", "data.unlink(); os.mkfifo(data)"),
        ("a truncated data file", "data.write_bytes(b'\\x08\\x00')"),
        ("NaN data", "import numpy as np; data.write_bytes(np.full(data.stat().st_size // 4, np.nan, np.float32).tobytes())"),
        ("a record claiming 2**31 rows", "raw = bytearray(index.read_bytes()); raw[40:44] = (2**31).to_bytes(4, 'little'); index.write_bytes(bytes(raw))"),
        ("offsets beyond the file", "raw = bytearray(index.read_bytes()); raw[32:40] = (2**40).to_bytes(8, 'little'); index.write_bytes(bytes(raw))"),
        ("a 4 GiB sparse data file", "fh = open(data, 'r+b'); fh.truncate(4 << 30); fh.close()"),
        ("random index bytes", "index.write_bytes(os.urandom(index.stat().st_size))"),
    ]:
        add(Case(f"feature cache, {label}", "crafted", "feature cache", ("py", cache_snippet.format(edit=edit)), victim,
                 expect="ok", own=("cache", "cache/**")))

    # --------------------------------------------------------------------------------- size bombs
    def many_classes(d: Path) -> None:
        (d / "data").mkdir(exist_ok=True)
        with open(d / "data" / "big.csv", "w") as fh:
            fh.write("x,label\n")
            for i in range(50000):
                fh.write(f"{i % 97},class_{i}\n")

    add(Case("fit, a 50,000-class CSV (1 MB)", "bomb", "fit",
             ("cli", ["fit", "data/big.csv", "--target", "label", "--preset", "fast", "--max-epochs", "1", "--time-limit", "60s",
                      "--run-dir", "out"]), many_classes, expect="either", own=FIT_OWN, timeout=400))

    def parquet_rows(d: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        (d / "data").mkdir(exist_ok=True)
        n = 20_000_000
        table = pa.table({"x": pa.repeat(1.0, n) if hasattr(pa, "repeat") else pa.nulls(n, pa.float64()).fill_null(1.0),
                          "label": pa.nulls(n, pa.string()).fill_null("a")})
        pq.write_table(table, d / "data" / "rows.parquet", compression="zstd")

    def parquet_cell(d: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        (d / "data").mkdir(exist_ok=True)
        big = "a" * (512 * MiB)
        pq.write_table(pa.table({"note": [big, "b"], "label": ["x", "y"]}), d / "data" / "cell.parquet", compression="zstd")

    for label, setup, table in [("20M rows (a few hundred KB)", parquet_rows, "rows.parquet"),
                                ("a 512 MiB cell (a few hundred KB)", parquet_cell, "cell.parquet")]:
        add(Case(f"fit, Parquet of {label}", "bomb", "Parquet reader",
                 ("cli", ["fit", f"data/{table}", "--target", "label", "--run-dir", "out", "--time-limit", "60s"]), setup,
                 own=FIT_OWN, timeout=300))
        add(Case(f"predict --data, Parquet of {label}", "bomb", "Parquet reader",
                 ("cli", ["predict", "fitrun", "--data", f"data/{table}", "--out", "p.jsonl"]), setup, needs=("fitrun",),
                 expect="either", own=("p.jsonl",), timeout=300))

    def png(side: int, name: str = "bomb.png"):
        def setup(d: Path) -> None:
            from PIL import Image

            (d / "data" / "img").mkdir(parents=True, exist_ok=True)
            Image.new("L", (side, side), 128).save(d / "data" / "img" / name, optimize=False)
        return setup

    for side, label in [(9000, "81 Mpx (inside Pillow's limit)"), (20000, "400 Mpx (a decompression bomb)")]:
        add(Case(f"predict one record, a {label} PNG", "bomb", "PNG reader",
                 ("cli", ["predict", "fitrun", "image=data/img/bomb.png"]), png(side), needs=("fitrun",), expect="either",
                 timeout=300))
        add(Case(f"fit, a {label} PNG in an image cell", "bomb", "PNG reader", ("cli", FIT + ["--run-dir", "out"]),
                 chain(png(side), cell(4, "image", "img/bomb.png")), needs=("data",), expect="either", own=FIT_OWN, timeout=400))
        add(Case(f"Predictor.predict, a {label} PNG", "bomb", "PNG reader",
                 ("py", "import mmcore, pandas; t = pandas.read_csv('data/train.csv').head(3); t.loc[0, 'image'] = 'img/bomb.png';"
                        " t.to_csv('data/bomb.csv', index=False); mmcore.Predictor.load('fitrun').predict('data/bomb.csv')"), png(side), needs=("data", "fitrun"), expect="either",
                 own=("data/bomb.csv",), timeout=300))  # the attacker's own table, written by the case itself

    def wav_bomb(d: Path) -> None:
        import struct

        (d / "data" / "wav").mkdir(parents=True, exist_ok=True)
        size = 3 * GiB
        header = b"RIFF" + struct.pack("<I", size - 8) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) \
            + b"data" + struct.pack("<I", size - 44)
        with open(d / "data" / "wav" / "bomb.wav", "wb") as fh:
            fh.write(header)
            fh.truncate(size)

    add(Case("predict one record, a 3 GiB (sparse) WAV", "bomb", "WAV reader",
             ("cli", ["predict", "fitrun", "audio=data/wav/bomb.wav"]), wav_bomb, needs=("fitrun",), expect="either", timeout=300))
    add(Case("fit, a 3 GiB (sparse) WAV in an audio cell", "bomb", "WAV reader", ("cli", FIT + ["--run-dir", "out"]),
             chain(wav_bomb, cell(5, "audio", "wav/bomb.wav")), needs=("data",), expect="either", own=FIT_OWN, timeout=400))
    add(Case("fit, a 2 GiB (sparse) text file in a text cell", "bomb", "text reader", ("cli", FIT + ["--run-dir", "out"]),
             chain(sparse("data/docs/big.txt", 2 * GiB, b"hello "), cell(6, "doc", "docs/big.txt")), needs=("data",),
             expect="either", own=FIT_OWN, timeout=400))
    add(Case("predict one record, doc= a 2 GiB (sparse) text file", "bomb", "text reader",
             ("cli", ["predict", "fitrun", "doc=big.txt"]), sparse("big.txt", 2 * GiB, b"hello "), needs=("fitrun",),
             expect="either", timeout=300))

    def deep_jsonl(d: Path) -> None:
        (d / "data").mkdir(exist_ok=True)
        (d / "data" / "deep.jsonl").write_text('{"note": "a", "label": "x"}\n' + '{"note": ' + "[" * 200000 + "]" * 200000
                                              + ', "label": "y"}\n')

    add(Case("fit, JSON Lines nested 200,000 deep", "bomb", "JSONL reader",
             ("cli", ["fit", "data/deep.jsonl", "--target", "label", "--run-dir", "out"]), deep_jsonl, own=FIT_OWN))
    add(Case("predict --data, JSON Lines nested 200,000 deep", "bomb", "JSONL reader",
             ("cli", ["predict", "fitrun", "--data", "data/deep.jsonl"]), deep_jsonl, needs=("fitrun",), expect="either"))
    add(Case("predict one record, a 200,000-deep JSON value", "bomb", "predict",
             ("cli", ["predict", "fitrun", "note=" + "[" * 200000 + "]" * 200000]), needs=("fitrun",), expect="either"))

    def wide_csv(d: Path) -> None:
        (d / "data").mkdir(exist_ok=True)
        cols = 100_000
        with open(d / "data" / "wide.csv", "w") as fh:
            fh.write(",".join(f"c{i}" for i in range(cols)) + ",label\n")
            for r in range(4):
                fh.write(",".join("1" for _ in range(cols)) + f",{'ab'[r % 2]}\n")

    add(Case("fit, a 100,000-column CSV", "bomb", "CSV reader",
             ("cli", ["fit", "data/wide.csv", "--target", "label", "--run-dir", "out", "--time-limit", "60s"]), wide_csv,
             expect="either", own=FIT_OWN, timeout=400))
    add(Case("fit, a CSV field of 300 MB", "bomb", "CSV reader",
             ("cli", ["fit", "data/field.csv", "--target", "label", "--run-dir", "out"]),
             lambda d: (d / "data").mkdir(exist_ok=True) or (d / "data" / "field.csv").write_text("note,label\n" + "a" * (300 * MiB) + ",x\n"),
             own=FIT_OWN, timeout=300))
    add(Case("fit, a 2 GiB (sparse) CSV", "bomb", "CSV reader",
             ("cli", ["fit", "data/huge.csv", "--target", "label", "--run-dir", "out"]),
             lambda d: (d / "data").mkdir(exist_ok=True) or sparse("data/huge.csv", 2 * GiB, b"note,label\n")(d), own=FIT_OWN))
    add(Case("train, head num_classes 10**12", "hostile", "train", ("cli", ["train", "wine.yaml", "model.head.num_classes=1000000000000"]),
             needs=("run",), own=RUN_NAMES))
    add(Case("train, encoder dim 2**40", "hostile", "train", ("cli", ["train", "wine.yaml", "model.encoders.first.dim=1099511627776"]),
             needs=("run",), own=RUN_NAMES))
    add(Case("train, batch_size 0", "hostile", "train", ("cli", ["train", "wine.yaml", "trainer.batch_size=0"]),
             needs=("run",), own=RUN_NAMES))
    add(Case("train, epochs -1", "hostile", "train", ("cli", ["train", "wine.yaml", "trainer.epochs=-1"]), needs=("run",),
             own=RUN_NAMES))
    add(Case("train, lr 'abc'", "hostile", "train", ("cli", ["train", "wine.yaml", "trainer.lr=abc"]), needs=("run",), own=RUN_NAMES))
    add(Case("train, data.path a FIFO", "hostile", "train",
             ("cli", ["train", "wine.yaml", "data.name=manifest", "data.path=f.csv"]), plant_fifo("f.csv"), needs=("run",),
             own=RUN_NAMES))
    for option in [["--time-limit", "abc"], ["--time-limit", "-5s"], ["--max-epochs", "0"], ["--max-epochs", "10**9"],
                   ["--column", "image=pickle"], ["--target", "nope"], ["--time-limit", "1e400s"]]:
        add(Case(f"fit {' '.join(option)}", "hostile", "fit",
                 ("cli", ["fit", "data/train.csv", "--target", "label", "--run-dir", "out"] + option
                  if option[0] != "--target" else ["fit", "data/train.csv", "--run-dir", "out"] + option),
                 needs=("data",), own=FIT_OWN))
    for option in [["--batch-size", "0"], ["--nlist", "0"], ["--nprobe", "-1"], ["--index-type", "pickle"], ["--vector", "nope"]]:
        add(Case(f"embed {' '.join(option)}", "hostile", "embed", ("cli", index + option), needs=("data", "fitrun")))
    for option in [["-k", "0"], ["-k", "10**12"], ["--nprobe", "-3"]]:
        add(Case(f"search {' '.join(option)}", "hostile", "search",
                 ("cli", ["search", "fitrun", "--index", "emb/g.faiss", "--query", "red"] + option), needs=("fitrun", "emb")))
    for label, value in [("../ path", "../outside.png"), ("absolute path", "/etc/passwd"), ("a link out", "img/out.png")]:
        def outside(d: Path, v=value) -> None:
            victim(d)
            (d / "outside.png").write_bytes(VICTIM)
            if v == "img/out.png":
                (d / "data" / "img" / "out.png").symlink_to(d / "user" / "victim.txt")
        add(Case(f"fit, an image cell naming {label}", "hostile", "fit", ("cli", FIT + ["--run-dir", "out"]),
                 chain(outside, cell(1, "image", value)), needs=("data",), own=FIT_OWN, timeout=300))
    for label, value in [("../ path", "../outside.txt"), ("absolute path", "/etc/hostname")]:
        add(Case(f"fit, a doc cell naming {label}", "hostile", "fit", ("cli", FIT + ["--run-dir", "out"]),
                 chain(lambda d: (d / "outside.txt").write_text("secret outside"), cell(1, "doc", value)), needs=("data",),
                 own=FIT_OWN, timeout=300))
    add(Case("fit, JSONL with U+2028 and U+0085 inside text", "hostile", "JSONL reader",
             ("cli", ["fit", "data/u.jsonl", "--target", "label", "--preset", "fast", "--max-epochs", "1", "--run-dir", "out"]),
             rewrite_table(lambda rows, d: [dict(r, note=r["note"] + "\u2028x\u0085y") for r in rows], "u.jsonl"),
             needs=("data",), expect="ok", own=FIT_OWN, timeout=300))

    # ------------------------------------------------- plugins from the working folder, concurrency, kills
    evil = textwrap.dedent("""
        def setup(d):
            dist = d / "downloads" / "mmcore_evil-1.0.dist-info"
            dist.mkdir(parents=True)
            (dist / "METADATA").write_text("Metadata-Version: 2.1\\nName: mmcore-evil\\nVersion: 1.0\\n")
            (dist / "entry_points.txt").write_text("[mmcore]\\nevil = mmcore_evil_mod\\n")
            (d / "downloads" / "mmcore_evil_mod.py").write_text(f"open({str(d / 'PWNED')!r}, 'w').write('ran')\\n")
    """)
    namespace: dict[str, Any] = {}
    exec(evil, namespace)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMCORE_") and k != "PYTHONPATH"}
    for label, argv in [("python -m mmcore plugins", [sys.executable, "-m", "mmcore", "plugins"]),
                        ("python -m mmcore fit", [sys.executable, "-m", "mmcore", "fit", "nope.csv", "--target", "x"]),
                        ("python -m mmcore --version", [sys.executable, "-m", "mmcore", "--version"]),
                        ("mmcore plugins (console script)", [shutil.which("mmcore") or "mmcore", "plugins"]),
                        ("torchrun -m mmcore plugins", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        "--nproc-per-node", "1", "-m", "mmcore", "plugins"])]:
        add(Case(f"{label} in a folder holding a plugin's dist-info", "plugin", "python -m mmcore",
                 ("exec", argv), namespace["setup"], expect="either", check=marker_absent("PWNED"), env=env,
                 own=("downloads/__pycache__", "downloads/__pycache__/*")))
        # the case runs in downloads/: see run_case (cwd)

    add(Case("two fits one second apart on one run folder", "concurrent", "fit", None, needs=("data",), custom=two_fits,
             own=FIT_OWN, timeout=400))
    add(Case("two trains one second apart on one run folder", "concurrent", "train", None, needs=("run",), custom=two_trains,
             own=RUN_NAMES + FRESH, timeout=400))
    for point in ["first", "second", "after", "metrics", "report"]:
        add(Case(f"kill -9 at a rename point ({point}), then load and --resume", "kill", "train --resume", None, needs=("run",),
                 custom=lambda d, a, p=point: kill_at_rename(d, a, p), own=RUN_NAMES + FRESH, timeout=400))
    for fraction in [0.2, 0.5, 0.8]:
        add(Case(f"kill -9 mid-fit at {int(fraction * 100)}% of its time, then load and fit again", "kill", "fit", None,
                 needs=("data",), custom=lambda d, a, f=fraction: kill_mid_fit(d, a, f), own=FIT_OWN, timeout=400))
    for fraction in [0.3, 0.6, 0.85]:
        add(Case(f"kill -9 mid-train at {int(fraction * 100)}% of its time, then --resume", "kill", "train", None,
                 needs=("run",), custom=lambda d, a, f=fraction: kill_mid_train(d, a, f), own=RUN_NAMES + FRESH, timeout=400))
    return out


def _mmcore_exec() -> list[str]:
    return [shutil.which("mmcore") or sys.executable, *([] if shutil.which("mmcore") else ["-m", "mmcore"])]


def _popen(argv, cwd, name):
    import subprocess

    out = open(cwd / f".attack.{name}.out", "wb")
    return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (16 * GiB, 16 * GiB)))


def two_fits(d: Path, args) -> tuple[Outcome, list[str]]:
    argv = _mmcore_exec() + FIT + ["--run-dir", "out"]
    started = time.monotonic()
    first = _popen(argv, d, "a")
    time.sleep(1.0)
    second = _popen(argv, d, "b")
    codes = []
    for proc in (first, second):
        try:
            codes.append(proc.wait(timeout=380))
        except Exception:
            proc.kill()
            proc.wait()
            codes.append(None)
    texts = [(d / f".attack.{n}.out").read_text(errors="replace") for n in "ab"]
    reasons = []
    if sorted(c for c in codes if c is not None) != [0, 2] or "in use by process" not in texts[1]:
        reasons.append(f"two fits: exit codes {codes} (expected 0 and 2, the second 'in use by process'): {texts[1][-300:]!r}")
    got = Outcome(codes[1], "", texts[1], time.monotonic() - started, 0)
    return got, reasons


def two_trains(d: Path, args) -> tuple[Outcome, list[str]]:
    argv = _mmcore_exec() + ["train", "wine.yaml", "trainer.epochs=4", "trainer.run_dir=fresh"]
    started = time.monotonic()
    first = _popen(argv, d, "a")
    time.sleep(1.0)
    second = _popen(argv, d, "b")
    codes = [p.wait(timeout=380) for p in (first, second)]
    texts = [(d / f".attack.{n}.out").read_text(errors="replace") for n in "ab"]
    reasons = []
    ok = sorted(codes) == [0, 2] and any("in use by process" in t or "not empty" in t or "exists" in t for t in texts)
    if not ok:
        reasons.append(f"two trains: exit codes {codes}: {texts[0][-200:]!r} / {texts[1][-200:]!r}")
    return Outcome(codes[1], "", texts[1], time.monotonic() - started, 0), reasons


_RENAME_KILL = textwrap.dedent("""
    import os, signal, sys, yaml
    from mmcore.engine.trainer import Trainer
    point = {point!r}
    real, swaps = os.replace, []
    def replace(src, dst, *a, **k):
        s, t = str(src), str(dst)
        into_last = os.path.basename(t) == "last" and os.path.basename(s).startswith(".last.")
        if len(swaps) == 1:
            if point == "first" and t.endswith(".last.old"):
                os.kill(os.getpid(), signal.SIGKILL)
            if point == "second" and into_last:
                os.kill(os.getpid(), signal.SIGKILL)
        if swaps and point in ("metrics", "report") and os.path.basename(t).startswith(point):
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *a, **k)
        if into_last:
            swaps.append(t)
            if len(swaps) == 2 and point == "after":
                os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    config = yaml.safe_load(open("wine.yaml"))
    config["trainer"].update(epochs=3, run_dir="fresh")
    Trainer(config).fit()
""")


def _load_and_resume(d: Path, args, run: str, resume: list[str]) -> list[str]:
    reasons = []
    check = run_process(("py", f"from mmcore.engine.checkpoint import load_model; load_model({run + '/last'!r})"), d,
                        timeout=120, rss_limit=args.rss_limit, mode=args.mode)
    if check.rc != 0:
        reasons.append(f"the checkpoint left by the kill does not load: {check.stderr.strip()[-300:]}")
    resumed = run_process(("cli", resume), d, timeout=300, rss_limit=args.rss_limit, mode=args.mode)
    if resumed.rc != 0:
        reasons.append(f"--resume after the kill exited {resumed.rc}: {resumed.stderr.strip()[-300:]}")
    leftovers = [p.name for p in (d / run).iterdir() if p.name.endswith((".tmp", ".old"))] if (d / run).exists() else []
    if leftovers:
        reasons.append(f"leftovers after the resume: {leftovers}")
    return reasons


def kill_at_rename(d: Path, args, point: str) -> tuple[Outcome, list[str]]:
    got = run_process(("py", _RENAME_KILL.format(point=point)), d, timeout=300, rss_limit=args.rss_limit, mode=args.mode)
    if got.rc != -signal.SIGKILL:
        return got, [f"the kill at {point} did not happen (exit {got.rc}): {got.stderr[-300:]}"]
    reasons = _load_and_resume(d, args, "fresh", ["train", "wine.yaml", "trainer.epochs=3", "trainer.run_dir=fresh", "--resume", "fresh"])
    got.rc = 0 if not reasons else got.rc
    return got, reasons


def _kill_after(argv, d: Path, seconds: float) -> int | None:
    import subprocess

    proc = _popen(argv, d, "k")
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


_DURATION: dict[str, float] = {}


def _duration(key: str, argv, d: Path) -> float:
    if key not in _DURATION:
        started = time.monotonic()
        scratch = d / ".attack.timing"
        scratch.mkdir()
        for name in ("data", "wine.yaml"):
            if (d / name).exists():
                (scratch / name).symlink_to(d / name)
        import subprocess

        subprocess.run(argv, cwd=scratch, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        _DURATION[key] = time.monotonic() - started
        shutil.rmtree(scratch)
    return _DURATION[key]


def kill_mid_fit(d: Path, args, fraction: float) -> tuple[Outcome, list[str]]:
    argv = _mmcore_exec() + FIT + ["--run-dir", "out"]
    total = _duration("fit", argv, d)
    started = time.monotonic()
    rc = _kill_after(argv, d, total * fraction)
    reasons = []
    if rc is not None:
        return Outcome(0, "", "", time.monotonic() - started, 0), []  # finished first: nothing to check but the files
    load = run_process(("py", "import mmcore; mmcore.Predictor.load('out')"), d, timeout=120, rss_limit=args.rss_limit,
                       mode=args.mode)
    if load.rc not in (0, 2) or "Traceback" in load.stderr:
        reasons.append(f"Predictor.load after the kill exited {load.rc}: {load.stderr.strip()[-300:]}")
    again = run_process(("cli", FIT + ["--run-dir", "out", "--overwrite"]), d, timeout=300, rss_limit=args.rss_limit, mode=args.mode)
    if again.rc not in (0, 2) or "Traceback" in again.stderr or (again.rc == 2 and len(again.stderr.strip().splitlines()) != 1):
        reasons.append(f"fit again after the kill exited {again.rc}: {again.stderr.strip()[-300:]}")
    if again.rc == 2:
        resume = run_process(("cli", ["train", "out/config.yaml", "--resume", "out"]), d, timeout=300,
                             rss_limit=args.rss_limit, mode=args.mode)
        if resume.rc not in (0, 2) or "Traceback" in resume.stderr:
            reasons.append(f"train --resume after the kill exited {resume.rc}: {resume.stderr.strip()[-300:]}")
        load.stderr += "\n[fit again: " + again.stderr.strip()[-200:] + "] [resume: " + resume.stderr.strip()[-200:] + "]"
    return Outcome(0 if not reasons else 1, "", load.stderr, time.monotonic() - started, load.peak_rss), reasons


def kill_mid_train(d: Path, args, fraction: float) -> tuple[Outcome, list[str]]:
    argv = _mmcore_exec() + ["train", "wine.yaml", "trainer.epochs=6", "trainer.run_dir=fresh"]
    total = _duration("train", argv, d)
    started = time.monotonic()
    if _kill_after(argv, d, total * fraction) is not None:
        return Outcome(0, "", "", time.monotonic() - started, 0), []
    if not (d / "fresh" / "last").exists():  # killed before the first checkpoint: --resume must refuse in one line
        got = run_process(("cli", ["train", "wine.yaml", "trainer.epochs=6", "trainer.run_dir=fresh", "--resume", "fresh"]), d,
                          timeout=300, rss_limit=args.rss_limit, mode=args.mode)
        bad = got.rc != 2 or len(got.stderr.strip().splitlines()) != 1
        return got, [f"--resume of a run killed before its first checkpoint exited {got.rc}: {got.stderr[-300:]}"] if bad else []
    reasons = _load_and_resume(d, args, "fresh", ["train", "wine.yaml", "trainer.epochs=6", "trainer.run_dir=fresh", "--resume", "fresh"])
    return Outcome(0 if not reasons else 1, "", "", time.monotonic() - started, 0), reasons


# ------------------------------------------------------------------------------------------- verdicts

_WARNING = ("Warning:", "warnings.warn(", "  warn(", "UserWarning")


def error_lines(stderr: str) -> list[str]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    keep, skip_next = [], False
    for ln in lines:
        if skip_next:
            skip_next = False
            continue
        if any(w in ln for w in _WARNING):
            skip_next = ln.rstrip().endswith("Warning:") is False and ".py:" in ln  # Python's warning: its source line follows
            continue
        keep.append(ln)
    return keep


def one_line(stderr: str) -> bool:
    """The error is one line ``mmcore <command>: ...`` (or the documented block: that line ending in
    ':' and indented lines under it). What a command reports on stderr before it (fit's column table,
    progress, warnings) is not the error; from Python the harness prints the exception in one line."""
    lines = error_lines(stderr)
    starts = [i for i, ln in enumerate(lines) if re.match(r"^mmcore( [\w-]+)?: ", ln) or re.match(r"^\w+(Error|Exception): ", ln)]
    if len(starts) != 1:
        return False
    rest = lines[starts[0] + 1:]
    return not rest or (lines[starts[0]].rstrip().endswith(":") and all(ln.startswith((" ", "\t")) for ln in rest))


def verdict(case: Case, got: Outcome, touched: list[str], extra: list[str]) -> list[str]:
    reasons = list(extra)
    if touched:
        reasons.append("files outside mmcore's names changed: " + ", ".join(touched[:8]))
    # an allocation refused and reported as the input's fault (exit 2, one line) is the bound working
    if got.memory_killed or (("MemoryError" in got.stderr or "Cannot allocate memory" in got.stderr) and got.rc != 2):
        reasons.append(f"memory unbounded (peak {got.peak_rss / GiB:.1f} GiB)")
    if got.timed_out:
        reasons.append(f"hang: killed after {case.timeout:.0f} s")
    if "Traceback (most recent call last)" in got.stderr:
        reasons.append("traceback")
    if "internal error" in got.stderr:
        reasons.append("internal error")
    if case.custom is None and not got.timed_out and not got.memory_killed:
        due = {"refuse": (2,), "ok": (0,), "either": (0, 2)}[case.expect]
        if got.rc not in due:
            reasons.append(f"exit {got.rc}, expected {' or '.join(map(str, due))}")
        if got.rc == 2 and not one_line(got.stderr):
            reasons.append("the error is not one line")
    return reasons


def run_case(case: Case, base: Path, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="attack-", dir=args.scratch) as tmp:
        d = Path(tmp)
        for need in case.needs:
            if need == "run":
                shutil.copytree(base / "run", d / "run", symlinks=True)
                shutil.copy(base / "wine.yaml", d / "wine.yaml")
                _fix_config(d)
            elif need == "fitrun":
                shutil.copytree(base / "fitrun", d / "fitrun", symlinks=True)
                if not (d / "data").exists():
                    shutil.copytree(base / "data", d / "data", symlinks=True)
            else:
                shutil.copytree(base / need, d / need, symlinks=True, dirs_exist_ok=True)
        victim(d)
        extra: list[str] = []
        failed = _setup_apart(case, d)
        if failed:  # the harness's own fault: reported, not counted as mmcore's
            return {"name": case.name, "kind": case.kind, "surface": case.surface, "verdict": "error",
                    "reasons": [f"setup failed: {failed}"]}
        before = snapshot(d)
        cwd = d / "downloads" if case.kind == "plugin" else d
        if case.custom is not None:
            got, extra = case.custom(d, args)
        else:
            got = run_process(case.target, cwd, timeout=case.timeout, rss_limit=args.rss_limit, mode=args.mode, env=case.env)
        if case.check is not None:
            extra += case.check(d, got)
        after = snapshot(d)
        touched = [p for p in changed(before, after)
                   if (p in case.mine or not _own(p, case.own)) and not p.startswith(".attack")]
        reasons = verdict(case, got, touched, extra)
        err = error_lines(got.stderr)
        return {"name": case.name, "kind": case.kind, "surface": case.surface, "exit": got.rc,
                "one_line": one_line(got.stderr) if got.rc not in (0, None) else None,
                "error": (err[-1] if err else "")[:300], "files_touched": touched, "peak_rss_mib": round(got.peak_rss / MiB),
                "seconds": round(got.seconds, 2), "verdict": "danger" if reasons else "clean", "reasons": reasons,
                **({"stderr_tail": got.stderr[-1500:]} if reasons else {})}


def _setup_apart(case: Case, d: Path) -> str:
    """Run the case's setup in a child of its own: building a 512 MiB cell or an 81-Mpx image in the
    worker would leave that memory resident in every case forked from it afterwards."""
    failure = d / ".attack.setup"
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            case.setup(d)
        except BaseException as exc:  # noqa: BLE001
            failure.write_text(f"{type(exc).__name__}: {exc}")
            code = 1
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
    if failure.exists():
        text = failure.read_text()
        failure.unlink()
        return text or "failed"
    return ""


def _fix_config(d: Path) -> None:
    """The copied run's own config.yaml names its run_dir relative to itself ('.'): nothing to do."""


def _own(rel: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(rel, g) or rel == g.rstrip("/*") for g in globs)


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attack_surface.jsonl"))
    parser.add_argument("--only", action="append", default=[], help="run the cases whose name holds this (repeatable)")
    parser.add_argument("--kind", action="append", default=[], help="run the cases of this kind (repeatable)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--exec", dest="mode", action="store_const", const="exec", default="fork",
                        help="exec a fresh interpreter per case instead of forking from this one")
    parser.add_argument("--rss-limit", type=float, default=3.0, help="GiB: a case above is killed and is a danger")
    parser.add_argument("--work", type=Path, help="fixtures folder (kept; default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run side by side (worker processes)")
    parser.add_argument("--keep", type=Path, help="JSON lines of an earlier (interrupted) run: its cases are kept, not run")
    parser.add_argument("--scratch", type=Path, default=None, help="where each case's temporary folder goes")
    args = parser.parse_args()
    args.rss_limit = int(args.rss_limit * GiB)
    everything = cases()
    chosen = [c for c in everything if (not args.only or any(s in c.name for s in args.only))
              and (not args.kind or c.kind in args.kind)]
    if args.list:
        for c in chosen:
            print(f"{c.kind:10} {c.surface:18} {c.name}")
        print(f"{len(chosen)} cases")
        return 0
    import mmcore.cli  # noqa: F401  (imported once; every forked case starts from here)
    from mmcore.plugin_manager import get_plugin_manager

    get_plugin_manager()
    with contextlib.ExitStack() as stack:
        base = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="attack-base-")))
        base.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        build_fixtures(base.resolve(), args)
        print(f"fixtures ready in {time.monotonic() - started:.0f} s ({base})", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        done = {}
        if args.keep and args.keep.exists():  # an interrupted run's results: kept, its cases not run again
            for line in args.keep.read_text().splitlines():
                row = json.loads(line)
                done[row["name"]] = row
        todo = [c for c in chosen if c.name not in done]
        parts = [args.out.with_name(f".{args.out.name}.{k}") for k in range(args.jobs)]
        workers = []
        for k in range(args.jobs):  # forked before any thread exists: each worker forks its own cases
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    with open(parts[k], "w") as sink:
                        for i, case in enumerate(todo):
                            if i % args.jobs != k:
                                continue
                            row = run_case(case, base.resolve(), args)
                            sink.write(json.dumps(row) + "\n")
                            sink.flush()
                            mark = {"clean": "ok    ", "danger": "DANGER", "error": "ERROR "}[row["verdict"]]
                            print(f"[{i + 1:3}/{len(todo)}] {mark} {row.get('seconds', 0):6.1f}s {row.get('peak_rss_mib', 0):5} MiB"
                                  f"  exit {row.get('exit')}  {case.name}" + (f"\n        {row['reasons']}" if row["reasons"] else ""),
                                  flush=True)
                except BaseException:  # noqa: BLE001
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            workers.append(pid)
        for pid in workers:
            os.waitpid(pid, 0)
        for part in parts:
            for line in part.read_text().splitlines() if part.exists() else []:
                row = json.loads(line)
                done[row["name"]] = row
            part.unlink(missing_ok=True)
        results = [done[c.name] for c in chosen if c.name in done]
        with open(args.out, "w") as sink:
            for row in results:
                sink.write(json.dumps(row) + "\n")
        print(f"{len(results)} of {len(chosen)} cases in {time.monotonic() - started:.0f} s", flush=True)
    summarise(results)
    return 0


def summarise(results: list[dict]) -> None:
    from collections import Counter

    total, clean = Counter(), Counter()
    for r in results:
        total[(r["kind"], r["surface"])] += 1
        clean[(r["kind"], r["surface"])] += r["verdict"] == "clean"
    print(f"\n{'kind':11} {'surface':20} {'cases':>5} {'clean':>5} {'danger':>6}")
    for key in sorted(total):
        print(f"{key[0]:11} {key[1]:20} {total[key]:5} {clean[key]:5} {total[key] - clean[key]:6}")
    n, c = len(results), sum(r["verdict"] == "clean" for r in results)
    kills = [r for r in results if r["kind"] == "kill"]
    touched = sum(len(r.get("files_touched", [])) for r in results)
    print(f"\n{n} cases, {c} clean, {n - c} dangers; kills {sum(r['verdict'] == 'clean' for r in kills)}/{len(kills)}; "
          f"crafted artefacts {sum(r['kind'] == 'crafted' for r in results)}; hostile inputs "
          f"{sum(r['kind'] in ('hostile', 'bomb', 'fifo') for r in results)}; files touched outside mmcore's names: {touched}; "
          f"peak RSS {max((r.get('peak_rss_mib', 0) for r in results), default=0)} MiB")
    for r in results:
        if r["verdict"] != "clean":
            print(f"  {r['verdict']}: {r['name']}: {'; '.join(r['reasons'])}")


if __name__ == "__main__":
    sys.exit(main())
