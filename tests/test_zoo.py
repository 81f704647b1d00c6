"""tfod.zoo: registry, downloads from a loopback HTTP server (resume with If-Range,
truncation, size caps, redirects, sha256 recorded and verified), hostile archives built in
the tests (links, the CVE-2025-4517 PATH_MAX chain, size bomb, 30,002 members), install from
a file, and the CLI."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import lzma
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tfod import zoo
from tfod.cli import main
from tfod.zoo import ZooError

NAME = "ssd_mobilenet_v2_320"
TOP = "ssd_mobilenet_v2_320x320_coco17_tpu-8"  # top-level folder, as in the zoo archive


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def archive(tiny_run, tmp_path_factory) -> dict:
    """A zoo-layout archive of the tiny trained checkpoint: <top>/checkpoint/ckpt-0.*,
    <top>/checkpoint/checkpoint, <top>/pipeline.config."""
    run_dir = Path(tiny_run["run_dir"])
    index = max(run_dir.glob("ckpt-*.index"), key=lambda p: int(p.stem.split("-")[1]))
    path = tmp_path_factory.mktemp("zoo") / f"{TOP}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(run_dir.glob(f"{index.stem}.*")):
            tar.add(f, arcname=f"{TOP}/checkpoint/ckpt-0{f.name[len(index.stem):]}")
        _add_bytes(tar, f"{TOP}/checkpoint/checkpoint", b'model_checkpoint_path: "ckpt-0"\n')
        tar.add(run_dir / "pipeline.config", arcname=f"{TOP}/pipeline.config")
    data = path.read_bytes()
    return {"path": path, "data": data, "sha256": hashlib.sha256(data).hexdigest(),
            "index": index}


class _Server:
    """http.server on 127.0.0.1 (free port, own thread) serving bytes at /<name>.tar.gz,
    with an ETag (its sha256) and If-Range handled as RFC 9110 says (a validator that no
    longer matches gets the whole file, 200).

    mode "range": honours Range; "ignore_range": always sends the whole file;
    "truncate": announces the full length, sends half, closes; "trickle": 1 KiB every 20 ms;
    "endless": no Content-Length, zeros until the client hangs up (at most 256 MiB);
    "huge_length": announces 3 GiB, sends 1 KiB; "redirect": 302 to ``location``.
    """

    def __init__(self, data: bytes, mode: str = "range", location: str = ""):
        self.data, self.mode, self.location, self.requests, self.sent = data, mode, location, \
            [], 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(dict(self.headers))
                if server.mode in ("endless", "huge_length", "redirect"):
                    return self._special()
                etag = f'"{hashlib.sha256(server.data).hexdigest()[:16]}"'
                body, status = server.data, 200
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                if self.headers.get("If-Range", etag) != etag:
                    match = None  # changed since the client's copy: send it all
                if match and server.mode == "range":
                    start = int(match.group(1))
                    if start >= len(server.data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(server.data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body, status = server.data[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                if status == 206:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.end_headers()
                if server.mode == "truncate":
                    body = body[: len(body) // 2]
                if server.mode == "trickle":  # slowly, so a test can kill the client
                    for i in range(0, len(body), 1024):
                        self.wfile.write(body[i:i + 1024])
                        self.wfile.flush()
                        server.sent += len(body[i:i + 1024])
                        time.sleep(0.02)
                    return
                self.wfile.write(body)
                server.sent += len(body)
                self.close_connection = True

            def _special(self):
                if server.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if server.mode == "huge_length":
                    self.send_header("Content-Length", str(3 << 30))
                self.end_headers()
                block = bytes(64 << 10)
                try:
                    for _ in range(1 if server.mode == "huge_length" else 4096):
                        self.wfile.write(block[:1024] if server.mode == "huge_length"
                                         else block)
                        server.sent += 1024 if server.mode == "huge_length" else len(block)
                except OSError:  # the client hung up
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str = NAME) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}.tar.gz"

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.data).hexdigest()[:16]}"'

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_registry_facts_and_unknown_name_suggests():
    names = [m["name"] for m in zoo.list_models()]
    assert {"ssd_mobilenet_v2_320", "ssd_mobilenet_v1_fpn_640", "efficientdet_d0_512",
            "faster_rcnn_resnet50_v1_640", "centernet_mobilenetv2_fpn_512"} <= set(names)
    info = zoo.model_info("ssd_mobilenet_v2_fpnlite_320")
    assert info["url"].endswith("/tf2/20200711/ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
                                ".tar.gz")
    assert info["input_size"] == [320, 320] and info["coco_map"] == 22.2
    assert info["template"] == "ssd_mobilenet_v2_fpnlite_320"
    with pytest.raises(ZooError, match="did you mean ssd_mobilenet_v2_320"):
        zoo.model_info("ssd_mobilenet_v2_32")
    with pytest.raises(ZooError, match="is not installed"):
        zoo.installed(NAME, dest="/nonexistent")


def test_download_verify_extract(archive, tmp_path):
    dest = tmp_path / "pretrained"
    with _Server(archive["data"]) as server:
        out = zoo.download(NAME, dest=dest, url=server.url(), sha256=archive["sha256"],
                           progress=False)
    assert out == dest / NAME
    paths = zoo.installed(NAME, dest=dest)
    assert paths["checkpoint"] == str(dest / NAME / "checkpoint" / "ckpt-0")
    assert Path(paths["pipeline_config"]).read_text() == \
        (Path(archive["index"]).parent / "pipeline.config").read_text()
    assert (dest / NAME / "checkpoint" / "ckpt-0.index").read_bytes() == \
        archive["index"].read_bytes()
    meta = json.loads((dest / NAME / "zoo.json").read_text())
    assert meta["sha256"] == archive["sha256"] and meta["sha256_verified"] is True
    assert meta["source"] == server.url()
    # nothing left behind: no .part, no archive, no temporary folder
    assert sorted(p.name for p in dest.iterdir()) == [NAME]
    import tensorflow as tf  # the installed checkpoint is readable by TensorFlow

    assert tf.train.load_checkpoint(paths["checkpoint"]).get_variable_to_shape_map()


def test_sha256_recorded_when_unknown(archive, tmp_path):
    with _Server(archive["data"]) as server:
        zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False,
                     allow_unverified=True)
    meta = json.loads((tmp_path / NAME / "zoo.json").read_text())
    assert meta["sha256"] == archive["sha256"] and meta["sha256_verified"] is False


def _partial(tmp_path: Path, data: bytes, url: str, validator: str | None) -> Path:
    """A .part as an interrupted run leaves it: bytes and the server's validator."""
    part = tmp_path / f"{NAME}.tar.gz.part"
    part.write_bytes(data)
    if validator is not None:
        zoo.resume_info(part).write_text(json.dumps({"url": url, "validator": validator}))
    return part


