"""`make mutation`: mutmut over tfod's pure-Python modules, then one line with the score.

mutmut 3 reads its settings from setup.cfg ``[mutmut]`` (which files, which tests).
It mutates whole files; the functions that are not pure logic (plots, code that needs
TensorFlow checkpoints, a trained run or a model) are left out here, by name, from
``[tfod:mutation] exclude`` in setup.cfg: their mutants are never run and not counted.
Every other function of the mutated files is run and counted.

The last line printed is ``mutation score: K/N killed (P%)``: K is the mutants a test
caught (it failed, or hung until mutmut's timeout), N every mutant counted, so
survivors and mutants no selected test reaches count against the score.

Example:
    .venv/bin/python tools/mutation.py            # what `make mutation` runs
    .venv/bin/python tools/mutation.py --score    # only print the score of the last run
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).parent / "mutmut"
CAUGHT = ("killed", "timeout")


def _settings() -> tuple[list[str], set[str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    files = config.get("mutmut", "only_mutate").split()
    exclude = set(config.get("tfod:mutation", "exclude", fallback="").split())
    return files, exclude


def _functions(path: Path) -> list[str]:
    """mutmut's name of every top-level function and method: ``x_name``, ``xǁClassǁname``."""
    tree = ast.parse(path.read_text())
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(f"x_{node.name}")
        elif isinstance(node, ast.ClassDef):
            names += [f"xǁ{node.name}ǁ{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return names


def patterns() -> list[str]:
    """fnmatch patterns of the mutants to run: every function of the mutated files whose
    ``module.function`` is not excluded."""
    files, exclude = _settings()
    unknown = set(exclude)
    out = []
    for file in files:
        module = file.removesuffix(".py").replace("/", ".")
        for name in _functions(ROOT / file):
            plain = f"{module}.{name.removeprefix('x_').replace('ǁ', '.').strip('.')}"
            if plain in exclude:
                unknown.discard(plain)
                continue
            out.append(f"{module}.{name}__mutmut_*")
    if unknown:
        raise SystemExit(f"setup.cfg [tfod:mutation] exclude names no function: {sorted(unknown)}")
    return out


def score(included: list[str]) -> int:
    listing = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    status: Counter = Counter()
    for line in listing.splitlines():
        key, sep, result = line.strip().partition(": ")
        if sep and any(fnmatch.fnmatchcase(key, p) for p in included):
            status[result] += 1
    total = sum(status.values())
    caught = sum(status[s] for s in CAUGHT)
    print("mutants: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    print(f"mutation score: {caught}/{total} killed ({100 * caught / max(1, total):.1f}%)")
    return 0 if total else 1


def main(argv: list[str]) -> int:
    included = patterns()
    if "--score" in argv:
        return score(included)
    start = time.monotonic()
    log = ROOT / "mutants" / "run.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as out:
        code = subprocess.call(["nice", "-n", "10", str(MUTMUT), "run", *included], cwd=ROOT,
                               stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text().replace("\r", "\n")
    if code:
        print("\n".join(text.splitlines()[-40:]))
        print(f"mutmut run failed (exit {code}); whole log: {log}")
        return code
    print("\n".join(line for line in text.splitlines() if "done in" in line
                    or "mutations/second" in line))
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    print(f"time: {minutes}m{seconds:02d}s (log: {log.relative_to(ROOT)})")
    return score(included)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
