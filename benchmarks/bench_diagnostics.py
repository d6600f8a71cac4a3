"""What the imbalance diagnostics (mmcore/engine/diagnostics.py, on in every run) cost on the demo.

    python benchmarks/bench_diagnostics.py            # configs/demo.yaml's model and data

Two costs: (1) per optimiser step, the gradient-norm share (``torch._foreach_norm`` over each
encoder's gradients, summed on the device): the demo's training step timed with and without the
diagnostics attached, alternating in blocks on the same batches (one untimed step, then
``--steps`` timed ones; medians over ``--rounds`` rounds), and the hook alone timed on one step's
real gradients (100 calls); (2) once per run, the probes and the
subsets on the val split (:func:`mmcore.engine.diagnostics.modality_report`), timed beside one
validation pass (:meth:`Trainer.evaluate`), and set against a demo run's length.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mmcore.engine.config import load_config
    from mmcore.engine.diagnostics import ImbalanceDiagnostics, modality_report
    from mmcore.engine.loggers import attached_plugins
    from mmcore.engine.trainer import Trainer

    config = load_config(ROOT / "configs" / "demo.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        config["trainer"].update(run_dir=str(Path(tmp) / "run"), progress=False, diagnostics=False)
        trainer = Trainer(config)
        trainer.setup()
        loader = trainer.train_loader(1)
        batches = [batch for _, batch in zip(range(args.steps + 1), loader, strict=False)]

        def steps(with_diagnostics: bool) -> list[float]:
            plugins = [("diagnostics", ImbalanceDiagnostics())] if with_diagnostics else []
            with attached_plugins(trainer.manager, plugins):
                trainer.begin_epoch(1)
                trainer.train_step(batches[0])
                times = []
                for batch in batches[1:]:
                    start = time.perf_counter()
                    trainer.train_step(batch)
                    times.append(1000 * (time.perf_counter() - start))
            return times

        plain, diag = [], []
        for _ in range(args.rounds):
            plain.append(statistics.median(steps(False)))
            diag.append(statistics.median(steps(True)))
        p, d = statistics.median(plain), statistics.median(diag)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
        print(f"training step (batch {config['trainer']['batch_size']}): {p:.1f} ms without, {d:.1f} ms with the gradient "
              f"shares: {100 * (d / p - 1):+.1f}% (rounds: {', '.join(f'{b / a - 1:+.1%}' for a, b in zip(plain, diag, strict=True))})")
        # The hook alone, on a step's real gradients: robust to a loaded machine, unlike the ratio above.
        trainer.begin_epoch(1)
        trainer.forward_backward(batches[0])
        hook = ImbalanceDiagnostics()
        hook.mmcore_before_optimizer_step(trainer)
        start = time.perf_counter()
        for _ in range(100):
            hook.mmcore_before_optimizer_step(trainer)
        per_call = 1000 * (time.perf_counter() - start) / 100
        print(f"the gradient-share hook alone: {per_call:.3f} ms per step = {100 * per_call / p:.2f}% of the step")
        trainer.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        trainer.evaluate(trainer.datasets["val"])
        validation = time.perf_counter() - start
        start = time.perf_counter()
        modality_report(trainer.model, trainer.datasets["val"], batch_size=config["trainer"]["batch_size"])
        report = time.perf_counter() - start
        print(f"end of run, val split ({len(trainer.datasets['val'])} samples): probes + subsets {report:.2f} s, "
              f"one validation pass {validation:.2f} s ({report / validation:.2f}x); the run validates "
              f"{config['trainer']['epochs']} times")
        trainer.rundir.release()


if __name__ == "__main__":
    main()
