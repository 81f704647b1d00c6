"""tfod.cli: fast help listing every command with an example, usage errors, TfodError exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfod import cli


def test_help_lists_commands_with_examples_without_tensorflow():
    code = ("import sys\nfrom tfod import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'noTF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name, (_, example) in cli.COMMANDS.items():
        assert name in out.stdout
        assert example.split()[1] == name
    assert out.stdout.strip().endswith("noTF")


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_command_has_help_with_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["prepare"])
    assert exc.value.code == 2
    assert cli.main([]) == 2


def test_tfod_error_exits_1_without_traceback(tmp_path, capsys):
    code = cli.main(["prepare", str(tmp_path / "missing"), "--name", "x"])
    err = capsys.readouterr().err
    assert code == 1
    assert "annotation folder not found" in err and "Traceback" not in err


def test_config_unknown_template_suggests(tmp_path, capsys):
    code = cli.main(["config", "ssd_mobilenet_v2_tny", "--out", str(tmp_path / "p.config")])
    assert code == 1
    assert "did you mean ssd_mobilenet_v2_tiny" in capsys.readouterr().err


def test_synth_then_prepare_from_the_shell(tmp_path):
    tfod = [sys.executable, "-m", "tfod.cli"]
    subprocess.run(tfod + ["synth", str(tmp_path / "raw"), "--train", "6", "--val", "3"],
                   check=True, capture_output=True)
    out = subprocess.run(tfod + ["prepare", str(tmp_path / "raw"), "--name", "s",
                                 "--out-root", str(tmp_path / "data"),
                                 "--label-maps", str(tmp_path / "lm")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data" / "s" / "train-00000-of-00001.tfrecord").is_file()
    assert (tmp_path / "lm" / "s.pbtxt").is_file()


def test_doctor_passes():
    out = subprocess.run([sys.executable, "-m", "tfod.cli", "doctor"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout
    assert "protobuf backend: upb" in out.stdout
    from importlib import metadata

    tf = metadata.version("tensorflow")
    stack = "tf" + ".".join(tf.split(".")[:2])
    assert f"[ok] stack: {stack} (TensorFlow {tf}, tf-keras " in out.stdout


def test_doctor_stack_check():
    """The stack line of `tfod doctor` (issue 14): a TF / tf-keras pair that does not match
    fails with the fix; a pinned pair is named with its constraints file; a version that
    differs from the pins or an untested TensorFlow is reported."""
    from tfod.diagnostics import stack_check

    name, ok, detail = stack_check({"tensorflow": "2.21.0", "tf-keras": "2.20.1"})
    assert (name, ok) == (None, False)
    assert "pip install 'tf-keras==2.21.*'" in detail and "STACK=tf2.21" in detail
    assert stack_check({"tensorflow": "2.21.0", "tf-keras": "not installed"})[1] is False
    for tf, keras, pins in (("2.20.0", "2.20.1", "constraints.txt"),
                            ("2.21.0", "2.21.0", "constraints-tf2.21.txt")):
        name, ok, detail = stack_check({"tensorflow": tf, "tf-keras": keras})
        assert ok and detail.endswith(f"as pinned in {pins}"), detail
    name, ok, detail = stack_check({"tensorflow": "2.21.3", "tf-keras": "2.21.0"})
    assert ok and "differs from constraints-tf2.21.txt: tensorflow 2.21.3 (pinned 2.21.0)" \
        in detail
    name, ok, detail = stack_check({"tensorflow": "2.22.0", "tf-keras": "2.22.0"})
    assert (name, ok) == (None, True) and "not one of tfod's tested stacks" in detail


def test_python_api_names_match_commands():
    import importlib

    import tfod

    for name in ("prepare_dataset", "patch_pipeline", "train", "evaluate", "export",
                 "predict", "doctor", "demo", "synthesize"):
        module = importlib.import_module(tfod._LAZY[name])
        assert getattr(tfod, name) is getattr(module, name)
        assert callable(getattr(tfod, name))  # a module never shadows the function


def test_every_submodule_imports_by_name_from_the_package():
    """``from tfod.data import annotations`` is the reader module, in a fresh interpreter (a
    ``from __future__ import annotations`` in tfod/__init__.py once bound that name to
    the __future__ feature object instead)."""
    code = ("from tfod.data import annotations, checks, stats; from tfod import config, data; "
            "print(annotations.__name__, checks.__name__, stats.__name__, config.__name__, "
            "data.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tfod.data.annotations", "tfod.data.checks",
                                   "tfod.data.stats", "tfod.config", "tfod.data"]


def test_public_surface_equals_the_release_snapshot():
    """`tfod.__all__`, every public signature and every command's --help text and flags
    equal the snapshot of release 0.1.0 (tests/data/api-0.1.0.json, tools/api_snapshot.py,
    taken on the code before the restructure): a change that renames a flag, changes a
    default or a type, or drops a public name fails here. A public function may only gain
    keyword-only parameters with defaults, a command only the flags in ADDED_FLAGS.
    Run in a subprocess, at the snapshot's terminal width."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "tools" / "api_snapshot.py")],
                         capture_output=True, text=True, check=True, cwd=root)
    live = json.loads(out.stdout)
    release = json.loads((root / "tests" / "data" / "api-0.1.0.json").read_text())
    assert live["all"] == release["all"]
    assert sorted(live["signatures"]) == sorted(release["signatures"])
    for name, params in release["signatures"].items():
        # every parameter of the release as it was, in order; new ones only keyword-only
        # with a default (callers of the release are not affected)
        # (a parameter's type may gain alternatives: "str | Path" -> "str | Path | Sequence")
        kept = [[*live_p[:3], old_p[3]] if live_p[3].startswith(f"{old_p[3]} | ") else live_p
                for live_p, old_p in zip(live["signatures"][name], params)]
        assert kept == params, name
        for added in live["signatures"][name][len(params):]:
            assert added[1] == "KEYWORD_ONLY" and added[2] != "<class 'inspect._empty'>", \
                (name, added)
    assert sorted(live["help"]) == sorted(release["help"])
    for command, text in release["help"].items():
        # every flag of the release as it was, in order; flags added since (listed in
        # ADDED_FLAGS with the issue that added them) only after them
        flags = live["flags"][command]
        added = ADDED_FLAGS.get(command.split(" ")[-1], set())
        grown = GROWN_CHOICES.get(command.split(" ")[-1], set())
        kept = [_release_choices(f, release["flags"][command]) if f.split(" ", 1)[0] in grown
                else f for f in flags if f.split(" ", 1)[0] not in added]
        assert kept == release["flags"][command], command
        if kept == flags:
            assert live["help"][command] == text, command


