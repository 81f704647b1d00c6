"""Pretrained models from the TF2 Detection Zoo: registry, verified downloads, safe extraction.

A model is installed into ``pretrained/<name>/`` (``checkpoint/ckpt-0.*``,
``pipeline.config``, ``saved_model/``, and tfod's ``zoo.json`` with the URL and
sha256 of the archive). Nothing that looks installed ever exists half-written:

* the archive streams to ``<dest>/<name>.tar.gz.part``; a later run resumes it
  with an HTTP Range request (and starts again if the server ignores Range);
  the file is renamed to ``<name>.tar.gz`` only when complete;
* the sha256 is checked when known (registry or argument) and always recorded;
* every member is checked before anything is written (no absolute paths, no
  ``..``, no links leaving the folder, no device files), the archive is
  extracted into a temporary folder inside ``dest`` and renamed to
  ``<dest>/<name>/`` at the end.

``install(name, from_file=...)`` does the same from a local archive, for
machines without internet.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import datetime
import difflib
import gzip
import hashlib
import http.client
import json
import logging
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from tfod.errors import TfodError

log = logging.getLogger(__name__)

ZOO_BASE = "http://download.tensorflow.org/models/object_detection/tf2"
CHUNK = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ZooError(TfodError):
    """A zoo model that cannot be found, downloaded, verified or extracted."""


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
    sha256: str | None = None  # the zoo publishes none; recorded at first download

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
             keep_archive: bool = False) -> Path:
    """Download, verify and safely extract a zoo model into ``<dest>/<name>/``.

    ``url`` replaces the registry's (a mirror, or a model not in the registry);
    ``sha256`` is checked in addition to a registry hash. A ``.part`` file left
    by an interrupted run is resumed.

    Example:
        >>> download("ssd_mobilenet_v2_320")
        PosixPath('pretrained/ssd_mobilenet_v2_320')
    """
    url, expected = _source(name, url, sha256)
    dest, target = Path(dest), Path(dest) / name
    if _already_installed(name, target):
        return target
    archive = dest / f"{name}.tar.gz"
    if not archive.is_file():
        part = dest / f"{name}.tar.gz.part"
        log.info("zoo: downloading %s -> %s", url, archive)
        _fetch(url, part, progress=progress, timeout=timeout)
        os.replace(part, archive)
    digest = _verify(archive, expected)
    try:
        result = _install_archive(name, archive, dest, digest, source=url,
                                  verified=expected is not None)
    except ZooError:
        archive.unlink()  # unusable: the next run downloads it again
        raise
    if not keep_archive:
        archive.unlink()
    return result


def install(name: str, from_file: str | Path, dest: str | Path = "pretrained",
            sha256: str | None = None) -> Path:
    """Install a zoo model from an archive on disk (machines without internet).

    Example:
        >>> install("ssd_mobilenet_v2_320",
        ...         from_file="ssd_mobilenet_v2_320x320_coco17_tpu-8.tar.gz")
        PosixPath('pretrained/ssd_mobilenet_v2_320')
    """
    _, expected = _source(name, "file", sha256)
    archive = Path(from_file)
    if not archive.is_file():
        raise ZooError("archive not found", where=str(archive),
                       fix="pass the .tar.gz downloaded from the zoo URL "
                       "(tfod zoo info NAME shows it)")
    dest, target = Path(dest), Path(dest) / name
    if _already_installed(name, target):
        return target
    digest = _verify(archive, expected, delete_bad=False)
    return _install_archive(name, archive, dest, digest, source=str(archive.resolve()),
                            verified=expected is not None)


def installed(name: str, dest: str | Path = "pretrained") -> dict:
    """Paths of an installed model: ``checkpoint`` prefix (``.../checkpoint/ckpt-0``),
    ``pipeline_config`` and ``dir``.

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
    checkpoint = _checkpoint_prefix(target)
    if checkpoint is None:
        raise ZooError("no checkpoint/ckpt-*.index in the installed model", where=str(target),
                       fix=f"delete the folder and install {name} again")
    config = target / "pipeline.config"
    return {"dir": str(target), "checkpoint": str(checkpoint),
            "pipeline_config": str(config) if config.is_file() else None}


# -- internals ---------------------------------------------------------------------------

def _source(name: str, url: str | None, sha256: str | None) -> tuple[str, str | None]:
    """(url, expected sha256) of a model name, with the caller's overrides."""
    if not _NAME.match(name):
        raise ZooError(f"bad model name {name!r}", where="tfod zoo",
                       fix="use letters, digits, '_', '-' and '.' only (it names a folder)")
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
    return url or model.url, (expected[0] if expected else None)


def _installed_marker(target: Path) -> Path:
    return target / "zoo.json"


