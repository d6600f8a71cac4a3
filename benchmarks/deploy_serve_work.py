"""`mmcore serve`'s work per request, stage by stage, in process: CPU time of one thread (load-independent, unlike
wall time), on the demo's test records as the serving benchmark sends them (PNG + WAV + text, multipart).

    python benchmarks/deploy_serve_work.py --path runs/demo

Stages (medians over ``--repeat`` passes of ``--records`` records, microseconds of thread CPU):

* ``form``: the multipart body -> the record (:func:`record_from_form`, on the event loop);
* ``check``: the record's values checked (:meth:`Backend.check` and ``has_input``, on the event loop);
* ``prepare``: decoding and per-record preprocessing (:meth:`Backend.prepare`, in the decoding threads), and each
  slot's share of it;
* ``collate``: each slot's batched half for a micro-batch of ``--batch`` records (the model thread), per record;
* ``forward``: ``backend.predict`` of that batch (collate + forward pass + answers, the model thread), per record,
  and of a single record.

Two checkouts compared: run it with each (``PYTHONPATH`` naming an archive of the other, as benchmarks/RESULTS.md's
serving A/B sections do), alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="runs/demo", help="a run directory (default runs/demo)")
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--batch", type=int, default=17, help="micro-batch size for collate/forward (default 17: "
                                                              "what 32 clients form on 2 cores)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from mmcore.threads import prefer_passive_waits

    prefer_passive_waits()
    import torch

    torch.set_num_threads(1)  # the decoding threads' setting; the model thread's own is --threads (see serve.py)
    from deploy_serve import as_request, demo_records, encode

    from mmcore_plugins.deploy import serve
    from mmcore_plugins.deploy.backends import open_backend

    backend = open_backend(args.path)
    records = demo_records(Path(args.path), args.records)
    bodies = [encode(as_request(r)) for r in records]
    loop = asyncio.new_event_loop()

    class Request:  # what record_from_form reads of a request: its headers and scope
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = {k.lower(): v for k, v in headers.items()}
            self.scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
                          "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

    def form(i: int):
        body, headers = bodies[i]
        return loop.run_until_complete(serve.record_from_form(Request(headers), body, backend))

    forms = [form(i) for i in range(len(bodies))]
    checked = [backend.check(f, "") for f in forms]
    items = [backend.prepare(c) for c in checked]

    def per_record(call, n: int = len(records)) -> float:
        spent = []
        for _ in range(args.repeat):
            for i in range(n):
                began = time.thread_time()
                call(i)
                spent.append(time.thread_time() - began)
        return 1e6 * statistics.median(spent)

    rows = [("form", per_record(form)), ("check", per_record(lambda i: (backend.check(forms[i], ""),
                                                                         backend.has_input(checked[i], ""))))]
    rows.append(("prepare", per_record(lambda i: backend.prepare(checked[i]))))
    steps = getattr(backend, "steps", {})
    processors = getattr(getattr(backend, "model", None), "processors", {})
    for s in backend.slots:
        if s.name in steps:
            decode = steps[s.name][0]
            rows.append((f"  prepare {s.name}", per_record(
                lambda i, s=s, decode=decode: checked[i][s.name] is not None and decode(io.BytesIO(checked[i][s.name])))))
    b = min(args.batch, len(items))
    windows = len(items) - b + 1
    for s in backend.slots:
        collate = steps[s.name][1] if s.name in steps else getattr(processors.get(s.name), "collate", None)
        if collate is not None:
            rows.append((f"collate {s.name} (batch {b}, per record)",
                         per_record(lambda i, c=collate, s=s: c([it[s.name] for it in items[i : i + b]]), windows) / b))
    rows.append((f"forward (batch {b}, per record)", per_record(lambda i: backend.predict(items[i : i + b]), windows) / b))
    rows.append(("forward (batch 1)", per_record(lambda i: backend.predict(items[i : i + 1]))))
    print(f"{args.path}: {len(records)} records x {args.repeat}; median thread CPU per record (us); torch threads 1")
    for name, us in rows:
        print(f"  {name:<40} {us:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