#: command -> flags added after release 0.1.0 (tests/data/api-0.1.0.json); issue 13 (Speed):
#: --json on the commands that now print a summary instead of their JSON, train --threads
ADDED_FLAGS = {**{c: {"--json"} for c in ("synth", "prepare", "config", "eval", "export",
                                           "predict", "demo")},
               "train": {"--json", "--threads"}}
#: issue 15 (Datasets): prepare reads CVAT and LabelMe polygons as boxes on request
#: and merges several sources, renaming classes; issue 17 (QAT): export --edgetpu and
#: --regular-nms (TFLite post-processing as the checkpoint's, for like-for-like mAP)
ADDED_FLAGS["prepare"] = ADDED_FLAGS["prepare"] | {"--polygons-as-boxes", "--rename"}
ADDED_FLAGS["export"] = ADDED_FLAGS["export"] | {"--edgetpu", "--regular-nms"}
ADDED_FLAGS["train"] = ADDED_FLAGS["train"] | {"--qat-per-tensor"}
#: issue 16 (fit to the data): config --fit-data/--max-size, train --time
ADDED_FLAGS["config"] = ADDED_FLAGS["config"] | {"--fit-data", "--max-size"}
ADDED_FLAGS["train"] = ADDED_FLAGS["train"] | {"--time"}
#: command -> flags whose choices may grow (the release's first, in order) or that may take
#: one or more values where they took one; issue 15: formats, several sources
GROWN_CHOICES = {"prepare": {"--format", "source"}}


