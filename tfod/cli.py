"""``tfod`` command line: parses arguments and calls one library function each.

Nothing here imports TensorFlow at module level, so ``tfod --help`` is instant.
Exit codes: 0 success, 1 failure (a TfodError, printed without a traceback),
2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tfod.data.annotations import FORMATS

COMMANDS = {
    "synth": ("write a seeded synthetic dataset (shapes on textures) in Pascal VOC layout",
              "tfod synth data/demo/voc --train 300 --val 60 --size 160"),
    "prepare": ("annotations -> checked, split, sharded TFRecords + label map",
                "tfod prepare data/raw/voc --format voc --name pets"),
    "config": ("write a pipeline.config from a template, patched for a dataset",
               "tfod config ssd_mobilenet_v2_tiny --data data/pets --steps 2000 "
               "--out runs/pets/pipeline.config"),
    "train": ("train with the OD API's loop; exact steps, checkpoint at the end",
              "tfod train runs/pets/pipeline.config --run pets"),
    "eval": ("COCO mAP, per-class AP, PR curves of a run's latest (--all, --watch) checkpoints",
             "tfod eval runs/pets"),
    "export": ("SavedModel, frozen graph, TFLite (float32/fp16/dynamic/int8) into "
               "exports/<run>/, each scored on the val split (report.md)",
               "tfod export runs/pets --formats all"),
    "predict": ("detect objects in images with an exported model",
                "tfod predict photos/ --model exports/pets/saved_model --out predictions"),
    "doctor": ("check the installation: versions, devices, compat shims, a tiny model",
               "tfod doctor"),
    "demo": ("the whole path offline on a synthetic dataset",
             "tfod demo --steps 2000"),
    "tensorboard": ("TensorBoard over the runs folder, on 127.0.0.1; --ngrok for a tunnel",
                    "tfod tensorboard --logdir runs --port 6006"),
    "runs": ("table of runs (model, batch, steps, loss, mAP, duration); diff A B of configs",
             "tfod runs diff pets_b8 pets_b16"),
    "zoo": ("TF2 Detection Zoo models: list, info, verified download, install from a file",
            "tfod zoo download ssd_mobilenet_v2_fpnlite_320"),
}


#: commands that end with their own human summary (logged): the full result only with --json
SUMMARISED = ("synth", "prepare", "config", "train", "eval", "export", "predict", "demo")


def _add(sub, name: str) -> argparse.ArgumentParser:
    help_text, example = COMMANDS[name]
    parser = sub.add_parser(name, help=f"{help_text}  (e.g. {example})", description=help_text,
                            epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    if name in SUMMARISED:
        parser.add_argument("--json", action="store_true",
                            help="also print the whole result as JSON on stdout (for scripts)")
    return parser


def _ratios(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad split {part!r}: use name=ratio pairs like train=0.8,val=0.2") from None
    return out


def _column_map(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"bad mapping {part!r}: use name=column pairs")
        out[key.strip()] = value.strip()
    return out


def _rename_map(text: str) -> dict[str, str]:
    """``old=new,old2=new2`` (names as written; two olds may share a new name)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        old, sep, new = (t.strip() for t in part.partition("="))
        if not sep or not old or not new:
            raise argparse.ArgumentTypeError(f"bad rename {part!r}: use old=new pairs, e.g. "
                                             "car=vehicle,truck=vehicle")
        if old in out and out[old] != new:
            raise argparse.ArgumentTypeError(f"{old!r} renamed twice ({out[old]!r}, {new!r})")
        out[old] = new
    return out


