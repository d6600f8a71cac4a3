"""`mmcore embed` and `mmcore search`: vectors out of a trained run, and their nearest neighbours.

Added to the command line through the ``mmcore_add_commands`` hook, as any plugin can::

    mmcore embed RUN --out emb.parquet                          # the run's test split
    mmcore embed RUN --data rows.csv --out emb.npz --index gallery.faiss --vector head.image
    mmcore search RUN --index gallery.faiss --query spoken_7.wav -k 5
    mmcore search RUN --index gallery.faiss --query "sieben" --json

What a query is compared with follows the index's vector (its sidecar says which): a ``fused``
index is searched with the query's fused vector (the query's modality alone, others missing);
a ``head.<slot>`` index (contrastive runs) with the query's modality in the head's shared space
-- cross-modal search; a ``<slot>`` index only with a query of that slot (encoders' own
spaces are not comparable across modalities).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import mmcore
from mmcore.cli_predict import declared_missing, note_unseen
from mmcore.errors import ConfigError, ConfigIssue


def _load(args: argparse.Namespace, manager):
    from mmcore.cli import load_run
    from mmcore.engine.checkpoint import resolve_checkpoint

    model, config = load_run(args.run_dir, manager, args.checkpoint)
    return model, config, resolve_checkpoint(Path(args.run_dir) / args.checkpoint)


def default_vector(names: list[str]) -> str:
    """``head.<last slot>`` when the head has a shared space (the gallery of an a->b search), else ``fused``."""
    head = [n for n in names if n.startswith("head.")]
    return head[-1] if head else "fused"


def _positive(args: argparse.Namespace, *options: str) -> None:
    """Each ``--option`` given must be an integer >= 1 (ConfigError naming it, before any work)."""
    for option in options:
        value = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if value is not None and value < 1:
            raise ConfigError([ConfigIssue(option, f"expected a positive integer, got {value}")])


def _check_index_outputs(index: Path, overwrite: bool) -> None:
    from mmcore_plugins.retrieval.index import is_index_sidecar

    sidecar = index.with_name(index.name + ".json")
    if index.is_dir():
        raise ConfigError([ConfigIssue("--index", f"{index} is a folder, expected a file")])
    if (index.exists() or index.is_symlink()) and not overwrite:
        raise ConfigError([ConfigIssue("--index", f"{index} exists; pass --overwrite to replace it, or choose another name")])
    if (sidecar.exists() or sidecar.is_symlink()) and (sidecar.is_symlink() or not is_index_sidecar(sidecar)):
        raise ConfigError([ConfigIssue("--index", f"{sidecar} exists and is not an index sidecar mmcore wrote; it is left "
                                                  "as it is (move it, or choose another --index)")])


def cmd_embed(args: argparse.Namespace, manager) -> int:
    from mmcore_plugins.retrieval.embedding import (
        check_format,
        check_outputs,
        describe,
        embed,
        finite_rows,
        manifest_rows,
        repeated_ids,
        split_rows,
        write_embeddings,
    )

    out = Path(args.out)
    check_format(out)  # before any work
    _positive(args, "--batch-size", "--nlist", "--nprobe")
    if args.index is not None and args.index_type not in ("auto", "flat", "ivf", "hnsw"):
        raise ConfigError([ConfigIssue("--index-type", f"expected auto, flat, ivf or hnsw, got {args.index_type!r}")])
    check_outputs(out, [], overwrite=args.overwrite)  # the output itself; its other files once their names are known
    if args.index is not None:
        _check_index_outputs(Path(args.index), args.overwrite)
    if args.data is None:  # the run's own split: one with no rows is said before the model is built
        from mmcore.cli import check_split

        check_split(args.run_dir, args.split or "test", alternative="--data MANIFEST")
    model, config, checkpoint = _load(args, manager)
    if args.data is not None:
        if args.split is not None:
            raise ConfigError([ConfigIssue("--split", "give either --data MANIFEST or --split of the run's data, not both")])
        missing = declared_missing(args.missing)
        samples, ids, targets = manifest_rows(model, config, args.data, id_column=args.id_column, target=args.target,
                                              manager=manager, run_dir=args.run_dir, missing=missing, strict=args.strict)
        source = str(args.data)
    else:
        from mmcore.engine.trainer import load_datasets

        split = args.split or "test"
        dataset = load_datasets(config, manager, splits=(split,))[split]
        samples, ids, targets = split_rows(dataset, split)
        source = f"{config['data'].get('name')} split {split}"
    if not samples:
        raise ConfigError([ConfigIssue("--data" if args.data else "--split", f"{source} holds no rows to embed")])
    note_unseen(model, (sample["inputs"] for sample in samples), "embed")  # embedded all the same, and said
    try:
        vectors = embed(model, samples, batch_size=args.batch_size)
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue("--data" if args.data else "--split", f"{source}: {exc}")]) from exc
    check_outputs(out, list(vectors), overwrite=args.overwrite)  # every file, before the first is written
    index = None
    if args.index is not None:  # built before anything is written: a bad --nlist leaves no half output
        from mmcore_plugins.retrieval.index import build_index, weights_digest

        vector = args.vector or default_vector(list(vectors))
        if vector not in vectors:  # a fit run's column names its slot's vector (``Customer Review``, ``head.Photo``)
            vector = _slot_vector(vector, _column_slots(manager, args.run_dir))
        if vector not in vectors:
            raise ConfigError([ConfigIssue("--vector", f"unknown vector {vector!r}; this model gives {sorted(vectors)}")])
        keep = finite_rows(vectors[vector])
        if not keep.any():
            raise ConfigError([ConfigIssue("--vector", f"no row of {source} has the modality of {vector!r}")])
        if args.nlist is not None and args.nlist > int(keep.sum()):
            raise ConfigError([ConfigIssue("--nlist", f"{args.nlist} cells for {int(keep.sum())} vectors; an IVF index has "
                                                      "at most one cell per vector")])
        index, settings = build_index(vectors[vector][keep], kind=args.index_type, nlist=args.nlist, nprobe=args.nprobe)
        kept_ids = [i for i, k in zip(ids, keep, strict=True) if k]
        kept_rows = [n for n, k in enumerate(keep, start=1) if k]  # a repeated id's hits stay told apart
        kept_targets = None if targets is None else [t for t, k in zip(targets, keep, strict=True) if k]
        meta = {"vector": vector, **settings, "ids": kept_ids, "rows": kept_rows, "targets": kept_targets, "embeddings": str(out),
                "run": str(Path(args.run_dir).resolve()), "checkpoint": args.checkpoint,
                "weights_sha256": weights_digest(checkpoint)}
    files = write_embeddings(out, vectors, ids, targets, overwrite=args.overwrite)
    print(f"embedded {len(ids)} rows of {source}: {describe(vectors)}")
    repeated = repeated_ids(ids)
    if repeated:  # kept (several photos of one product share its id), never silently
        shown = "; ".join(f"{value!r} rows {', '.join(map(str, rows[:5]))}" for value, rows in list(repeated.items())[:5])
        print(f"note: {len(repeated)} id(s) repeat, each row kept under its id: {shown}"
              + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""), file=sys.stderr)
    print(f"wrote {', '.join(str(f) for f in files)}")
    if index is not None:
        from mmcore_plugins.retrieval.index import save_index

        path, sidecar = save_index(args.index, index, meta, overwrite=args.overwrite)
        skipped = len(ids) - len(kept_ids)
        print(f"index {path} ({settings['kind']}, {len(kept_ids)} vectors of {vector!r}"
              + (f", {skipped} rows lacking it left out" if skipped else "") + f") + {sidecar.name}")
    return 0


def parse_query(query: str, model, manager=None, run_dir: str | Path | None = None) -> tuple[str, Any]:
    """``(slot, raw)`` for ``--query``: ``slot=value`` (``column=value`` for a run whose plugin maps the
    user's own columns, ``mmcore fit``'s: read as ``mmcore predict`` reads one record), a file (modality
    from its extension) or text. A file given for a slot is what a plugin reads from it (hook
    ``mmcore_file_input``: a text file's contents, as training read them), else its path.

    Raises:
        ConfigError: a path-like query naming no file, an extension no slot reads, or text for a
            model without a text slot.
    """
    from mmcore.cli import EXTENSION_MODALITY
    from mmcore.cli_predict import _file_input, _is_file

    slots = model.slots
    modality_of = {s: getattr(model.encoders[s], "modality", None) for s in slots}
    slot, sep, value = query.partition("=")
    if sep and manager is not None and run_dir is not None:
        try:
            record = manager.hook.mmcore_record_inputs(items=[query], run_dir=Path(run_dir), model=model)
        except ValueError as exc:
            plan = manager.hook.mmcore_export_columns(run_dir=Path(run_dir)) or {}
            if slot in plan.get("input_columns", ()) or "did you mean" in str(exc) and slot not in slots:
                # the user's column with a value that cannot be used, or a misspelt one: not text holding '='
                raise ConfigError([ConfigIssue("--query", str(exc))]) from exc
            record = None  # not one of the run's columns: read below (a slot, or text holding '=')
        if record:
            # The slot the query fills: named, or the one it changes from a record with no column given
            # (a slot of numbers is present even then: its training medians).
            empty = manager.hook.mmcore_record_inputs(items=[], run_dir=Path(run_dir), model=model) or {}
            filled = [slot] if slot in record else [s for s in record if s not in empty or empty[s] != record[s]]
            if len(filled) != 1:
                raise ConfigError([ConfigIssue("--query", f"{query!r} fills {len(filled)} slots; a query is one")])
            return filled[0], record[filled[0]]
    if sep and slot in slots:
        return slot, _file_input(manager, value, modality_of[slot]) if _is_file(value) else value
    suffix = Path(query).suffix.lower() if len(query) < 4096 and "\n" not in query else ""
    if _is_file(query):
        modality = EXTENSION_MODALITY.get(suffix)
        matches = [s for s in slots if modality_of[s] == modality]
        if modality is None or len(matches) != 1:
            raise ConfigError([ConfigIssue("--query", f"cannot tell which of the model's slots {slots} reads {query!r} "
                                                      f"(extension {suffix or '(none)'}); write slot={query}")])
        return matches[0], _file_input(manager, query, modality)
    if suffix in EXTENSION_MODALITY and EXTENSION_MODALITY[suffix] != "text" and " " not in query:
        raise ConfigError([ConfigIssue("--query", f"file {query!r} does not exist")])
    texts = [s for s in slots if modality_of[s] == "text"]
    if len(texts) != 1:
        raise ConfigError([ConfigIssue("--query", f"{query!r} is not a file, and the model has "
                                                  f"{'no text slot' if not texts else f'several text slots {texts}'} "
                                                  f"to read it as text (slots: {slots}); give a file or slot=value")])
    return texts[0], query


def _column_slots(manager, run_dir: str | Path) -> dict[str, str]:
    """``{user's column: slot}`` of a run whose plugin names one-column slots from the user's columns
    (hook ``mmcore_export_columns``: ``mmcore fit``'s ``"Customer Review"`` -> ``customer_review``); {} otherwise."""
    plan = manager.hook.mmcore_export_columns(run_dir=Path(run_dir)) or {}
    slots = plan.get("slots") if isinstance(plan, dict) else None
    return {spec["column"]: slot for slot, spec in (slots or {}).items() if isinstance(spec, dict) and "column" in spec}


def _slot_vector(vector: str, by_column: dict[str, str]) -> str:
    """``--vector`` naming a user's column (or ``head.<column>``) -> its slot's vector name; else as given."""
    prefix = "head." if vector.startswith("head.") and vector[5:] in by_column else ""
    return prefix + by_column[vector[len(prefix):]] if vector[len(prefix):] in by_column else vector


def query_vector_name(index_vector: str, slot: str, model) -> str:
    """Which of the query's vectors is comparable with an index of ``index_vector``."""
    if index_vector == "fused":
        return "fused"
    if index_vector.startswith("head."):
        head_slots = list(getattr(model.head, "slots", []))
        if slot not in head_slots:
            raise ConfigError([ConfigIssue("--query", f"the index holds {index_vector!r} (the head's shared space of "
                                                      f"{head_slots}); a {slot!r} query has no vector there")])
        return f"head.{slot}"
    if index_vector != slot:
        raise ConfigError([ConfigIssue("--query", f"the index holds the {index_vector!r} encoder's own vectors; a {slot!r} "
                                                  "query is not comparable with them (index 'fused' or a head.<slot> "
                                                  "vector for cross-modal search)")])
    return slot


def cmd_search(args: argparse.Namespace, manager) -> int:
    import numpy as np

    from mmcore_plugins.retrieval.embedding import embed
    from mmcore_plugins.retrieval.index import load_index, search, weights_digest

    if args.k < 1:
        raise ConfigError([ConfigIssue("-k", f"expected a positive number of neighbours, got {args.k}")])
    _positive(args, "--nprobe")
    index, meta = load_index(args.index)
    model, _, checkpoint = _load(args, manager)
    if meta.get("weights_sha256") and meta["weights_sha256"] != weights_digest(checkpoint):
        raise ConfigError([ConfigIssue("--index", f"{args.index} was built from another model's vectors "
                                                  f"(run {meta.get('run')}, checkpoint {meta.get('checkpoint')}); "
                                                  f"rebuild it with mmcore embed {args.run_dir} ... --index {args.index}")])
    try:
        slot, raw = parse_query(args.query, model, manager, args.run_dir)
    except ValueError as exc:  # a file the query names that cannot be read (e.g. a text file not in UTF-8)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError([ConfigIssue("--query", str(exc))]) from exc
    name = query_vector_name(meta["vector"], slot, model)
    try:
        vectors = embed(model, [{slot: raw}])
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError([ConfigIssue("--query", f"{args.query!r}: {exc}")]) from exc
    query = vectors[name]
    if not np.isfinite(query).all():
        raise ConfigError([ConfigIssue("--query", f"the model gives no {name!r} vector for a {slot!r} query")])
    scores, positions = search(index, query, args.k, nprobe=args.nprobe)
    ids, targets = meta["ids"], meta.get("targets")
    # an id several rows share is never silently ambiguous: each hit also names its row of the embedded table
    rows = meta.get("rows") if isinstance(meta.get("rows"), list) and len(meta["rows"]) == len(ids) else None
    hits = [{"rank": r + 1, "id": ids[p], **({"row": rows[p]} if rows else {}), "score": round(float(s), 6),
             **({"target": targets[p]} if targets else {})}
            for r, (s, p) in enumerate(zip(scores[0], positions[0], strict=True)) if p >= 0]
    shared = sorted({str(h["id"]) for h in hits if ids.count(h["id"]) > 1})
    column = {v: k for k, v in _column_slots(manager, args.run_dir).items()}.get(slot)  # a fit run: the user's column
    if args.json:
        print(json.dumps({"query": args.query, "slot": slot, **({"column": column} if column else {}), "vector": meta["vector"],
                          "kind": meta["kind"], "neighbours": hits}, ensure_ascii=False))
        return 0
    print(f"query {args.query!r} ({column or slot}) against {meta['count']} {meta['vector']!r} vectors ({meta['kind']} index)")
    width = max([len("id"), *(len(str(h["id"])) for h in hits)])
    print(f"{'rank':>4}  {'id':<{width}}  {'score':>7}" + ("  target" if targets else ""))
    for h in hits:
        print(f"{h['rank']:>4}  {str(h['id']):<{width}}  {h['score']:7.4f}" + (f"  {h['target']}" if targets else "")
              + (f"  (row {h['row']})" if "row" in h and str(h["id"]) in shared else ""))
    if shared:
        print(f"note: id(s) {', '.join(map(repr, shared))} belong to several rows of the index; each hit names its row")
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    p = subparsers.add_parser("embed", help="write a run's per-modality and fused vectors (+ row ids) to Parquet/.npz/.npy; "
                                            "optionally a FAISS index")
    p.add_argument("run_dir", help="a run directory written by `mmcore train` or `mmcore fit`")
    p.add_argument("--data", metavar="MANIFEST", help="a CSV/JSONL manifest with the run's input columns "
                                                      "(default: --split of the run's own data)")
    p.add_argument("--split", choices=["train", "val", "test"], help="split of the run's data set (default: test)")
    p.add_argument("--out", required=True, metavar="FILE", help="output: .parquet, .npz, or .npy (+ sidecar)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out / --index (and the files mmcore wrote beside them; never another file)")
    p.add_argument("--id-column", help="manifest column of row ids (default: 'id' if present, else the row number)")
    p.add_argument("--target", help="manifest column of targets kept beside the vectors (default: the run's, or 'label')")
    p.add_argument("--missing", action="append", default=[], metavar="COLUMN",
                   help="a column the model reads that the --data table lacks on purpose: its slot is a missing "
                        "modality in every row (repeatable, or comma-separated); any other absent column is an error")
    p.add_argument("--strict", action="store_true",
                   help="a missing or unreadable file in --data is an error instead of a missing modality")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--index", metavar="FILE", help="also build a FAISS index of one vector (+ FILE.json sidecar)")
    p.add_argument("--vector", help="vector to index: fused, a slot, or head.<slot> (a fit run: also your column, "
                                    "head.<column>; default: the head's last shared-space vector, else fused)")
    p.add_argument("--index-type", default="auto", help="auto (flat below 100k vectors, else ivf), flat, ivf or hnsw")
    p.add_argument("--nlist", type=int, help="IVF cells (default 4*sqrt(N))")
    p.add_argument("--nprobe", type=int, help="IVF cells scanned per query (default nlist/16, at least 16)")
    p.set_defaults(handler=cmd_embed)

    p = subparsers.add_parser("search", help="nearest neighbours of a query (file or text) in a FAISS index built by embed")
    p.add_argument("run_dir", help="the run whose vectors the index holds")
    p.add_argument("--index", required=True, metavar="FILE", help="index written by mmcore embed --index")
    p.add_argument("--query", required=True, help="an image/audio file (modality from its extension), text, or slot=value")
    p.add_argument("-k", type=int, default=5, help="neighbours to return (default 5)")
    p.add_argument("--nprobe", type=int, help="IVF cells to scan (default: the index's)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_search)
