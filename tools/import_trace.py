"""Which installed distributions does a command really import?

Usage::

    python tools/import_trace.py run build/imports -- make test
    python tools/import_trace.py run build/imports -- .venv/bin/tfod demo
    python tools/import_trace.py report build/imports [--python .venv/bin/python]

``run`` puts a ``sitecustomize`` module on ``PYTHONPATH`` for the command and every
Python process it starts (pytest, ``tfod`` subprocesses, spawn workers): at exit each
process appends the top-level names in its ``sys.modules`` to ``<dir>/<pid>.txt``.
``report`` maps the names to distributions (``importlib.metadata``) in the
environment of ``--python`` and prints two lists: distributions imported, and
distributions installed but never imported. The second list is what the lean install
(issue 14) left out of requirements; the first is what it must keep.

A process killed by a signal writes nothing; the commands traced here exit normally
(the train-interrupt tests' children are killed, but the same modules load in the
children that finish).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_SITECUSTOMIZE = '''
import atexit, os, sys

def _tfod_import_trace():
    folder = os.environ.get("TFOD_IMPORT_TRACE")
    if not folder:
        return
    names = sorted({name.split(".")[0] for name in list(sys.modules)})
    try:
        with open(os.path.join(folder, f"{os.getpid()}.txt"), "a") as f:
            f.write("\\n".join(names) + "\\n")
    except OSError:
        pass

atexit.register(_tfod_import_trace)
'''

_REPORT = '''
import json, sys
from importlib import metadata
names = set(json.load(sys.stdin))
owners = metadata.packages_distributions()
imported = sorted({d for n in names for d in owners.get(n, ())}, key=str.lower)
installed = sorted({d.metadata["Name"] for d in metadata.distributions()}, key=str.lower)
print(json.dumps({"imported": imported, "installed": installed}))
'''


def run(folder: Path, command: list[str]) -> int:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="import-trace-") as hook:
        Path(hook, "sitecustomize.py").write_text(_SITECUSTOMIZE)
        env = dict(os.environ, TFOD_IMPORT_TRACE=str(folder))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (hook, env.get("PYTHONPATH")) if p)
        return subprocess.call(command, env=env)


def report(folders: list[Path], python: str) -> dict:
    names: set[str] = set()
    files = [f for folder in folders for f in folder.glob("*.txt")]
    for path in files:
        names.update(line.strip() for line in path.read_text().splitlines() if line.strip())
    out = subprocess.run([python, "-c", _REPORT], input=json.dumps(sorted(names)),
                         capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    unused = [d for d in found["installed"] if d not in set(found["imported"])]
    return {"processes": len(files), "imported": found["imported"], "never_imported": unused}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="run a command with the trace on")
    r.add_argument("folder", type=Path)
    r.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("report", help="distributions imported / never imported")
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--python", default=".venv/bin/python")
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return run(args.folder, command)
    found = report(args.folders, args.python)
    if args.json:
        print(json.dumps(found, indent=1))
    else:
        print(f"{found['processes']} Python processes traced")
        print(f"imported ({len(found['imported'])}): " + " ".join(found["imported"]))
        print(f"never imported ({len(found['never_imported'])}): "
              + " ".join(found["never_imported"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
