"""tfod.dashboard: TensorBoard answers on loopback; the ngrok tunnel code against a fake ngrok."""

from __future__ import annotations

import json
import logging
import subprocess
import time
import types
import urllib.request

import pytest

from tfod import dashboard
from tfod.errors import TfodError

TOKEN = "2abcSECRETtokenXYZ_123"
PASSWORD = "correct-horse-battery"


class FakeNgrok:
    """The part of pyngrok tfod uses, recording what it is given."""

    def __init__(self, fail: str | None = None):
        self.fail = fail
        self.connects, self.disconnected, self.killed = [], [], 0

    def PyngrokConfig(self, auth_token=None):  # noqa: N802  (pyngrok's name)
        return types.SimpleNamespace(auth_token=auth_token)

    def connect(self, addr, proto, pyngrok_config=None, **options):
        logging.getLogger("pyngrok").debug("Creating tunnel with options: %s", options)
        if self.fail:
            raise RuntimeError(self.fail)
        self.connects.append({"addr": addr, "proto": proto, "config": pyngrok_config, **options})
        return types.SimpleNamespace(public_url="https://abc123.ngrok.example")

    def disconnect(self, public_url, pyngrok_config=None):
        self.disconnected.append(public_url)

    def kill(self, pyngrok_config=None):
        self.killed += 1


def test_tunnel_passes_token_and_auth_and_never_logs_them(monkeypatch, caplog, capsys):
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    fake = FakeNgrok()
    with caplog.at_level(logging.DEBUG):
        with dashboard.Tunnel(6006, auth=f"alice:{PASSWORD}", pyngrok=fake) as tunnel:
            assert tunnel.public_url == "https://abc123.ngrok.example"
    (call,) = fake.connects
    assert call["addr"] == "6006" and call["proto"] == "http"
    assert call["auth"] == f"alice:{PASSWORD}"
    assert call["config"].auth_token == TOKEN
    assert fake.disconnected == ["https://abc123.ngrok.example"] and fake.killed == 1
    out = caplog.text + "".join(capsys.readouterr())
    assert "abc123.ngrok.example" in out and "alice" in out
    assert TOKEN not in out and PASSWORD not in out
    assert "NO authentication" not in out


def test_tunnel_without_auth_warns_and_uses_ngrok_config(monkeypatch, caplog):
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    fake = FakeNgrok()
    with caplog.at_level(logging.INFO):
        dashboard.Tunnel(6006, pyngrok=fake).close()
    assert "auth" not in fake.connects[0]
    assert fake.connects[0]["config"] is None  # pyngrok falls back to ngrok's own config
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "NO authentication" in warnings[0].getMessage()
    assert "--auth" in warnings[0].getMessage()


def test_tunnel_errors_are_redacted_and_auth_checked(monkeypatch):
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    fake = FakeNgrok(fail=f"authentication failed: token {TOKEN} is invalid")
    with pytest.raises(TfodError, match="NGROK_AUTHTOKEN") as info:
        dashboard.Tunnel(6006, auth=f"bob:{PASSWORD}", pyngrok=fake)
    assert TOKEN not in str(info.value)
    with pytest.raises(TfodError, match="8 to 128"):
        dashboard.Tunnel(6006, auth="bob:short", pyngrok=FakeNgrok())
    with pytest.raises(TfodError, match="USER:PASSWORD"):
        dashboard.Tunnel(6006, auth="no-colon-here", pyngrok=FakeNgrok())


def test_bad_arguments(tmp_path):
    with pytest.raises(TfodError, match="log folder not found"):
        dashboard.tensorboard(tmp_path / "missing")
    with pytest.raises(TfodError, match="--ngrok"):
        dashboard.tensorboard(tmp_path, auth=f"a:{PASSWORD}")