def _sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"tfod: --set {item!r}: use KEY=VALUE, e.g. train_config.batch_size=4")
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfod", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune TensorFlow Object Detection API models: "
                    "data -> config -> train -> eval -> export -> predict.",
        epilog="examples:\n" + "\n".join(f"  {ex}" for _, ex in COMMANDS.values()))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _add(sub, "synth")
    p.add_argument("out", help="output folder (VOC layout)")
    p.add_argument("--train", type=int, default=300, help="training images")
    p.add_argument("--val", type=int, default=60, help="validation images")
    p.add_argument("--size", type=int, default=160, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")

    p = _add(sub, "prepare")
    p.add_argument("source", nargs="+",
                   help="annotation folder or file; several are merged into one dataset, "
                        "each FORMAT:PATH to give it its own format (coco:ann.json)")
    p.add_argument("--format", default="voc", choices=list(FORMATS),
                   help="annotation format (COCO and CSV: pass the .json / .csv file)")
    p.add_argument("--name", required=True, help="dataset name: writes data/<name>/")
    p.add_argument("--images", help="image folder, if not next to the annotations")
    p.add_argument("--out-root", default="data")
    p.add_argument("--label-maps", default="label_maps", help="where <name>.pbtxt goes")
    p.add_argument("--split", type=_ratios, default=None,
                   help="ratios when the dataset has no own split, e.g. train=0.8,val=0.2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="fail on any problem")
    p.add_argument("--check-only", action="store_true",
                   help="read and check, print the report and statistics, write nothing "
                        "(exit 1 when problems are found)")
    p.add_argument("--label-map", help="use this label map (its classes and ids); boxes of "
                                       "other classes are problems")
    p.add_argument("--classes", type=lambda t: [c.strip() for c in t.split(",") if c.strip()],
                   help="comma-separated class names, in id order (instead of --label-map)")
    p.add_argument("--columns", type=_column_map,
                   help="CSV column mapping, e.g. class=label,filename=image")
    p.add_argument("--shard-size-mb", type=float, default=100.0,
                   help="target TFRecord shard size (default 100)")
    p.add_argument("--workers", type=int, help="worker processes (default: all CPUs for "
                                               "200+ images)")
    p.add_argument("--no-stratify", action="store_true", help="plain seeded shuffle split")
    p.add_argument("--no-plots", action="store_true", help="skip the statistics PNGs")
    p.add_argument("--rename", type=_rename_map,
                   help="rename classes before the label map is built, e.g. "
                        "car=vehicle,truck=vehicle")
    p.add_argument("--polygons-as-boxes", action="store_true",
                   help="CVAT, LabelMe: use each polygon's bounding box (default: polygons "
                        "are counted and left out)")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="accept image paths in annotations that lead outside the dataset "
                        "folder (absolute paths, ..); off by default")
    p.add_argument("--max-pixels", type=int, default=100_000_000,
                   help="refuse images declaring more pixels (default 100M)")
    p.add_argument("--decode-all", action="store_true",
                   help="decode every image in the checks (default: JPEGs passed through "
                        "unchanged get a structural check, about 20x faster)")

    p = _add(sub, "config")
    p.add_argument("template", nargs="?", help="template name in pipelines/ or a pipeline.config")
    p.add_argument("--template", dest="template_name", metavar="NAME",
                   help="the same as the positional TEMPLATE")
    p.add_argument("--data", help="prepared dataset folder (data/<name>)")
    p.add_argument("--label-map", help="label map (instead of --data; sets num_classes)")
    p.add_argument("--train", action="append", metavar="GLOB",
                   help="train TFRecord glob (instead of --data; repeatable)")
    p.add_argument("--eval", action="append", metavar="GLOB",
                   help="eval TFRecord glob (instead of --data; repeatable)")
    p.add_argument("--augment", metavar="LIST",
                   help="replace the augmentation, e.g. random_horizontal_flip,"
                        "random_adjust_brightness:max_delta=0.2")
    p.add_argument("--quantize", metavar="OPTS",
                   help="quantization-aware training: graph_rewriter quantization, e.g. "
                        "delay=1800,weight_bits=8 (float until step delay, then fake-"
                        "quantized; SSD MobileNet V1/V2 only)")
    p.add_argument("--scale-lr", action="store_true",
                   help="scale the learning rates linearly with --batch-size")
    p.add_argument("--freeze", choices=["feature_extractor", "none"],
                   help="feature_extractor: train only the box predictor (SSD models)")
    p.add_argument("--out", help="where to write the pipeline.config (required unless --check)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--checkpoint", help="fine-tune checkpoint prefix")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any field, e.g. train_config.batch_size=4 (repeatable)")
    p.add_argument("--check", action="store_true",
                   help="only check the config given as TEMPLATE (tfod config --check FILE); "
                        "with its dataset's stats.json, also the boxes against the anchors")
    p.add_argument("--fit-data", action="store_true",
                   help="choose the input size and anchors (SSD) from the training boxes "
                        "of --data; docs/FIT_DATA.md")
    p.add_argument("--max-size", type=int, default=640, metavar="PIXELS",
                   help="--fit-data: largest input side to choose (default 640)")

    p = _add(sub, "train")
    p.add_argument("config", help="pipeline.config")
    p.add_argument("--run", help="run name: runs/<run>/ (default: the config's folder name)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--steps", type=int, help="override num_steps")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue an existing run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "cpu", "gpu", "mirrored", "multi-worker"])
    p.add_argument("--auto-batch", action="store_true",
                   help="out of memory: halve the batch (and learning rate), continue")
    p.add_argument("--early-stop", type=int, metavar="PATIENCE",
                   help="eval every --checkpoint-every steps; stop after PATIENCE evals "
                        "without a better mAP")
    p.add_argument("--threads", default="auto", metavar="auto|tf|INTRA,INTER",
                   help="TensorFlow CPU thread pools (auto: 1 thread per op, 1 op per core "
                        "without a GPU; tf: TensorFlow's defaults)")
    p.add_argument("--time", metavar="DURATION",
                   help="train until this much time has passed (90s, 10m, 1h; graph "
                        "building included): steps and learning-rate schedule are fitted "
                        "to the measured step time; a checkpoint at the end")
    p.add_argument("--qat-per-tensor", action="store_true",
                   help="quantization-aware training (a graph_rewriter block) with one weight "
                        "scale per tensor instead of per channel (for accelerators that "
                        "need it; export follows)")

    p = _add(sub, "eval")
    p.add_argument("run", help="run folder (or pipeline.config)")
    p.add_argument("--checkpoint", help="checkpoint prefix (default: latest)")
    p.add_argument("--all", action="store_true", help="every checkpoint of the run")
    p.add_argument("--watch", action="store_true",
                   help="follow a training run: evaluate new checkpoints until it ends")
    p.add_argument("--timeout", type=float, help="--watch gives up after SECONDS")

    p = _add(sub, "export")
    p.add_argument("run", help="run folder (or pipeline.config)")
    p.add_argument("--out", help="default exports/<run>")
    p.add_argument("--formats", default="all",
                   help="comma list of all, saved_model, frozen_graph, tflite, tflite_fp16, "
                        "tflite_dynamic, tflite_int8 (default: all the model supports), "
                        "tflite_int8_per_tensor (weights one scale per tensor)")
    p.add_argument("--edgetpu", action="store_true",
                   help="also write model_edgetpu.tflite for the Coral Edge TPU (integer-only, "
                        "uint8 input, weights per tensor) and run edgetpu_compiler if on PATH")
    p.add_argument("--checkpoint", help="checkpoint prefix, 'best' (eval/best.json) or "
                   "'latest' (default)")
    p.add_argument("--max-detections", type=int, default=10, help="TFLite detections")
    p.add_argument("--regular-nms", action="store_true",
                   help="TFLite files run per-class NMS like the checkpoint's own "
                        "post-processing (slower) instead of the fast one-class-per-box NMS")
    p.add_argument("--input-type", default="image_tensor",
                   choices=["image_tensor", "float_image_tensor",
                            "encoded_image_string_tensor", "tf_example"],
                   help="SavedModel input (float_image_tensor or encoded_image_string_tensor "
                        "allow batched predict)")
    p.add_argument("--calibration-images", type=int, default=100,
                   help="training images for int8 calibration")
    p.add_argument("--no-eval", action="store_true",
                   help="skip scoring each artefact on the val split (size and latency only)")
    p.add_argument("--eval-checkpoint", action="store_true",
                   help="also evaluate the checkpoint when runs/<run>/eval/metrics.json is "
                        "missing or of another checkpoint")

    p = _add(sub, "predict")
    p.add_argument("source", nargs="+", help="images, folders or globs")
    p.add_argument("--model", required=True,
                   help="saved_model folder, frozen_graph.pb or .tflite file")
    p.add_argument("--out", default="predictions")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--label-map")
    p.add_argument("--batch", type=int, default=1,
                   help="images per call (SavedModel/frozen graph exported with "
                        "float_image_tensor or encoded_image_string_tensor)")
    p.add_argument("--csv", help="CSV of detections (default OUT/detections.csv)")
    p.add_argument("--no-draw", action="store_true", help="no annotated images")

    _add(sub, "doctor")

    p = _add(sub, "demo")
    p.add_argument("--root", default=".", help="project folder: writes data/, runs/, exports/")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--val", type=int, default=60)

    p = _add(sub, "tensorboard")
    p.add_argument("--logdir", default="runs")
    p.add_argument("--port", type=int, default=6006)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ngrok", action="store_true",
                   help="public tunnel with pyngrok (token: NGROK_AUTHTOKEN or ngrok's config)")
    p.add_argument("--auth", metavar="USER:PASSWORD",
                   help="basic auth on the ngrok tunnel; '-' asks for it (no echo); default: "
                        "$TFOD_TB_AUTH. A password given here is visible in the process list "
                        "and shell history")

    p = _add(sub, "runs")
    p.add_argument("action", nargs="?", default="list", choices=["list", "diff"])
    p.add_argument("names", nargs="*", help="diff: two run names (or folders, configs)")
    p.add_argument("--root", default="runs", help="runs folder")
    p.add_argument("--json", action="store_true", help="list: JSON rows instead of a table")

    p = _add(sub, "zoo")
    zoo_sub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    zoo_sub.add_parser("list", help="the registry: input size, COCO mAP, speed, template")
    z = zoo_sub.add_parser("info", help="registry facts of one model (JSON)")
    z.add_argument("name")
    z = zoo_sub.add_parser("download", help="download, verify (sha256), extract safely")
    z.add_argument("name")
    z.add_argument("--url", help="download from here instead (mirror or unlisted model)")
    z.add_argument("--sha256", help="expected sha256 of the archive")
    z.add_argument("--dest", default="pretrained", help="installs into DEST/NAME/")
    z.add_argument("--max-download-mb", type=float, default=2048,
                   help="refuse a larger download (default 2048)")
    _zoo_safety_flags(z)
    z = zoo_sub.add_parser("install", help="install from an archive on disk (no internet)")
    z.add_argument("name")
    z.add_argument("--from-file", required=True, metavar="ARCHIVE", help="the zoo .tar.gz")
    z.add_argument("--sha256", help="expected sha256 of the archive")
    z.add_argument("--dest", default="pretrained", help="installs into DEST/NAME/")
    _zoo_safety_flags(z)
    return parser


