"""``mmcore export`` and ``mmcore serve``, added through the ``mmcore_add_commands`` hook like any plugin's::

    mmcore export runs/demo --format onnx --int8 --out exports/demo     # graph + front end + manifest
    mmcore serve runs/demo                     # the run itself (eager), http://127.0.0.1:8000
    mmcore serve exports/demo --port 8080      # an export (onnxruntime), no training code involved

onnxruntime/onnx come with ``pip install 'mmcore[export]'``, FastAPI/uvicorn with ``'mmcore[serve]'``;
each command says which extra it misses before any work.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import mmcore
from mmcore.errors import ConfigError, ConfigIssue


def _default_out(run_dir: str, fmt: str, int8: bool) -> Path:
    from mmcore_plugins.deploy.export import formats_of

    return Path("exports") / f"{Path(run_dir).resolve().name}-{'-'.join(formats_of(fmt))}{'-int8' if int8 else ''}"


def cmd_export(args: argparse.Namespace, manager) -> int:
    from mmcore.cli import load_run
    from mmcore.engine.checkpoint import resolve_checkpoint
    from mmcore_plugins.deploy.export import ExportError, _sha256, check_options, export_model, int8_warning

    check_options(args.format, args.int8)  # options and extras before loading anything
    out = Path(args.out) if args.out else _default_out(args.run_dir, args.format, args.int8)
    if out.exists() and not args.overwrite:
        raise ExportError(f"--out {str(out)!r} exists; choose a new folder or pass --overwrite")
    model, _ = load_run(args.run_dir, manager, args.checkpoint)
    weights = resolve_checkpoint(Path(args.run_dir) / args.checkpoint) / "model.safetensors"
    source = {"run": str(Path(args.run_dir).resolve()), "checkpoint": args.checkpoint, "weights_sha256": _sha256(weights)}
    started = time.perf_counter()
    columns = manager.hook.mmcore_export_columns(run_dir=Path(args.run_dir))  # a fit run: the user's own columns
    folder = export_model(model, out, fmt=args.format, int8=args.int8, source=source, overwrite=args.overwrite,
                          columns=columns)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    files = manifest["graph"]["files"]
    check = manifest["verification"]
    shown = []
    for kind in files:
        diffs = check.get(kind, {}).get("max_abs_diff", {})
        worst = max((v for k, v in diffs.items() if k != "predictions"), default=0.0)
        shown.append(f"{files[kind]['file']} ({files[kind]['bytes'] / 1e6:.2f} MB, max |eager - graph| {worst:.2g})")
    print(f"exported {args.run_dir} -> {folder} in {time.perf_counter() - started:.0f} s: {'; '.join(shown)}")
    print(f"  inputs: {', '.join(i['name'] for i in manifest['inputs'])}")
    if manifest.get("columns"):
        print(f"  columns (the training table's; derived ones are derived again): "
              f"{', '.join(manifest['columns'].get('input_columns', []))}")
    print(f"  outputs: {', '.join(o['name'] for o in manifest['outputs'])}; front end: {folder / 'frontend.py'}")
    warning = int8_warning(check)
    if warning:
        print(f"  {warning}")
    return 0


def cmd_serve(args: argparse.Namespace, manager) -> int:
    missing = [m for m in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(m) is None]  # python-multipart >= 0.0.13
    if missing:
        raise ConfigError([ConfigIssue("", f"mmcore serve needs {', '.join(missing)}: pip install 'mmcore[serve]'")])
    issues = []
    workers = None  # auto: chosen once the model's size is known
    if str(args.workers).strip().lower() != "auto":
        try:
            workers = int(args.workers)
        except ValueError:
            workers = 0
        if workers < 1:
            issues.append(ConfigIssue("--workers", f"must be a positive int or auto, got {args.workers}"))
    for name in ("max_batch", "max_queue", "max_records", "prepare_threads", "batch_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            issues.append(ConfigIssue(f"--{name.replace('_', '-')}", f"must be a positive int, got {getattr(args, name)}"))
    if args.window_ms < 0:
        issues.append(ConfigIssue("--window-ms", f"must be >= 0, got {args.window_ms}"))
    if args.max_body_mb <= 0:
        issues.append(ConfigIssue("--max-body-mb", f"must be positive, got {args.max_body_mb}"))
    if not 0 <= args.port <= 65535:
        issues.append(ConfigIssue("--port", f"must be in 0..65535, got {args.port}"))
    if issues:
        raise ConfigError(issues)
    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import listen_socket, serve

    sock = listen_socket(args.host, args.port)  # a port in use: one line, exit 2, before the model is loaded
    port = sock.getsockname()[1]  # --port 0: the free port the OS chose
    threads, why = args.threads, "--workers"
    if workers is None:  # a process per CPU core, each on its own thread (measured: benchmarks/RESULTS.md, Deploy)
        from mmcore.threads import usable_cpus

        cpus = usable_cpus()
        workers = auto_workers(cpus, model_bytes(Path(args.path), args.graph), available_memory())
        if threads is None and workers > 1:
            threads = max(1, cpus // workers)
        why = f"auto: {cpus} CPU cores"
    options = {"path": str(args.path), "graph": args.graph, "threads": threads, "max_batch": args.max_batch,
               "window_ms": args.window_ms, "max_queue": args.max_queue, "max_body_bytes": int(args.max_body_mb * 2**20),
               "max_records": args.max_records, "prepare_threads": args.prepare_threads, "batch_threads": args.batch_threads}
    try:
        backend = open_backend(args.path, manager, graph=args.graph)  # a bad path or damaged run: one line, exit 2, now
        del backend
    except BaseException:
        sock.close()
        raise
    shape = f"{workers} process{'es' if workers > 1 else ''}" + (f" x {threads} thread{'s' if threads > 1 else ''}" if threads else "")
    print(f"mmcore serve: {args.path} on http://{args.host}:{port} (page /, API /predict, docs /docs; {shape}, {why})",
          flush=True)
    serve(options, workers=workers, host=args.host, port=port, log_level=args.log_level, sock=sock)
    return 0


#: most server processes ``--workers auto`` starts (each holds the model and a Python runtime)
AUTO_MAX_WORKERS = 4
#: what one server process costs besides its model: the interpreter, PyTorch / onnxruntime, FastAPI
PROCESS_BYTES = 512 * 2**20


def auto_workers(cpus: int, model_bytes: int, available_bytes: int | None) -> int:
    """``--workers auto``: one server process per CPU core (each batching on its own, with one intra-op
    thread), at most :data:`AUTO_MAX_WORKERS`, and no more than half the available memory holds at
    :data:`PROCESS_BYTES` + 3x the model's files a process; at least 1. On 2 cores the demo served 3.3-3.9x its
    one-at-a-time rate under 32 clients with two processes, 2.5-3.1x with one: a process's single model
    thread is what caps it (benchmarks/RESULTS.md, "Deploy, session 11")."""
    workers = max(1, min(cpus, AUTO_MAX_WORKERS))
    if available_bytes is not None:
        workers = min(workers, max(1, (available_bytes // 2) // (PROCESS_BYTES + 3 * max(0, model_bytes))))
    return workers


def model_bytes(path: Path, graph: str | None = None) -> int:
    """The size of what each server process loads: a run's ``best/model.safetensors``, or an export's graph
    (``graph``, else every ``.onnx`` / ``.pt2`` file of the folder: an upper bound)."""
    weights = path / "best" / "model.safetensors"
    if weights.is_file():
        return weights.stat().st_size
    if graph and (path / graph).is_file():
        return (path / graph).stat().st_size
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".onnx", ".pt2") and f.is_file()) if path.is_dir() else 0


def available_memory() -> int | None:
    """Bytes of memory available to new processes now (psutil), None where it cannot be told."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 -- no psutil here: the CPU count alone decides
        return None


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run as one self-contained folder: ONNX or torch.export graph, "
                                             "optional int8, numpy front end, manifest")
    p.add_argument("run_dir", help="a run directory written by `mmcore train` (or `mmcore fit`)")
    p.add_argument("--format", default="onnx", help="onnx (onnxruntime; default), pt2 (torch.export, loaded with "
                                                    "torch), or both: onnx,pt2 (one torch.export, two graphs; the "
                                                    "first is the default)")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 weights; onnx only) "
                                                       "and make it the export's default graph")
    p.add_argument("--out", metavar="DIR", help="a new folder (default: exports/<run>-<format>[-int8])")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (never anything else)")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser("serve", help="serve a run or an export over HTTP: JSON API, web page, micro-batching")
    p.add_argument("path", help="a run directory (eager model) or an export folder (mmcore export)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", default="auto", help="server processes, each with the model and its own micro-batching: "
                                                     "auto (default: one per CPU core, at most 4, as memory allows) or N")
    p.add_argument("--threads", type=int, help="intra-op threads per process (default: with auto workers, the cores "
                                               "shared among them; else the library's)")
    p.add_argument("--graph", metavar="FILE", help="an export's other graph file (e.g. model.onnx beside model.int8.onnx)")
    p.add_argument("--max-batch", type=int, default=64, help="most records per model call (micro-batching; default 64)")
    p.add_argument("--window-ms", type=float, default=0.0, help="how long a batch may wait for requests still being decoded "
                                                                "(default 0: a batch runs as soon as the model is free, "
                                                                "with every request that arrived meanwhile)")
    p.add_argument("--prepare-threads", type=int, help="threads decoding and preprocessing requests (default: one per "
                                                       "usable CPU, at most 4)")
    p.add_argument("--batch-threads", type=int, help="threads running parts of a large batch at once, a run directory's "
                                                     "eager model only (default 1: one model call per batch; parts "
                                                     "measured no faster on 2 cores)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting for the model before 503 (default 256)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, uploads included (default 32)")
    p.add_argument("--max-records", type=int, default=256, help="most records in one JSON request (default 256)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=cmd_serve)