def test_resume_fetches_only_the_rest_if_unchanged(archive, tmp_path):
    data = archive["data"]
    half = len(data) // 2
    with _Server(data) as server:
        _partial(tmp_path, data[:half], server.url(), server.etag)
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert [(r.get("Range"), r.get("If-Range")) for r in server.requests] == \
        [(f"bytes={half}-", server.etag)]
    assert server.sent == len(data) - half
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]  # .part and .json gone


def test_partial_without_validator_starts_over(archive, tmp_path):
    """A .part with no saved ETag/Last-Modified cannot be proven to be the same file."""
    data = archive["data"]
    with _Server(data) as server:
        _partial(tmp_path, b"x" * 100, server.url(), None)
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert [r.get("Range") for r in server.requests] == [None]
    assert server.sent == len(data) and (tmp_path / NAME / "zoo.json").is_file()


def test_complete_part_is_not_fetched_again(archive, tmp_path):
    with _Server(archive["data"]) as server:
        _partial(tmp_path, archive["data"], server.url(), server.etag)
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert server.sent == 0 and len(server.requests) == 1
    assert (tmp_path / NAME / "zoo.json").is_file()


def test_server_ignoring_range_restarts(archive, tmp_path):
    data = archive["data"]
    with _Server(data, mode="ignore_range") as server:
        _partial(tmp_path, b"x" * 100, server.url(), server.etag)  # wrong bytes, ignored
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert server.sent == len(data)
    assert (tmp_path / NAME / "zoo.json").is_file()


