"""``mmseg-heads``: one console script, one module per subcommand.

Exit status: 0 success; 2 a problem with the user's input (one message naming file, field and
fix, no traceback; ``--debug`` shows it); 1 anything else (our bug: traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys

from mmseg_heads.cli import compare, demo, evaluate, export, inspect, predict, train
from mmseg_heads.errors import UserError

COMMANDS = {
    "demo": demo,
    "inspect": inspect,
    "train": train,
    "evaluate": evaluate,
    "predict": predict,
    "report": compare,
    "export": export,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code for bad arguments is 2, as ours
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mmseg-heads",
        description="Multi-task, multi-modality segmentation: one fusion trunk, one head per task.",
        epilog="Start with `mmseg-heads demo`. Docs: docs/ in the repository.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug works anywhere on the line, not only before the command.
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args, unknown = parser.parse_known_args(argv)
    args.debug = debug
    # Overrides (key=value) may follow options: argparse leaves those after an option unparsed.
    # Likewise inputs of `predict` written after its options.
    for name, wanted in (("overrides", lambda a: "=" in a), ("inputs", lambda a: True)):
        if hasattr(args, name):
            extra = [a for a in unknown if not a.startswith("-") and wanted(a)]
            getattr(args, name).extend(extra)
            unknown = [a for a in unknown if a not in extra]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command].run(args) or 0
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
