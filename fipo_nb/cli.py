"""The `fipo-nb` command."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .config import FIPOConfig


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(FIPOConfig(loss=args.loss).validate().to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fipo-nb", description="FIPO training toolkit")
    parser.add_argument("--version", action="version", version=f"fipo_nb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="print the default (official FIPO 32B) algorithm config as JSON")
    config.add_argument("--loss", default="fipo", choices=["fipo", "dapo", "grpo"])
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
