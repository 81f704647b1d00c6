"""tfod.zoo: registry, downloads from a loopback HTTP server (resume, truncation, sha256),
safe extraction, install from a file, and the CLI."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
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
    """http.server on 127.0.0.1 (free port, own thread) serving bytes at /<name>.tar.gz.

    mode "range": honours Range; "ignore_range": always sends the whole file;
    "truncate": announces the full length, sends half, closes; "trickle": 1 KiB every 20 ms.
    """

    def __init__(self, data: bytes, mode: str = "range"):
        self.data, self.mode, self.requests, self.sent = data, mode, [], 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(dict(self.headers))
                body, status = server.data, 200
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
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

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str = NAME) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}.tar.gz"

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
        zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False)
    meta = json.loads((tmp_path / NAME / "zoo.json").read_text())
    assert meta["sha256"] == archive["sha256"] and meta["sha256_verified"] is False


def test_resume_fetches_only_the_rest(archive, tmp_path):
    data = archive["data"]
    half = len(data) // 2
    (tmp_path / f"{NAME}.tar.gz.part").write_bytes(data[:half])
    with _Server(data) as server:
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert [r.get("Range") for r in server.requests] == [f"bytes={half}-"]
    assert server.sent == len(data) - half
    assert (tmp_path / NAME / "zoo.json").is_file()


def test_complete_part_is_not_fetched_again(archive, tmp_path):
    (tmp_path / f"{NAME}.tar.gz.part").write_bytes(archive["data"])
    with _Server(archive["data"]) as server:
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert server.sent == 0 and len(server.requests) == 1
    assert (tmp_path / NAME / "zoo.json").is_file()


def test_server_ignoring_range_restarts(archive, tmp_path):
    data = archive["data"]
    (tmp_path / f"{NAME}.tar.gz.part").write_bytes(b"x" * 100)  # wrong bytes, ignored
    with _Server(data, mode="ignore_range") as server:
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert server.sent == len(data)
    assert (tmp_path / NAME / "zoo.json").is_file()


def test_truncated_download_keeps_part_and_installs_nothing(archive, tmp_path):
    data = archive["data"]
    with _Server(data, mode="truncate") as server:
        with pytest.raises(ZooError, match="ended early .*run the same command again"):
            zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False)
    assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.tar.gz").exists()
    part = tmp_path / f"{NAME}.tar.gz.part"
    assert part.read_bytes() == data[: len(data) // 2]
    with _Server(data) as server:  # the next run resumes and completes
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
            zoo.download(NAME, dest=tmp_path, url=server.url(), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("evil", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_archive_is_refused(tmp_path, evil):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        _add_bytes(tar, f"{TOP}/checkpoint/ckpt-0.index", b"x")
        if evil == "dotdot":
            _add_bytes(tar, f"{TOP}/../../evil", b"evil")
        elif evil == "absolute":
            _add_bytes(tar, str(tmp_path / "evil"), b"evil")
        elif evil == "symlink":
            _add_bytes(tar, f"{TOP}/etc", b"", type=tarfile.SYMTYPE, linkname="/etc")
            _add_bytes(tar, f"{TOP}/up", b"", type=tarfile.SYMTYPE, linkname="../../..")
        elif evil == "hardlink":
            _add_bytes(tar, f"{TOP}/passwd", b"", type=tarfile.LNKTYPE,
                       linkname="../etc/passwd")
        else:
            _add_bytes(tar, f"{TOP}/null", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
    dest = tmp_path / "pretrained"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ZooError, match="refused"):
        zoo.install(NAME, from_file=bad, dest=dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == before + ["pretrained"]
    assert list(dest.iterdir()) == []  # no model folder, no temporary folder
    assert not (tmp_path / "evil").exists()


def test_install_from_file_and_cli(archive, tmp_path, capsys):
    dest = tmp_path / "pretrained"
    assert main(["zoo", "install", NAME, "--from-file", str(archive["path"]),
                 "--dest", str(dest)]) == 0
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
        zoo.install(NAME, from_file=bad, dest=tmp_path / "pretrained")
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
    assert [p.name for p in tmp_path.iterdir()] == [part.name]  # nothing else, nothing final
    kept = part.stat().st_size
    assert 0 < kept < len(data) and part.read_bytes() == data[:kept]
    with _Server(data) as server:
        zoo.download(NAME, dest=tmp_path, url=server.url(), sha256=archive["sha256"],
                     progress=False)
    assert [r.get("Range") for r in server.requests] == [f"bytes={kept}-"]
    assert (tmp_path / NAME / "zoo.json").is_file()
