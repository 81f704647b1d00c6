"""Downloads that end: HTTPS only (plain http only to the loopback interface, the local
mirrors of the tests), redirects checked the same way, a cap on the bytes read, and
resumption of a partial file only when the server confirms (``If-Range`` with the
validator saved beside it) that the remote file is unchanged. The file appears under its
final name only when complete (:mod:`tfod.zoo` renames it)."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tfod.errors import ZooError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MB = 1 << 20


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_url(url: str, where: str | None = None) -> None:
    """HTTPS only; plain http only to the loopback interface (local mirrors, tests)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return
    raise ZooError(f"refused to download over {parts.scheme or 'no scheme'}://",
                   where=where or url,
                   fix="use an https:// URL (http only for 127.0.0.1/localhost)")


class HttpsRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an URL :func:`check_url` accepts."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        check_url(newurl, where=f"redirect from {req.full_url} to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def resume_info(part: Path) -> Path:
    """Next to a ``.part``: the URL it came from and the server's validator."""
    return part.with_name(part.name + ".json")


def _validator(headers) -> str | None:
    """A strong validator for If-Range: an ETag that is not weak, else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _resume_offset(url: str, part: Path) -> tuple[int, dict]:
    """(bytes to resume from, saved info) of a partial download: 0 unless the saved
    validator is of this URL."""
    info = {}
    offset = part.stat().st_size if part.is_file() else 0
    if offset:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(resume_info(part).read_text())
        if info.get("url") != url or not info.get("validator"):
            log.warning("zoo: %s has no saved validator for this URL; downloading from the "
                        "start", part)
            offset = 0
    return offset, info


def _open(url: str, offset: int, info: dict, timeout: float):
    """The response to a GET of ``url`` (``Range`` + ``If-Range`` from ``offset``);
    HTTPError passes through, other failures become a ZooError."""
    request = urllib.request.Request(url, headers={"User-Agent": "tfod"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        request.add_header("If-Range", info["validator"])
    try:
        return urllib.request.build_opener(HttpsRedirects).open(request, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ZooError(f"download failed: {reason}", where=url,
                       fix="check the network, or download the archive elsewhere and use "
                       "`tfod zoo install NAME --from-file ARCHIVE`") from None


def _write_mode(response, url: str, part: Path, offset: int, info: dict) -> tuple:
    """(file mode, offset, info): append when the server resumed at ``offset``, else
    start over with the response's validator."""
    if offset and response.status == 206:
        start = _range_start(response.headers.get("Content-Range", ""))
        if start != offset:
            raise ZooError(f"server resumed at byte {start}, not {offset}", where=url,
                           fix=f"delete {part} and run the command again")
        log.info("zoo: resuming %s at %d bytes", part.name, offset)
        return "ab", offset, info
    if offset:
        log.warning("zoo: the remote file changed since the partial download (or the "
                    "server ignores ranges); downloading from the start")
    return "wb", 0, {"url": url, "validator": _validator(response.headers)}


def _stream(response, part: Path, mode: str, offset: int, total: int | None,
            max_bytes: int, progress: bool) -> int:
    """Copy the body into ``part`` as it arrives, stopping past ``max_bytes``; returns the
    bytes the file would hold (a read error ends the copy: the file keeps what came)."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
               desc=part.name.removesuffix(".tar.gz.part"), dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()))
    size = offset
    try:
        with open(part, mode) as out, bar:
            while True:
                chunk = response.read1(CHUNK)  # what has arrived: a kill keeps it
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        size = part.stat().st_size
        log.debug("zoo: read error %r", exc)
    return size


def fetch(url: str, part: Path, progress: bool, timeout: float, max_bytes: int) -> str:
    """Stream ``url`` into ``part`` (at most ``max_bytes``), resuming what is there when
    the server confirms the file is unchanged; raise if it ends early. Returns the final
    URL after redirects."""
    offset, info = _resume_offset(url, part)
    try:
        response = _open(url, offset, info, timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # validator matched, nothing left after offset
            total = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") or "")
            if total and int(total.group(1)) == offset:
                return info.get("final_url", url)  # the .part is already complete
            log.warning("zoo: server refused to resume %s (HTTP 416); starting again", part)
            part.unlink()
            return fetch(url, part, progress, timeout, max_bytes)
        raise ZooError(f"download failed: HTTP {exc.code} {exc.reason}", where=url,
                       fix="check the URL (tfod zoo info NAME), or use --url with a mirror")
    cap_fix = f"if the file is right, raise the cap: --max-download-mb " \
              f"{max(2 * max_bytes // MB, 1)}"
    with response:
        final_url = response.geturl()
        check_url(final_url)
        mode, offset, info = _write_mode(response, url, part, offset, info)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if total is not None and total > max_bytes:
            discard(part)
            raise ZooError(f"download of {total} bytes exceeds the cap of {max_bytes} bytes "
                           "(Content-Length); nothing downloaded", where=final_url, fix=cap_fix)
        info["final_url"] = final_url
        resume_info(part).write_text(json.dumps(info))
        size = _stream(response, part, mode, offset, total, max_bytes, progress)
    if size > max_bytes:
        discard(part)
        raise ZooError(f"download exceeds the cap of {max_bytes} bytes; stopped and deleted",
                       where=final_url, fix=cap_fix)
    if total is not None and size < total:
        raise ZooError(f"download ended early at {size} of {total} bytes", where=url,
                       fix="run the same command again to resume it")
    log.info("zoo: downloaded %d bytes", size)
    return final_url


def discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    resume_info(part).unlink(missing_ok=True)


def _range_start(content_range: str) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    return int(match.group(1)) if match else None