def test_tensorboard_answers_on_loopback_with_the_run(tiny_run):
    """A real TensorBoard on a free 127.0.0.1 port serves the tiny run and its loss scalars."""
    logdir = tiny_run["run_dir"].parent
    port = dashboard.free_port()
    proc = dashboard.start_tensorboard(logdir, port, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        dashboard.wait_until_up(base + "/", proc, timeout=120)
        with_loss = []
        for _ in range(60):  # TensorBoard loads event files in the background
            with urllib.request.urlopen(base + "/data/plugin/scalars/tags", timeout=5) as r:
                tags = json.loads(r.read())
            with_loss = [run for run in tags if "Loss/total_loss" in tags[run]]
            if "tiny/train" in with_loss:
                break
            time.sleep(1)
        assert "tiny/train" in with_loss
    finally:
        dashboard.stop(proc)
    assert proc.poll() is not None


def _page_text(url: str, budget_ms: int = 30000) -> str:
    """The rendered text of a page in headless Chromium (after its scripts ran)."""
    import re

    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--window-size=1400,3000", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=180).stdout
    dom = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM),
                    reason="needs Debian's chromium: `make browser-check` installs it")
def test_browser_shows_loss_and_map_of_the_tiny_run(tiny_run):
    """In a real (headless) browser, TensorBoard's page of the finished tiny run shows its
    training loss and its eval mAP, with the values tfod wrote."""
    from tfod.evaluation import evaluate

    metrics = evaluate(tiny_run["run_dir"])
    loss = json.loads((tiny_run["run_dir"] / "train_summary.json").read_text())["loss"]
    port = dashboard.free_port()
    proc = dashboard.start_tensorboard(tiny_run["run_dir"].parent, port,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        dashboard.wait_until_up(base + "/", proc, timeout=120)
        for _ in range(60):  # until both runs' event files are loaded
            with urllib.request.urlopen(base + "/data/plugin/scalars/tags", timeout=5) as r:
                tags = json.loads(r.read())
            if "tiny/eval" in tags and "tiny/train" in tags:
                break
            time.sleep(1)
        url = base + "/?tagFilter=total_loss%7CPrecision%2FmAP%24#timeseries"
        for _ in range(3):  # rendering is asynchronous: a slow machine may need another go
            text = _page_text(url)
            if all(s in text for s in ("Loss /total_loss", "DetectionBoxes_Precision /mAP",
                                       "tiny/train", "tiny/eval")):
                break
    finally:
        dashboard.stop(proc)
    assert "Tags matching filter 2 cards" in text, text[:3000]
    assert "Loss /total_loss" in text, text[:3000]
    loss_card = text[text.index("Loss /total_loss"):]
    assert "tiny/train" in loss_card and f"{loss:.4f}"[:4] in loss_card
    map_card = text[text.index("DetectionBoxes_Precision /mAP"):text.index("Loss /total_loss")]
    assert "tiny/eval" in map_card
    assert f"{metrics['DetectionBoxes_Precision/mAP']:.4f}"[:4] in map_card


def test_ctrl_c_stops_tensorboard_and_tunnel(tmp_path, monkeypatch, caplog):
    """tensorboard(ngrok=True): server up on loopback, tunnel opened to its port; Ctrl-C
    closes the tunnel and ends the server. (A plain HTTP server stands in for TensorBoard.)"""
    import signal
    import sys
    import threading

    started = []

    def fake_tensorboard(logdir, port, host="127.0.0.1", **kwargs):
        started.append(subprocess.Popen([sys.executable, "-m", "http.server", str(port),
                                         "--bind", host], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        return started[-1]

    class CtrlCNgrok(FakeNgrok):
        def connect(self, *args, **kwargs):
            tunnel = super().connect(*args, **kwargs)
            main = threading.main_thread().ident  # as Ctrl-C does: SIGINT to the main thread
            threading.Timer(0.5, signal.pthread_kill, [main, signal.SIGINT]).start()
            return tunnel

    monkeypatch.setattr(dashboard, "start_tensorboard", fake_tensorboard)
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    fake = CtrlCNgrok()
    port = dashboard.free_port()
    with caplog.at_level(logging.INFO):
        assert dashboard.tensorboard(tmp_path, port=port, ngrok=True, pyngrok=fake) == 0
    assert fake.connects[0]["addr"] == str(port)
    assert fake.disconnected == ["https://abc123.ngrok.example"] and fake.killed == 1
    assert started[0].poll() is not None  # the server was stopped
    assert f"http://127.0.0.1:{port}/" in caplog.text and "NO authentication" in caplog.text