def _zoo_safety_flags(z: argparse.ArgumentParser) -> None:
    z.add_argument("--allow-unverified", action="store_true",
                   help="install an archive without --sha256 (its hash is recorded and "
                   "checked on every later use)")
    z.add_argument("--max-extract-mb", type=float, default=None,
                   help="cap on the archive's total unpacked size (default 2048, and 50x "
                   "the archive)")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # records for the stage's log file only
        handler.addFilter(lambda record: verbose or not getattr(record, "file_only", False))
    if not verbose:
        import os
        import warnings

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ info/warning lines
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(tf_keras|tensorflow)")
        # TensorFlow's deprecation notices are WARNING records on its own logger
        for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


# --- one function per command: arguments -> the library function of the same name ------

def _synth(args):
    from tfod.data.synth import synthesize

    return synthesize(args.out, num_train=args.train, num_val=args.val,
                      image_size=args.size, seed=args.seed, overwrite=args.overwrite)


def _prepare(args):
    from tfod.data.prepare import prepare_dataset

    from tfod.data.prepare import parse_sources

    sources = parse_sources(args.source, args.format)
    if args.columns and all(fmt != "csv" for fmt, _ in sources):
        raise SystemExit("tfod prepare: error: --columns applies to --format csv only")
    result = prepare_dataset(
        sources, name=args.name, fmt=args.format, out_root=args.out_root,
        label_map_dir=args.label_maps, split=args.split, seed=args.seed,
        strict=args.strict, image_dir=args.images, label_map=args.label_map,
        classes=args.classes, check_only=args.check_only, workers=args.workers,
        shard_size_mb=args.shard_size_mb, stratify=not args.no_stratify,
        plots=not args.no_plots, progress=True, columns=args.columns,
        allow_outside=args.allow_outside_paths, max_pixels=args.max_pixels,
        decode="always" if args.decode_all else "auto",
        polygons_as_boxes=args.polygons_as_boxes, rename=args.rename)
    if args.check_only:
        return None if result["ok"] else SystemExit(1)
    return result["manifest"]