def test_truncated_download_keeps_part_and_installs_nothing(archive, tmp_path):
    data = archive["data"]
    with _Server(data, mode="truncate") as server:
        with pytest.raises(ZooError, match="ended early .*run the same command again"):
            zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False,
                         allow_unverified=True)
        assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.tar.gz").exists()
        part = tmp_path / f"{NAME}.tar.gz.part"
        assert part.read_bytes() == data[: len(data) // 2]
        server.mode, server.sent = "range", 0  # the next run resumes and completes
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert server.sent == len(data) - len(data) // 2
    assert (tmp_path / NAME / "zoo.json").is_file()


def test_sha256_mismatch_is_an_error(archive, tmp_path):
    with _Server(archive["data"]) as server:
        with pytest.raises(ZooError, match="sha256 mismatch"):
            zoo.download(NAME, dest=tmp_path, url=server.url(), sha256="0" * 64,
                         progress=False)
    assert list(tmp_path.iterdir()) == []  # the bad download is not kept


def test_corrupt_archive_is_an_error(archive, tmp_path):
    data = bytearray(archive["data"])
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64  # damaged gzip stream
    with _Server(bytes(data)) as server:
        with pytest.raises(ZooError, match="not a readable .tar.gz"):
            zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False,
                         allow_unverified=True)
    assert list(tmp_path.iterdir()) == []


def _refused_by_cli(capsys, bad: Path, tmp_path: Path, *flags: str) -> str:
    """`tfod zoo install` of a hostile archive: exit 1, one clear error line, no traceback,
    nothing written anywhere in tmp_path but an empty --dest. Returns the error."""
    dest = tmp_path / "pretrained"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code = main(["zoo", "install", NAME, "--from-file", str(bad), "--dest", str(dest),
                 "--allow-unverified", *flags])
    err = capsys.readouterr().err
    assert code == 1 and "tfod zoo: error:" in err and "Traceback" not in err, err
    assert list(dest.iterdir()) == []  # no model folder, no temporary folder
    assert sorted(str(p) for p in tmp_path.rglob("*")) == sorted(before + [str(dest)])
    return err


@pytest.fixture
def outside(tmp_path) -> Path:
    """A sentinel folder next to --dest that hostile archives aim at; must stay empty."""
    folder = tmp_path / "outside"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("evil", ["dotdot", "absolute", "symlink", "symlink_inside",
                                  "hardlink", "hardlink_inside", "device", "fifo", "sparse"])
