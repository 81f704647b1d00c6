"""Pretrained models from the TF2 Detection Zoo: registry, verified downloads, safe extraction.

A model is installed into ``pretrained/<name>/`` (``checkpoint/ckpt-0.*``,
``pipeline.config``, ``saved_model/``, and tfod's ``zoo.json`` with the URL, the final
URL after redirects, the sha256 of the archive and of every extracted file). Nothing that
looks installed ever exists half-written, and nothing is unbounded:

* downloads use HTTPS only (plain http only for 127.0.0.1/localhost, the loopback mirrors
  of the tests); a redirect to anything else is refused;
* the archive streams to ``<dest>/<name>.tar.gz.part`` with the server's validator (ETag
  or Last-Modified) saved next to it in ``.part.json``; a later run resumes with
  ``Range`` + ``If-Range``, and starts over when the server answers 200 (the remote file
  changed) or when no validator was saved; the file is renamed to ``<name>.tar.gz`` only
  when complete; a body larger than ``max_download_mb`` is refused (from Content-Length
  before reading, else while streaming) and the partial deleted;
* the sha256 is checked when known (registry or argument). The zoo publishes no
  hashes, so for registry models the hash of the first download is recorded in
  ``zoo.json`` (trust on first use) with the sha256 of every extracted file, and every
  later use (:func:`installed`, a repeated download or install) verifies the files;
* an archive with no expected sha256 is installed only with ``allow_unverified=True``,
  except a registry model fetched from its registry HTTPS URL, which gets a WARNING
  banner instead (its TLS certificate is the only authentication);
* the archive is read twice as a stream. First pass, before anything is written: every
  member is checked (regular files and folders only: links, devices, fifos and sparse
  files are refused; no absolute paths, no ``..``), at most ``MAX_MEMBERS`` members, and
  the total declared size is capped (``max_extract_mb``; by default also
  ``MAX_RATIO`` x the archive size). Second pass: each regular member is written by
  tfod itself into a fresh ``mkdtemp`` folder inside ``dest`` (folders created and
  opened one by one with ``O_NOFOLLOW``, each relative to the one before; where the
  parent folder really lies asked of the filesystem; files opened with
  ``O_CREAT|O_EXCL|O_NOFOLLOW``). The folder is
  renamed to ``<dest>/<name>/`` at the end. tarfile's own ``extractall(filter="data")``
  is not used: it can be escaped in the Python 3.11.7 of this project (CVE-2025-4517,
  a symlink chain longer than PATH_MAX).

``install(name, from_file=...)`` does the same from a local archive, for
machines without internet. The download is :mod:`tfod.download`'s, the extraction
:mod:`tfod.archive`'s; this module holds the registry, the hashes and the installs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from tfod.archive import read_archive
from tfod.download import CHUNK, MB, check_url, fetch, resume_info
from tfod.errors import ZooError
from tfod.files import check_name

log = logging.getLogger(__name__)

ZOO_BASE = "https://download.tensorflow.org/models/object_detection/tf2"
MAX_DOWNLOAD_MB = 2048  # largest registry archive: ~250 MB (SSD ResNet50 FPN 640)


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """One TF2 Detection Zoo model; speed and COCO mAP as published in the zoo table
    (speed: ms per image on the zoo's GPU; mAP: COCO 2017 val)."""

    name: str
    archive: str  # archive stem on the download server (also its top-level folder)
    release: str  # folder on the download server (a date)
    template: str  # template in pipelines/
    input_size: tuple[int, int]
    coco_map: float
    speed_ms: int
    # The TF2 Detection Zoo (tf2_detection_zoo.md) publishes no checksums, so none is
    # pinned here: the first download's sha256 is recorded in zoo.json and verified on
    # every later use. Set one only from a published source, and say which.
    sha256: str | None = None

    @property
    def url(self) -> str:
        return f"{ZOO_BASE}/{self.release}/{self.archive}.tar.gz"


_MODELS = (
    ZooModel("ssd_mobilenet_v2_320", "ssd_mobilenet_v2_320x320_coco17_tpu-8", "20200711",
             "ssd_mobilenet_v2_320", (320, 320), 20.2, 19),
    ZooModel("ssd_mobilenet_v2_fpnlite_320", "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8",
             "20200711", "ssd_mobilenet_v2_fpnlite_320", (320, 320), 22.2, 22),
    ZooModel("ssd_mobilenet_v2_fpnlite_640", "ssd_mobilenet_v2_fpnlite_640x640_coco17_tpu-8",
             "20200711", "ssd_mobilenet_v2_fpnlite_640", (640, 640), 28.2, 39),
    ZooModel("ssd_mobilenet_v1_fpn_640", "ssd_mobilenet_v1_fpn_640x640_coco17_tpu-8",
             "20200711", "ssd_mobilenet_v1_fpn_640", (640, 640), 29.1, 48),
    ZooModel("ssd_resnet50_v1_fpn_640", "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8",
             "20200711", "ssd_resnet50_v1_fpn_640", (640, 640), 34.3, 46),
    ZooModel("efficientdet_d0_512", "efficientdet_d0_coco17_tpu-32", "20200711",
             "efficientdet_d0_512", (512, 512), 33.6, 39),
    ZooModel("faster_rcnn_resnet50_v1_640", "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8",
             "20200711", "faster_rcnn_resnet50_v1_640", (640, 640), 29.3, 53),
    # published later than the others, in its own release folder
    ZooModel("centernet_mobilenetv2_fpn_512", "centernet_mobilenetv2fpn_512x512_coco17_od",
             "20210210", "centernet_mobilenetv2_fpn_512", (512, 512), 23.4, 6),
)
REGISTRY: dict[str, ZooModel] = {m.name: m for m in _MODELS}


def list_models() -> list[dict]:
    """All registry entries, as :func:`model_info` dicts.

    Example:
        >>> [m["name"] for m in list_models()][:2]
        ['ssd_mobilenet_v2_320', 'ssd_mobilenet_v2_fpnlite_320']
    """
    return [model_info(name) for name in REGISTRY]


def model_info(name: str) -> dict:
    """Registry facts of one model (URL, template, input size, COCO mAP, speed).

    Example:
        >>> model_info("efficientdet_d0_512")["coco_map"]
        33.6
    """
    model = REGISTRY.get(name)
    if model is None:
        close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ZooError(f"unknown zoo model {name!r}", where="tfod zoo",
                       fix=f"{hint}available: {', '.join(REGISTRY)}")
    info = dataclasses.asdict(model)
    info["input_size"] = list(model.input_size)
    info["url"] = model.url
    return info


def format_table(models: list[dict] | None = None) -> str:
    """The registry as a text table (name, input, COCO mAP, ms, template)."""
    models = list_models() if models is None else models
    rows = [("name", "input", "COCO mAP", "ms", "template")]
    rows += [(m["name"], "x".join(map(str, m["input_size"])), f"{m['coco_map']:.1f}",
              str(m["speed_ms"]), m["template"]) for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

def download(name: str, dest: str | Path = "pretrained", url: str | None = None,
             sha256: str | None = None, progress: bool = True, timeout: float = 60.0,
             keep_archive: bool = False, allow_unverified: bool = False,
             max_download_mb: float = MAX_DOWNLOAD_MB,
             max_extract_mb: float | None = None) -> Path:
    """Download, verify and safely extract a zoo model into ``<dest>/<name>/``.

    ``url`` replaces the registry's (a mirror, or a model not in the registry; HTTPS
    only); ``sha256`` is checked in addition to a registry hash. Without any expected
    hash, a ``url`` needs ``allow_unverified=True``. A ``.part`` file left by an
    interrupted run is resumed when the server confirms (``If-Range``) the remote file
    is unchanged. ``max_download_mb`` caps the body; ``max_extract_mb`` the total size
    of the members (None: ``MAX_EXTRACT_MB`` and ``MAX_RATIO`` x the archive).

    Example:
        >>> download("ssd_mobilenet_v2_320")
        PosixPath('pretrained/ssd_mobilenet_v2_320')
    """
    url, expected, origin = _source(name, url, sha256)
    check_url(url)
    dest, target = Path(dest), Path(dest) / name
    if _already_installed(name, target):
        return target
    _unverified_policy(name, url, expected, allow_unverified)
    archive = dest / f"{name}.tar.gz"
    final_url = None
    if not archive.is_file():
        part = dest / f"{name}.tar.gz.part"
        log.info("zoo: downloading %s -> %s", url, archive)
        final_url = fetch(url, part, progress=progress, timeout=timeout,
                           max_bytes=int(max_download_mb * MB))
        os.replace(part, archive)
        resume_info(part).unlink(missing_ok=True)
    digest = _verify(archive, expected)
    try:
        result = _install_archive(name, archive, dest, digest, source=url, origin=origin,
                                  final_url=final_url, max_extract_mb=max_extract_mb)
    except ZooError:
        archive.unlink()  # unusable: the next run downloads it again
        raise
    if not keep_archive:
        archive.unlink()
    return result


def install(name: str, from_file: str | Path, dest: str | Path = "pretrained",
            sha256: str | None = None, allow_unverified: bool = False,
            max_extract_mb: float | None = None) -> Path:
    """Install a zoo model from an archive on disk (machines without internet).

    Without ``sha256`` (and no registry hash) the archive needs ``allow_unverified=True``.

    Example:
        >>> install("ssd_mobilenet_v2_320",
        ...         from_file="ssd_mobilenet_v2_320x320_coco17_tpu-8.tar.gz",
        ...         sha256="<sha256 of the archive, from where it was downloaded>")
        PosixPath('pretrained/ssd_mobilenet_v2_320')
    """
    _, expected, origin = _source(name, "file", sha256)
    archive = Path(from_file)
    if not archive.is_file():
        raise ZooError("archive not found", where=str(archive),
                       fix="pass the .tar.gz downloaded from the zoo URL "
                       "(tfod zoo info NAME shows it)")
    dest, target = Path(dest), Path(dest) / name
    if _already_installed(name, target):
        return target
    _unverified_policy(name, None, expected, allow_unverified, where=str(archive))
    digest = _verify(archive, expected, delete_bad=False)
    return _install_archive(name, archive, dest, digest, source=str(archive.resolve()),
                            origin=origin, final_url=None, max_extract_mb=max_extract_mb)


def installed(name: str, dest: str | Path = "pretrained", verify: bool = True) -> dict:
    """Paths of an installed model: ``checkpoint`` prefix (``.../checkpoint/ckpt-0``),
    ``pipeline_config`` and ``dir``. With ``verify`` every file recorded in ``zoo.json``
    is checked against its sha256 (a changed or missing file is an error).

    Example:
        >>> installed("ssd_mobilenet_v2_320")["checkpoint"]
        'pretrained/ssd_mobilenet_v2_320/checkpoint/ckpt-0'
    """
    target = Path(dest) / name
    if not _installed_marker(target).is_file():
        hint = f"tfod zoo download {name}" if name in REGISTRY else \
            f"tfod zoo download {name} --url URL"
        raise ZooError(f"zoo model {name!r} is not installed", where=str(target),
                       fix=f"run `{hint}` (or `tfod zoo install {name} --from-file ARCHIVE`)")
    if verify:
        _verify_installed(name, target)
    checkpoint = _checkpoint_prefix(target)
    if checkpoint is None:
        raise ZooError("no checkpoint/ckpt-*.index in the installed model", where=str(target),
                       fix=f"delete the folder and install {name} again")
    config = target / "pipeline.config"
    return {"dir": str(target), "checkpoint": str(checkpoint),
            "pipeline_config": str(config) if config.is_file() else None}


# -- internals ---------------------------------------------------------------------------

def _source(name: str, url: str | None, sha256: str | None) -> tuple[str, str | None, str]:
    """(url, expected sha256, where the hash comes from) of a model name, with the
    caller's overrides."""
    check_name(name, "tfod zoo", ZooError,  # it names a folder
               fix="use a model name from `tfod zoo list`, e.g. ssd_mobilenet_v2_320x320_coco17_tpu-8")
    model = REGISTRY.get(name)
    if model is None and url is None:
        model_info(name)  # raises with suggestions
    expected = [h.lower() for h in (sha256, model.sha256 if model else None) if h]
    for h in expected:
        if not re.fullmatch(r"[0-9a-f]{64}", h):
            raise ZooError(f"bad sha256 {h!r}", where="--sha256", fix="give 64 hex digits")
    if len(set(expected)) > 1:
        raise ZooError(f"--sha256 {expected[0]} differs from the registry's {expected[1]}",
                       where="--sha256", fix="drop --sha256, or check the archive's origin")
    origin = "--sha256" if sha256 else "registry" if expected else \
        "none: recorded at install (trust on first use)"
    return url or model.url, (expected[0] if expected else None), origin


def _unverified_policy(name: str, url: str | None, expected: str | None,
                       allow_unverified: bool, where: str | None = None) -> None:
    """No expected hash: refuse unless allowed, except for a registry model fetched from
    its registry HTTPS URL; either way a WARNING banner on stderr."""
    if expected is not None:
        return
    model = REGISTRY.get(name)
    from_registry = model is not None and url == model.url
    if not (from_registry or allow_unverified):
        source = "--url" if url else "--from-file"
        raise ZooError(f"no sha256 to verify the archive of {name!r} given with {source}",
                       where=url or where,
                       fix="pass --sha256 HASH (from where you got the archive), or "
                       "--allow-unverified to install it anyway")
    bar = "=" * 78
    log.warning("%s\nWARNING: UNVERIFIED ARCHIVE for %s: no published sha256 to check it "
                "against.\nIts sha256 is recorded in zoo.json and checked on every later "
                "use;\ncompare it with a trusted copy, or pass --sha256.\n%s", bar, name, bar)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(archive: Path, expected: str | None, delete_bad: bool = True) -> str:
    digest = _sha256(archive)
    if expected is None:
        log.info("zoo: sha256 %s (no published hash to check against; recorded)", digest)
    elif digest != expected:
        if delete_bad:  # a download: the next run fetches it again
            archive.unlink()
        raise ZooError(f"sha256 mismatch: got {digest}, expected {expected}",
                       where=str(archive), fix=("the download was deleted; run again, " if
                                                delete_bad else "") + "check --sha256 and the "
                       "archive's origin")
    else:
        log.info("zoo: sha256 verified %s", digest)
    return digest


def _verify_installed(name: str, target: Path) -> None:
    """Check every file recorded in zoo.json against its sha256 (trust on first use)."""
    try:
        files = json.loads(_installed_marker(target).read_text()).get("files")
    except (OSError, ValueError) as exc:
        raise ZooError(f"unreadable zoo.json ({exc})", where=str(target),
                       fix=f"delete the folder and install {name} again") from None
    if files is None:
        log.warning("zoo: %s was installed without file hashes; not verified", target)
        return
    for rel, digest in files.items():
        path = target / rel
        if not path.is_file() or path.is_symlink() or _sha256(path) != digest:
            raise ZooError("installed file changed since install (sha256 recorded in zoo.json)",
                           where=str(path),
                           fix=f"delete {target} and install {name} again from a trusted "
                           "source")


def _installed_marker(target: Path) -> Path:
    return target / "zoo.json"


def _already_installed(name: str, target: Path) -> bool:
    """True if ``target`` holds a complete, unchanged install; else make sure it can be
    written (nothing foreign in the way, the parent folder exists)."""
    if _installed_marker(target).is_file():
        _verify_installed(name, target)
        log.info("zoo: %s is already installed in %s", name, target)
        return True
    _check_target_free(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return False


def _check_target_free(target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise ZooError("folder exists but holds no zoo.json (not installed by tfod)",
                       where=str(target), fix="move or delete it, then run the command again")


def _checkpoint_prefix(folder: Path) -> Path | None:
    """The newest ``checkpoint/ckpt-N`` prefix of a model folder (by N)."""
    indexes = sorted((folder / "checkpoint").glob("ckpt-*.index"),
                     key=lambda p: int(re.sub(r"\D", "", p.stem.split("-")[-1]) or 0))
    return indexes[-1].with_suffix("") if indexes else None


# -- extraction --------------------------------------------------------------------------

def _install_archive(name: str, archive: Path, dest: Path, digest: str, source: str,
                     origin: str, final_url: str | None,
                     max_extract_mb: float | None) -> Path:
    target = dest / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.extracting-", dir=dest))
    try:
        try:
            read_archive(archive, max_extract_mb)  # every check, before any write
            files = read_archive(archive, max_extract_mb, into=tmp)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise ZooError(f"not a readable .tar.gz archive ({exc})", where=str(archive),
                           fix="delete it and download it again") from None
        entries = [p for p in tmp.iterdir()]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        checkpoint = _checkpoint_prefix(root)
        if checkpoint is None:
            raise ZooError("archive holds no checkpoint/ckpt-*.index", where=str(archive),
                           fix="use a TF2 Detection Zoo archive (checkpoint/, pipeline.config)")
        prefix = "" if root == tmp else root.name + "/"
        files = {rel[len(prefix):]: h for rel, h in files.items()
                 if rel.startswith(prefix) and rel[len(prefix):] != "zoo.json"}
        meta = {"name": name, "source": source, "final_url": final_url, "sha256": digest,
                "sha256_verified": origin in ("registry", "--sha256"), "sha256_origin": origin,
                "bytes": archive.stat().st_size,
                "installed": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "checkpoint": str(checkpoint.relative_to(root)),
                "pipeline_config": "pipeline.config"
                if (root / "pipeline.config").is_file() else None,
                "files": files}
        if name in REGISTRY:
            meta["registry"] = model_info(name)
        _installed_marker(root).write_text(json.dumps(meta, indent=2))
        os.chmod(root, 0o755)
        _check_target_free(target)
        os.rename(root, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    log.info("zoo: installed %s in %s (checkpoint %s)", name, target, meta["checkpoint"])
    return target
