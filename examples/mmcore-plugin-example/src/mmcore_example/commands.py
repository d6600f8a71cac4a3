"""`mmcore example-words`: a command added by the plugin (hook ``mmcore_add_commands``)."""

from __future__ import annotations

import argparse

import mmcore


def show_words(args: argparse.Namespace) -> int:
    """Print the first ``--count`` samples of a split of ``example_palindromes``."""
    from mmcore_example.palindromes import load_palindromes

    data = load_palindromes(args.split, seed=args.seed)
    for sample in data.samples[: args.count]:
        print(f"{sample['inputs']['text']}\t{data.metadata['classes'][sample['target']]}")
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser("example-words", help="print words of the example_palindromes data set")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=show_words)
