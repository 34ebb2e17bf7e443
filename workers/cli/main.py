"""`arena`: the command line of arena-pref (run through scripts/arena, in the worker environment).

The commands live by group: predict.py (predict, calibrate, evaluate, leaderboard), train.py (split, train, stack,
synth), setup.py (setup-model, setup-default); this module builds the parser and runs one command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from shared.errors import UserError
from workers.cli import predict, setup, train

# A command line names its own files and options: beside UserError (what the jobs fail on at once), a bad value
# or a missing path given here is the user's to fix too.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, ValueError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Pairwise preference judge (A / B / tie).")
    parser.add_argument("-v", "--verbose", action="store_true", help="show engine logs")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (
        predict.add_predict,
        predict.add_calibrate,
        predict.add_evaluate,
        predict.add_leaderboard,
        train.add_split,
        setup.add_setup_model,
        train.add_train,
        train.add_stack,
        train.add_synth,
    ):
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workers.common.hardware import prepare_process_environment

    prepare_process_environment()  # before any command imports torch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from shared.settings import get_settings

    try:
        settings = get_settings()
        summary = args.handler(args, settings)
    except USER_ERRORS as exc:
        print(f"arena {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0
