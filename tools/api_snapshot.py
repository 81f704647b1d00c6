"""The public surface of tfod as JSON: ``tfod.__all__``, the signature of every public
function, and the ``--help`` text and the arguments (names, defaults, types, choices) of every
command and sub-command.

``tests/data/api-0.1.0.json`` is this snapshot taken on the release before the restructure
(docs/ARCHITECTURE.md); tests/test_cli.py compares the live surface with it, so a move
that changes a flag, a default or a public signature fails.

Example:
    .venv/bin/python tools/api_snapshot.py > tests/data/api-0.1.0.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    """Each argument's names, default, type, choices and arity: what --help does not show."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        kind = getattr(action.type, "__name__", repr(action.type))
        out.append(f"{'/'.join(action.option_strings) or action.dest} dest={action.dest} "
                   f"default={action.default!r} type={kind} nargs={action.nargs!r} "
                   f"choices={list(action.choices) if action.choices else None} "
                   f"required={action.required} {type(action).__name__}")
    return out


def _helps(parser: argparse.ArgumentParser, prefix: str, out: dict, flags: dict) -> None:
    out[prefix] = parser.format_help()
    flags[prefix] = _flags(parser)
    for action in parser._actions:  # argparse has no public accessor for sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _helps(sub, f"{prefix} {name}", out, flags)


def snapshot() -> dict:
    """``{"all": [...], "signatures": {name: [[parameter, kind, default, annotation]]},
    "help": {"tfod train": text},
    "flags": {"tfod train": [one line per argument]}}`` at a terminal width of 100."""
    os.environ["COLUMNS"] = "100"
    import tfod
    from tfod.cli import build_parser

    signatures = {}
    for name in tfod.__all__:
        value = getattr(tfod, name)
        if callable(value) and not isinstance(value, type):
            signatures[name] = [[p.name, p.kind.name, repr(p.default), str(p.annotation)]
                                for p in inspect.signature(value).parameters.values()]
    helps: dict[str, str] = {}
    flags: dict[str, list[str]] = {}
    _helps(build_parser(), "tfod", helps, flags)
    return {"all": list(tfod.__all__), "signatures": signatures, "help": helps,
            "flags": flags}


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