def _already_installed(name: str, target: Path) -> bool:
    """True if ``target`` holds a complete install; else make sure it can be written
    (nothing foreign in the way, the parent folder exists)."""
    if _installed_marker(target).is_file():
        log.info("zoo: %s is already installed in %s", name, target)
        return True
    _check_target_free(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return False


def _check_target_free(target: Path) -> None:
    if target.exists():
        raise ZooError("folder exists but holds no zoo.json (not installed by tfod)",
                       where=str(target), fix="move or delete it, then run the command again")


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, resuming what is there; raise if it ends early."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tfod"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left after offset
            total = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") or "")
            if total and int(total.group(1)) == offset:
                return  # the .part is already complete
            log.warning("zoo: server refused to resume %s (HTTP 416); starting again", part)
            part.unlink()
            return _fetch(url, part, progress, timeout)
        raise ZooError(f"download failed: HTTP {exc.code} {exc.reason}", where=url,
                       fix="check the URL (tfod zoo info NAME), or use --url with a mirror")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ZooError(f"download failed: {reason}", where=url,
                       fix="check the network, or download the archive elsewhere and use "
                       "`tfod zoo install NAME --from-file ARCHIVE`") from None
    with response:
        if offset and response.status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                raise ZooError(f"server resumed at byte {start}, not {offset}", where=url,
                               fix=f"delete {part} and run the command again")
            mode = "ab"
            log.info("zoo: resuming %s at %d bytes", part.name, offset)
        else:
            if offset:
                log.warning("zoo: server ignored the range request; downloading from the start")
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".tar.gz.part"), dynamic_ncols=True,
                   disable=not (progress and sys.stderr.isatty()))
        size = offset
        try:
            with open(part, mode) as out, bar:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
        except (OSError, ValueError, http.client.HTTPException) as exc:
            size = part.stat().st_size
            log.debug("zoo: read error %r", exc)
    if total is not None and size < total:
        raise ZooError(f"download ended early at {size} of {total} bytes", where=url,
                       fix="run the same command again to resume it")
    log.info("zoo: downloaded %d bytes", size)


def _range_start(content_range: str) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    return int(match.group(1)) if match else None


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


def _check_members(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Refuse anything that could write outside the extraction folder."""
    for m in members:
        where = f"{archive}: member {m.name!r}"
        path = PurePosixPath(m.name)
        if m.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", m.name) \
                or path.is_absolute():
            raise ZooError("absolute path in the archive", where=where,
                           fix="refused; get the archive from the zoo URL")
        if ".." in path.parts:
            raise ZooError("'..' in a path of the archive", where=where,
                           fix="refused; get the archive from the zoo URL")
        if m.isdev() or not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise ZooError("device or special file in the archive", where=where,
                           fix="refused; get the archive from the zoo URL")
        if m.issym() or m.islnk():
            link = PurePosixPath(m.linkname)
            # symlinks are relative to the member's folder, hard links to the archive root
            base = path.parent if m.issym() else PurePosixPath()
            resolved = _normalise(base / link)
            if link.is_absolute() or m.linkname.startswith("/") or resolved is None:
                raise ZooError(f"link to {m.linkname!r} leaves the model folder", where=where,
                               fix="refused; get the archive from the zoo URL")


def _normalise(path: PurePosixPath) -> PurePosixPath | None:
    """Resolve ``..`` lexically; None if the path climbs above its root."""
    parts: list[str] = []
    for part in path.parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _checkpoint_prefix(folder: Path) -> Path | None:
    """The newest ``checkpoint/ckpt-N`` prefix of a model folder (by N)."""
    indexes = sorted((folder / "checkpoint").glob("ckpt-*.index"),
                     key=lambda p: int(re.sub(r"\D", "", p.stem.split("-")[-1]) or 0))
    return indexes[-1].with_suffix("") if indexes else None


def _check_stream(archive: Path) -> None:
    """Decompress the whole file once: a damaged stream fails its CRC here (tarfile
    alone stops quietly at the first bad header and extracts a partial model)."""
    with open(archive, "rb") as f:
        magic = f.read(6)
    for prefix, opener in ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open),
                           (b"\xfd7zXZ", lzma.open)):
        if magic.startswith(prefix):
            with opener(archive, "rb") as stream:
                while stream.read(CHUNK):
                    pass


def _install_archive(name: str, archive: Path, dest: Path, digest: str, source: str,
                     verified: bool) -> Path:
    target = dest / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.extracting-", dir=dest))
    try:
        try:
            _check_stream(archive)
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()  # reads the whole archive: corrupt -> error here
                _check_members(members, archive)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            if isinstance(exc, tarfile.FilterError):
                raise ZooError(f"unsafe member refused ({exc})", where=str(archive),
                               fix="get the archive from the zoo URL") from None
            raise ZooError(f"not a readable .tar.gz archive ({exc})", where=str(archive),
                           fix="delete it and download it again") from None
        entries = [p for p in tmp.iterdir()]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        checkpoint = _checkpoint_prefix(root)
        if checkpoint is None:
            raise ZooError("archive holds no checkpoint/ckpt-*.index", where=str(archive),
                           fix="use a TF2 Detection Zoo archive (checkpoint/, pipeline.config)")
        meta = {"name": name, "source": source, "sha256": digest, "sha256_verified": verified,
                "bytes": archive.stat().st_size,
                "installed": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "checkpoint": str(checkpoint.relative_to(root)),
                "pipeline_config": "pipeline.config"
                if (root / "pipeline.config").is_file() else None}
        if name in REGISTRY:
            meta["registry"] = model_info(name)
        _installed_marker(root).write_text(json.dumps(meta, indent=2))
        os.replace(root, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    log.info("zoo: installed %s in %s (checkpoint %s)", name, target, meta["checkpoint"])
    return target