def _config(args):
    from tfod.config import check_pipeline, patch_pipeline_for_dataset

    template = args.template_name or args.template
    if not template:
        raise SystemExit("tfod config: error: give a TEMPLATE (or --template NAME)")
    if args.check:
        return {"config": template, "ok": True, "warnings": check_pipeline(template)}
    if not args.out:
        raise SystemExit("tfod config: error: --out is required (where to write the config)")
    return {"config": str(patch_pipeline_for_dataset(
        template, args.out, data_dir=args.data, label_map=args.label_map,
        train_input=args.train, eval_input=args.eval, num_steps=args.steps,
        batch_size=args.batch_size, scale_lr=args.scale_lr, image_size=args.image_size,
        fine_tune_checkpoint=args.checkpoint, augment=args.augment,
        quantize=args.quantize, freeze=args.freeze, overrides=_sets(args.set),
        fit_data=args.fit_data, max_size=args.max_size))}


def _train(args):
    from tfod.training import train

    return train(args.config, run=args.run, runs_root=args.runs_root, num_steps=args.steps,
                 checkpoint_every=args.checkpoint_every, resume=args.resume,
                 seed=args.seed, strategy=args.strategy, auto_batch=args.auto_batch,
                 early_stop=args.early_stop, argv=sys.argv, threads=args.threads,
                 time_budget=args.time, qat_per_tensor=args.qat_per_tensor)


