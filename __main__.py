"""Command line: `python -m zimage_turbo run|quantize|plan|download …` (see each command's --help).

Every failure ends in one line on stderr and a non-zero exit, never a traceback (ZIT_TRACEBACK=1 shows it for
a failure the tools did not foresee). Only the module of the command being run is imported, so a mistake in a
`run` command is reported without loading torch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# command → module (relative to this package) whose add_parser(sub) declares it
COMMANDS = {"run": ".headless.run", "quantize": ".quant.convert", "plan": ".planner.cli",
            "download": ".downloads.cli"}
EXIT_USAGE, EXIT_FAILURE, EXIT_SIGINT = 2, 1, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the usage itself is in --help)."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser, with only the named command's module imported (all of them for --help or an unknown name)."""
    parser = OneLineParser(prog="python -m zimage_turbo", description="ComfyUI-ZImage-Turbo tools")
    sub = parser.add_subparsers(required=True, metavar="{" + ",".join(COMMANDS) + "}")
    named = [a for a in argv[:1] if a in COMMANDS]
    for name in named or COMMANDS:
        importlib.import_module(COMMANDS[name], __package__).add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors whose message is the whole story (no "unexpected" prefix)."""
    from .headless.server import ServerError
    from .headless.workflow import WorkflowError
    from .loaders.errors import ModelFileError
    from .quant.output_file import OutputFileError
    return ModelFileError, WorkflowError, ServerError, OutputFileError, OSError


def main(argv: list[str] | None = None) -> int:
    # The repo root on sys.path would let the pack's `nodes/` shadow ComfyUI's `nodes` module.
    root = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        result = args.func(args)
    except SystemExit as exc:  # a command's own message (argparse's usage errors carry a number instead)
        if not isinstance(exc.code, str):
            raise
        print(one_line(exc.code), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as exc:
        print(f"error: interrupted ({getattr(exc, 'name', 'SIGINT')})", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_SIGINT)
    except Exception as exc:  # noqa: BLE001 - the command line's boundary: one line, no traceback
        if os.environ.get("ZIT_TRACEBACK"):
            raise
        prefix = "" if isinstance(exc, _user_errors()) else f"unexpected {type(exc).__name__}: "
        print(f"error: {prefix}{one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