def _release_choices(flag: str, release_flags: list[str]) -> str:
    """``flag`` with its choices cut back to the release's, when they begin with them (a
    flag that lost or reordered a choice stays as it is, and the comparison fails), and
    ``nargs='+'`` back to one value."""
    import ast
    import re

    name = flag.split(" ", 1)[0]
    old = next((f for f in release_flags if f.split(" ", 1)[0] == name), None)
    if old is None:
        return flag
    if "nargs=None" in old and "nargs='+'" in flag:
        return flag.replace("nargs='+'", "nargs=None")
    old_text = re.search(r"choices=(\[.*?\])", old).group(1)
    new_text = re.search(r"choices=(\[.*?\])", flag).group(1)
    old_choices, new_choices = ast.literal_eval(old_text), ast.literal_eval(new_text)
    return (flag.replace(new_text, old_text)
            if new_choices[:len(old_choices)] == old_choices else flag)


def test_summary_by_default_json_on_request(tmp_path):
    """A stage command ends with its human summary; the whole result as JSON on stdout
    only with --json (it was printed after every command)."""
    base = [sys.executable, "-m", "tfod.cli", "synth", "--train", "2", "--val", "1",
            "--size", "64"]
    quiet = subprocess.run([*base[:4], str(tmp_path / "a"), *base[4:]], capture_output=True,
                           text=True, check=True)
    assert "{" not in quiet.stdout
    loud = subprocess.run([*base[:4], str(tmp_path / "b"), *base[4:], "--json"],
                          capture_output=True, text=True, check=True)
    assert Path(json.loads(loud.stdout)["out_dir"]) == tmp_path / "b"
    assert "wrote 3 images" in quiet.stderr  # the summary


def test_file_only_records_reach_the_stage_log_not_the_terminal(tmp_path):
    """Records marked layout.FILE_ONLY (pycocotools' printout, the converter's C++ lines)
    go to the stage's log file; the terminal shows the others; -v shows both."""
    code = ("import logging, sys\n"
            "from tfod import cli\n"
            "from tfod.layout import FILE_ONLY, stage_log, printed_to_log\n"
            "cli._setup_logging(len(sys.argv) > 2)\n"
            "log = logging.getLogger('tfod.x')\n"
            "with stage_log(sys.argv[1], 'x'):\n"
            "    log.info('for people')\n"
            "    with printed_to_log(log, 'printed'):\n"
            "        print('raw 12-line summary')\n")
    for verbose in (False, True):
        folder = tmp_path / str(verbose)
        folder.mkdir()
        done = subprocess.run([sys.executable, "-c", code, str(folder), *(["-v"] * verbose)],
                              capture_output=True, text=True, check=True)
        assert "for people" in done.stderr and done.stdout == ""
        assert ("raw 12-line summary" in done.stderr) == verbose
        log_text = (folder / "x.log").read_text()
        assert "for people" in log_text and "raw 12-line summary" in log_text


def test_export_flags_reach_the_files(tiny_run, tmp_path, capsys):
    """``tfod export --edgetpu --regular-nms --max-detections``: the Edge TPU file is written
    beside the asked formats, and every TFLite file records the NMS and detection count it
    was traced with. Caught: --edgetpu not adding the format, --regular-nms or
    --max-detections not passed on (the files fast, 10 detections)."""
    out = tmp_path / "export"
    code = cli.main(["export", str(tiny_run["run_dir"]), "--out", str(out), "--formats",
                     "tflite", "--edgetpu", "--regular-nms", "--max-detections", "7",
                     "--no-eval", "--calibration-images", "4"])
    assert code == 0, capsys.readouterr()
    meta = json.loads((out / "tflite.json").read_text())
    assert set(meta) == {"model_float32.tflite", "model_edgetpu.tflite"}
    assert {(m["nms"], m["max_detections"]) for m in meta.values()} == {("regular", 7)}