def _eval(args):
    from tfod.evaluation import evaluate

    return evaluate(args.run, checkpoint=args.checkpoint, all_checkpoints=args.all,
                    watch=args.watch, timeout=args.timeout)


def _export(args):
    from tfod.exporter import export

    formats = args.formats.split(",") + (["tflite_edgetpu"] if args.edgetpu else [])
    return export(args.run, out_dir=args.out, formats=formats,
                  checkpoint=args.checkpoint, max_detections=args.max_detections,
                  input_type=args.input_type, calibration_images=args.calibration_images,
                  evaluate=not args.no_eval, evaluate_checkpoint=args.eval_checkpoint,
                  regular_nms=args.regular_nms)


def _predict(args):
    from tfod.inference import predict

    return predict(args.source, args.model, out_dir=args.out, threshold=args.threshold,
                   max_detections=args.max_detections, label_map=args.label_map,
                   batch=args.batch, csv_path=args.csv, draw=not args.no_draw)


def _doctor(args):
    from tfod.diagnostics import doctor

    return None if doctor()["ok"] else SystemExit(1)


def _demo(args):
    from tfod.demonstration import demo

    demo(args.root, num_steps=args.steps, num_train=args.train, num_val=args.val)


def _tensorboard(args):
    from tfod.dashboard import tensorboard

    return tensorboard(args.logdir, port=args.port, host=args.host, ngrok=args.ngrok,
                       auth=args.auth)


def _runs(args):
    from tfod import runs

    if args.action == "diff":
        if len(args.names) != 2:
            raise SystemExit("tfod runs diff: error: give two runs, e.g. tfod runs diff a b")
        print(runs.diff_text(runs.diff_runs(*args.names, root=args.root)))
        return None
    rows = runs.list_runs(args.root)
    print(json.dumps(rows, indent=2) if args.json else runs.runs_table(rows))
    return None


def _zoo(args):
    from tfod import zoo

    if args.zoo_command == "list":
        print(zoo.format_table())
        return None
    if args.zoo_command == "info":
        return zoo.model_info(args.name)
    if args.zoo_command == "download":
        zoo.download(args.name, dest=args.dest, url=args.url, sha256=args.sha256,
                     allow_unverified=args.allow_unverified,
                     max_download_mb=args.max_download_mb, max_extract_mb=args.max_extract_mb)
    else:
        zoo.install(args.name, from_file=args.from_file, dest=args.dest, sha256=args.sha256,
                    allow_unverified=args.allow_unverified, max_extract_mb=args.max_extract_mb)
    return zoo.installed(args.name, dest=args.dest)


#: command -> the function that calls the library for it (``COMMANDS`` has their help)
HANDLERS = {"synth": _synth, "prepare": _prepare, "config": _config, "train": _train,
            "eval": _eval, "export": _export, "predict": _predict, "doctor": _doctor,
            "demo": _demo, "tensorboard": _tensorboard, "runs": _runs, "zoo": _zoo}


def run(args: argparse.Namespace) -> object:
    """Call the library function for one parsed command."""
    return HANDLERS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    from tfod.errors import TfodError

    try:
        result = run(args)
        if isinstance(result, SystemExit):
            return int(result.code)
        if isinstance(result, dict) and (getattr(args, "json", False)
                                         or args.command not in SUMMARISED):
            print(json.dumps(result, indent=2, default=str))  # Ctrl-C here: still 130
    except TfodError as exc:
        print(f"tfod {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tfod {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