def test_unsafe_archive_is_refused(tmp_path, outside, capsys, evil):
    """Every link is refused, even one pointing inside: zoo checkpoints hold none, and a
    link is how the writes below escape."""
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        _add_bytes(tar, f"{TOP}/checkpoint/ckpt-0.index", b"x")
        if evil == "dotdot":
            _add_bytes(tar, f"{TOP}/../../outside/evil", b"evil")
        elif evil == "absolute":
            _add_bytes(tar, str(outside / "evil"), b"evil")
        elif evil == "symlink":
            _add_bytes(tar, f"{TOP}/out", b"", type=tarfile.SYMTYPE, linkname=str(outside))
            _add_bytes(tar, f"{TOP}/out/evil", b"evil")
        elif evil == "symlink_inside":
            _add_bytes(tar, f"{TOP}/link", b"", type=tarfile.SYMTYPE,
                       linkname="checkpoint/ckpt-0.index")
        elif evil == "hardlink":
            _add_bytes(tar, f"{TOP}/evil", b"", type=tarfile.LNKTYPE,
                       linkname="../outside/evil")
        elif evil == "hardlink_inside":
            _add_bytes(tar, f"{TOP}/copy", b"", type=tarfile.LNKTYPE,
                       linkname=f"{TOP}/checkpoint/ckpt-0.index")
        elif evil == "device":
            _add_bytes(tar, f"{TOP}/null", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        elif evil == "fifo":
            _add_bytes(tar, f"{TOP}/pipe", b"", type=tarfile.FIFOTYPE)
        else:
            _add_bytes(tar, f"{TOP}/holes", b"", type=tarfile.GNUTYPE_SPARSE)
    err = _refused_by_cli(capsys, bad, tmp_path)
    assert "refused" in err


def _path_max_chain(path: Path, target: Path) -> None:
    """The CVE-2025-4517 pattern: 16 folders of 247 characters, each reachable through a
    one-letter symlink, so ``a/b/.../p`` is short for the kernel but more than PATH_MAX
    once spelled out. ``os.path.realpath`` gives up on the too-long name ``lll...`` (a
    symlink to 16 levels up) and counts the following ``..`` as text: "escape" looks
    like ``<folder>/tmp/...`` to it, while the kernel takes it to ``target``. A file
    written through "escape" lands in ``target`` (tarfile's ``filter="data"`` in Python
    3.11.7 lets it through)."""
    comp, steps = "d" * 247, "abcdefghijklmnop"
    with tarfile.open(path, "w:gz") as tar:
        _add_bytes(tar, "checkpoint/ckpt-0.index", b"x")  # looks like a model otherwise
        prefix = ""
        for step in steps:
            _add_bytes(tar, prefix + comp, b"", type=tarfile.DIRTYPE)
            _add_bytes(tar, prefix + step, b"", type=tarfile.SYMTYPE, linkname=comp)
            prefix += comp + "/"
        long_link = "/".join(steps) + "/" + "l" * 254
        _add_bytes(tar, long_link, b"", type=tarfile.SYMTYPE, linkname="../" * len(steps))
        _add_bytes(tar, "escape", b"", type=tarfile.SYMTYPE,
                   linkname=long_link + "/" + "../" * (len(steps) + 1)
                   + str(target).lstrip("/"))
        _add_bytes(tar, "escape/evil", b"written outside")


def test_path_max_symlink_chain_is_refused(tmp_path, outside, capsys):
    bad = tmp_path / "chain.tar.gz"
    _path_max_chain(bad, outside)
    err = _refused_by_cli(capsys, bad, tmp_path)
    assert "link member" in err


def test_size_bomb_is_refused_before_writing(tmp_path, outside, capsys):
    """A 30 KB .tar.xz whose member declares 200 MiB of zeros (measured: 30,7xx bytes);
    a checkpoint index first, so it would install if the cap were missing."""
    bad = tmp_path / "bomb.tar.xz"
    index = tarfile.TarInfo(f"{TOP}/checkpoint/ckpt-0.index")
    index.size = 1
    info = tarfile.TarInfo(f"{TOP}/checkpoint/ckpt-0.data-00000-of-00001")
    info.size = 200 << 20
    xz = lzma.LZMACompressor(preset=0)
    chunks = [xz.compress(index.tobuf(format=tarfile.GNU_FORMAT) + b"x".ljust(512, b"\0")),
              xz.compress(info.tobuf(format=tarfile.GNU_FORMAT))]
    zeros = bytes(1 << 20)
    chunks += [xz.compress(zeros) for _ in range(200)]
    chunks += [xz.compress(bytes(2 * tarfile.RECORDSIZE)), xz.flush()]
    bad.write_bytes(b"".join(chunks))
    assert bad.stat().st_size < 40_000
    err = _refused_by_cli(capsys, bad, tmp_path)
    assert "members declare more than" in err and "--max-extract-mb" in err


def test_extract_cap_relative_to_archive_and_the_option_raises_it(tmp_path):
    """20 MiB of zeros from a 3 KB .tar.xz: above 50x the archive (and the 16 MiB floor),
    below the absolute 2 GiB; refused by default, installed with --max-extract-mb 64."""
    bad = tmp_path / "zeros.tar.xz"
    with tarfile.open(bad, "w:xz", preset=0) as tar:
        _add_bytes(tar, f"{TOP}/checkpoint/ckpt-0.index", b"x")
        _add_bytes(tar, f"{TOP}/zeros", bytes(20 << 20))
    with pytest.raises(ZooError, match="members declare more than"):
        zoo.install(NAME, from_file=bad, dest=tmp_path / "a", allow_unverified=True)
    assert list((tmp_path / "a").iterdir()) == []
    out = zoo.install(NAME, from_file=bad, dest=tmp_path / "b", allow_unverified=True,
                      max_extract_mb=64)
    assert (out / "zeros").stat().st_size == 20 << 20


def test_too_many_members_is_refused(tmp_path, outside, capsys):
    """30,002 empty members (186 KB as .tar.gz), the first one making it look like a model."""
    bad = tmp_path / "many.tar.gz"
    first = io.BytesIO()
    with tarfile.open(fileobj=first, mode="w") as tar:
        _add_bytes(tar, f"{TOP}/checkpoint/ckpt-0.index", b"x")
    template = bytearray(tarfile.TarInfo("x").tobuf(format=tarfile.USTAR_FORMAT))
    headers = []
    for i in range(30_001):  # tarfile.addfile takes 0.1 ms a member; patch a header instead
        template[:100] = f"{TOP}/m/{i}".encode().ljust(100, b"\0")
        template[148:156] = b" " * 8
        template[148:156] = b"%06o\0 " % sum(template)
        headers.append(bytes(template))
    body = first.getvalue().rstrip(b"\0")  # the archive's end blocks go at the very end
    body += bytes(-len(body) % tarfile.BLOCKSIZE)
    bad.write_bytes(gzip.compress(body + b"".join(headers) + bytes(2 * tarfile.RECORDSIZE),
                                  compresslevel=1))
    err = _refused_by_cli(capsys, bad, tmp_path)
    assert "more than 10000 members" in err


def test_install_from_file_and_cli(archive, tmp_path, capsys):
    dest = tmp_path / "pretrained"
    assert main(["zoo", "install", NAME, "--from-file", str(archive["path"]),
                 "--dest", str(dest), "--sha256", archive["sha256"]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == str(dest / NAME / "checkpoint" / "ckpt-0")
    meta = json.loads((dest / NAME / "zoo.json").read_text())
    assert meta["source"] == str(archive["path"].resolve())
    assert archive["path"].is_file()  # the user's archive is left alone

    assert main(["zoo", "list"]) == 0
    table = capsys.readouterr().out
    assert "efficientdet_d0_512" in table and "33.6" in table
    assert main(["zoo", "info", "ssd_mobilenet_v1_fpn_640"]) == 0
    assert json.loads(capsys.readouterr().out)["coco_map"] == 29.1
    assert main(["zoo", "info", "ssd_mobilenet_v2_32"]) == 1
    assert "did you mean ssd_mobilenet_v2_320" in capsys.readouterr().err


def test_cli_download(archive, tmp_path, capsys):
    with _Server(archive["data"]) as server:
        code = main(["zoo", "download", NAME, "--url", server.url(), "--sha256",
                     archive["sha256"], "--dest", str(tmp_path)])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["dir"] == str(tmp_path / NAME)
    assert main(["zoo", "download", NAME, "--sha256", "xyz", "--dest",
                 str(tmp_path / "other")]) == 1
    assert "bad sha256" in capsys.readouterr().err


def test_archive_without_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "nockpt.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        _add_bytes(tar, f"{TOP}/pipeline.config", b"model {}\n")
    with pytest.raises(ZooError, match="no checkpoint/ckpt-"):
        zoo.install(NAME, from_file=bad, dest=tmp_path / "pretrained", allow_unverified=True)
    assert list((tmp_path / "pretrained").iterdir()) == []


def test_killed_download_installs_nothing_and_resumes(archive, tmp_path):
    """SIGKILL in the middle of `tfod zoo download`: no pretrained/<name>/, a .part
    file; the same command again fetches only the rest and installs."""
    data = archive["data"]
    part = tmp_path / f"{NAME}.tar.gz.part"
    with _Server(data, mode="trickle") as server:
        proc = subprocess.Popen([sys.executable, "-m", "tfod.cli", "zoo", "download", NAME,
                                 "--url", server.url(), "--dest", str(tmp_path),
                                 "--sha256", archive["sha256"]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while (not part.is_file() or part.stat().st_size < 4096) and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (tmp_path / NAME).exists()
        # nothing else, nothing final: the bytes and the server's validator for If-Range
        assert sorted(p.name for p in tmp_path.iterdir()) == [part.name, part.name + ".json"]
        kept = part.stat().st_size
        assert 0 < kept < len(data) and part.read_bytes() == data[:kept]
        server.mode, server.requests = "range", []  # the same URL, now at full speed
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert [(r.get("Range"), r.get("If-Range")) for r in server.requests] == \
        [(f"bytes={kept}-", server.etag)]
    assert (tmp_path / NAME / "zoo.json").is_file()


def test_endless_body_stops_at_the_cap(tmp_path, capsys):
    """No Content-Length, a body that never ends: stopped at --max-download-mb, the
    partial deleted (nothing looks complete), a clear error from the CLI."""
    with _Server(b"", mode="endless") as server:
        code = main(["zoo", "download", NAME, "--url", server.url(), "--dest", str(tmp_path),
                     "--allow-unverified", "--max-download-mb", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "exceeds the cap of 1048576 bytes" in err and "Traceback" not in err
    assert "--max-download-mb 2" in err
    assert list(tmp_path.iterdir()) == []  # no .part, no .json, no archive, no model
    assert server.sent < 64 << 20  # the client hung up (the server stops at 256 MiB)


def test_content_length_above_the_cap_is_refused_before_the_body(tmp_path):
    """3 GiB announced, above the 2 GiB default: refused before a byte is written."""
    with _Server(b"", mode="huge_length") as server:
        with pytest.raises(ZooError, match=r"exceeds the cap .*\(Content-Length\); nothing"):
            zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False,
                         allow_unverified=True)
    assert list(tmp_path.iterdir()) == []


def test_redirects_only_to_https_and_the_final_url_is_recorded(archive, tmp_path, capsys):
    with _Server(b"", mode="redirect",
                 location="http://mirror.example.com/evil.tar.gz") as server:
        code = main(["zoo", "download", NAME, "--url", server.url(), "--dest",
                     str(tmp_path), "--sha256", archive["sha256"]])
    err = capsys.readouterr().err
    assert code == 1 and "refused to download over http://" in err, err
    assert "redirect from" in err and "Traceback" not in err
    assert len(server.requests) == 1 and list(tmp_path.iterdir()) == []
    for url in ("http://download.example.com/x.tar.gz", "file:///etc/passwd"):
        with pytest.raises(ZooError, match="refused to download over"):
            zoo.download(NAME, dest=tmp_path, url=url, sha256=archive["sha256"])
    # a redirect that is allowed (loopback here, https in real life): final URL recorded
    with _Server(archive["data"]) as mirror, \
            _Server(b"", mode="redirect", location=mirror.url()) as server:
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    meta = json.loads((tmp_path / NAME / "zoo.json").read_text())
    assert meta["source"] == server.url() and meta["final_url"] == mirror.url()
    assert server.url() != mirror.url()
    assert zoo.model_info(NAME)["url"].startswith("https://")


def test_changed_remote_file_on_resume_starts_over(archive, tmp_path):
    """Half of version A is on disk; the server now has B: If-Range makes it send all of
    B (200), which replaces the partial. Without If-Range the server would send B from
    the offset (206) and the stitched file would fail its sha256."""
    old = archive["data"]
    new_path = tmp_path / "new.tar.gz"
    with tarfile.open(archive["path"]) as src, tarfile.open(new_path, "w:gz") as tar:
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member))
        _add_bytes(tar, f"{TOP}/VERSION", b"B\n")
    new = new_path.read_bytes()
    dest = tmp_path / "pretrained"
    dest.mkdir()
    with _Server(old, mode="truncate") as server:
        with pytest.raises(ZooError, match="ended early"):
            zoo.download(NAME, dest=dest, url=server.url(), allow_unverified=True,
                         progress=False)
        old_etag = server.etag
        server.data, server.mode = new, "range"  # the remote file changes
        zoo.download(NAME, dest=dest, url=server.url(), sha256=hashlib.sha256(new).hexdigest(),
                     progress=False)
    resume = server.requests[-1]
    assert resume.get("Range") == f"bytes={len(old) // 2}-" and resume.get("If-Range") == old_etag
    assert (dest / NAME / "VERSION").read_text() == "B\n"
    assert json.loads((dest / NAME / "zoo.json").read_text())["sha256"] == \
        hashlib.sha256(new).hexdigest()


def test_unverified_needs_the_flag_or_warns_for_the_registry(archive, tmp_path, caplog):
    with _Server(archive["data"]) as server:
        with pytest.raises(ZooError, match="no sha256 .*--allow-unverified"):
            zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False)
    assert server.requests == []  # refused before any request
    with pytest.raises(ZooError, match="no sha256 .*--allow-unverified"):
        zoo.install(NAME, from_file=archive["path"], dest=tmp_path)
    assert list(tmp_path.iterdir()) == []
    # the registry's own HTTPS URL: allowed, with a banner on stderr
    with caplog.at_level("WARNING", logger="tfod.zoo"):
        zoo._unverified_policy(NAME, zoo.REGISTRY[NAME].url, None, allow_unverified=False)
    assert "WARNING: UNVERIFIED ARCHIVE" in caplog.text


def test_first_download_hash_is_recorded_then_verified(archive, tmp_path, capsys):
    """Trust on first use: zoo.json keeps the archive's sha256 and every file's; a file
    changed afterwards is refused by every later use."""
    with _Server(archive["data"]) as server:
        zoo.download(NAME, dest=tmp_path, url=server.url(), allow_unverified=True,
                     progress=False)
        meta = json.loads((tmp_path / NAME / "zoo.json").read_text())
        assert meta["sha256"] == archive["sha256"] and meta["sha256_verified"] is False
        index = tmp_path / NAME / "checkpoint" / "ckpt-0.index"
        assert meta["files"]["checkpoint/ckpt-0.index"] == \
            hashlib.sha256(index.read_bytes()).hexdigest()
        assert zoo.installed(NAME, dest=tmp_path)["checkpoint"]  # unchanged: fine
        with open(index, "ab") as f:
            f.write(b"\0")  # tampered with
        with pytest.raises(ZooError, match="changed since install"):
            zoo.installed(NAME, dest=tmp_path)
        code = main(["zoo", "download", NAME, "--url", server.url(), "--dest", str(tmp_path),
                     "--allow-unverified"])
    err = capsys.readouterr().err
    assert code == 1 and "ckpt-0.index: installed file changed since install" in err
    assert "Traceback" not in err
