"""tfod.dashboard: TensorBoard answers on loopback; the ngrok tunnel through the real pyngrok
against a stub ``ngrok`` executable (the internet is the only thing not reached)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tfod import dashboard
from tfod.errors import TfodError

TOKEN = "2abcSECRETtokenXYZ_123"
PASSWORD = "correct-horse-battery"
STUB_URL = "https://stub.ngrok.example"

#: A stand-in for the ngrok agent, run by the real pyngrok. It appends its argv and
#: environment (and later the tunnel requests it gets) to $STUB_RECORD as JSON lines.
#: STUB_MODE=ok: prints the three startup lines pyngrok waits for (pyngrok/process.py:
#: "starting web service" with addr=, "tunnel session started", "client session
#: established") and serves the agent API pyngrok calls (GET/POST /api/endpoints,
#: DELETE /api/endpoints/NAME) on 127.0.0.1. STUB_MODE=fail: prints an error line
#: quoting the token and the password (as a careless agent might) and exits 1.
STUB = r"""#!{python}
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

def note(kind, value):
    with open(os.environ["STUB_RECORD"], "a") as f:
        f.write(json.dumps({{kind: value}}) + "\n")

note("argv", sys.argv)
note("env", dict(os.environ))
note("pid", os.getpid())
if os.environ.get("STUB_MODE") == "fail":
    secret = os.environ.get("NGROK_AUTHTOKEN", "")
    password = os.environ.get("STUB_ECHO", "")
    print('t=2026-01-01T00:00:00+0000 lvl=eror msg="session closing" '
          f'err="authentication failed: token {{secret}} rejected; options '
          + json.dumps(json.dumps(password))[1:-1] + '"', flush=True)
    sys.exit(1)

class API(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, code, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send(200, {{"endpoints": []}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        note("post", body)
        self.send(201, {{"name": body["name"], "url": "{url}",
                         "uri": "/api/endpoints/" + body["name"]}})

    def do_DELETE(self):
        note("delete", self.path)
        self.send(204)

server = HTTPServer(("127.0.0.1", 0), API)
threading.Thread(target=server.serve_forever, daemon=True).start()
t = "t=2026-01-01T00:00:00+0000 lvl=info"
print(f'{{t}} msg="starting web service" obj=web addr=127.0.0.1:{{server.server_port}}',
      flush=True)
print(f'{{t}} msg="tunnel session started" obj=tunnels.session', flush=True)
print(f'{{t}} msg="client session established" obj=tunnels.session', flush=True)
threading.Event().wait()
"""


@pytest.fixture
def stub_ngrok(tmp_path, monkeypatch):
    """The stub agent at $PYNGROK_NGROK_PATH, pyngrok's config in tmp_path; returns a
    namespace with ``record()`` (the parsed JSON lines) and ``mode(name)``."""
    from pyngrok import conf, installer

    path = tmp_path / "bin" / "ngrok"
    path.parent.mkdir()
    path.write_text(STUB.format(python=sys.executable, url=STUB_URL))
    path.chmod(0o755)
    record = tmp_path / "ngrok-record.jsonl"
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(path))
    monkeypatch.setenv("STUB_RECORD", str(record))
    monkeypatch.setenv("STUB_MODE", "ok")
    monkeypatch.setattr(conf, "DEFAULT_NGROK_CONFIG_PATH", str(tmp_path / "ngrok.yml"))

    def no_download(*args, **kwargs):  # the edge we cannot reach: it must not be tried
        raise AssertionError("pyngrok tried to download ngrok")

    monkeypatch.setattr(installer, "install_ngrok", no_download)

    def read():
        lines = record.read_text().splitlines() if record.exists() else []
        out: dict = {}
        for line in lines:
            for key, value in json.loads(line).items():
                out.setdefault(key, []).append(value)
        return out

    return type("Stub", (), {"path": path, "record": staticmethod(read), "tmp": tmp_path})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_token_and_password_reach_ngrok_but_no_argv_log_or_output(stub_ngrok, monkeypatch,
                                                                  caplog, capsys):
    """The real pyngrok, NGROK_AUTHTOKEN set: ngrok gets the token from its environment and
    the password through its loopback API; neither is in its argv (pyngrok would append
    ``--authtoken TOKEN``), nor in any log line (pyngrok's own DEBUG ones included)."""
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        with dashboard.Tunnel(6006, auth=f"alice:{PASSWORD}") as tunnel:
            assert tunnel.public_url == STUB_URL
            record = stub_ngrok.record()
            (pid,) = record["pid"]
            assert _alive(pid)
    (argv,) = record["argv"]
    assert argv[1:] == ["start", "--none", "--log", "stdout"]
    assert not any(TOKEN in a or PASSWORD in a for a in argv)
    assert record["env"][0]["NGROK_AUTHTOKEN"] == TOKEN  # ngrok reads it there
    (post,) = record["post"]
    assert post["basic_auth"] == [f"alice:{PASSWORD}"]
    assert post["upstream"] == {"url": "http://localhost:6006"}
    record = stub_ngrok.record()
    assert record["delete"] == [f"/api/endpoints/{post['name']}"]
    for _ in range(50):  # pyngrok kills the agent; the kernel reaps it
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid)
    out = caplog.text + "".join(capsys.readouterr())
    assert STUB_URL in out and "alice" in out
    assert TOKEN not in out and PASSWORD not in out
    assert "NO authentication" not in out


def test_tunnel_without_auth_warns(stub_ngrok, monkeypatch, caplog):
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    with caplog.at_level(logging.INFO):
        dashboard.Tunnel(6006).close()
    (post,) = stub_ngrok.record()["post"]
    assert "basic_auth" not in post
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "NO authentication" in warnings[0].getMessage()
    assert "--auth" in warnings[0].getMessage()


@pytest.mark.parametrize("token_set", [True, False], ids=["token-set", "token-unset"])
def test_failing_ngrok_is_a_clear_redacted_error(stub_ngrok, monkeypatch, caplog, token_set):
    """ngrok exits with an error quoting the token and a JSON-escaped password: a TfodError
    naming the right place, with neither secret in it; no hint to set a variable that is set."""
    monkeypatch.setenv("STUB_MODE", "fail")
    password = f'{PASSWORD}"\\q'  # its JSON form differs: \" and \\
    monkeypatch.setenv("STUB_ECHO", password)
    if token_set:
        monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    else:
        monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    with caplog.at_level(logging.DEBUG), pytest.raises(
            TfodError, match="ngrok could not open a tunnel") as info:
        dashboard.Tunnel(6006, auth=f"bob:{password}")
    text = str(info.value)
    assert "authentication failed" in caplog.text  # ngrok's error line is logged, redacted
    assert TOKEN not in caplog.text and PASSWORD not in caplog.text
    assert "authentication failed" in text  # ngrok's own reason is kept
    assert TOKEN not in text and PASSWORD not in text
    if token_set:
        assert info.value.where == "NGROK_AUTHTOKEN" and "set NGROK_AUTHTOKEN" not in text
    else:
        assert "set NGROK_AUTHTOKEN" in text
    (argv,) = stub_ngrok.record()["argv"]
    assert not any(TOKEN in a for a in argv)


def test_missing_ngrok_is_a_clear_error_without_download(stub_ngrok, monkeypatch):
    """No agent at $PYNGROK_NGROK_PATH: a TfodError naming the path and how to install it;
    pyngrok's downloader is never called (the fixture turns a call into a failure)."""
    missing = stub_ngrok.tmp / "nowhere" / "ngrok"
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(missing))
    with pytest.raises(TfodError, match="ngrok agent was not found") as info:
        dashboard.Tunnel(6006, auth=f"bob:{PASSWORD}")
    assert info.value.where == str(missing) and "PYNGROK_NGROK_PATH" in str(info.value)
    assert not stub_ngrok.record()


def test_auth_is_checked():
    with pytest.raises(TfodError, match="8 to 128"):
        dashboard.Tunnel(6006, auth="bob:short")
    with pytest.raises(TfodError, match="USER:PASSWORD"):
        dashboard.Tunnel(6006, auth="no-colon-here")


def test_auth_from_environment_or_prompt(monkeypatch):
    monkeypatch.setenv(dashboard.AUTH_ENV, f"carol:{PASSWORD}")
    assert dashboard.resolve_auth(None) == f"carol:{PASSWORD}"
    assert dashboard.resolve_auth("dave:another-password") == "dave:another-password"
    asked = []
    answer = dashboard.resolve_auth("-", prompt=lambda text: asked.append(text)
                                    or "eve:pw-12345678")
    assert answer == "eve:pw-12345678" and "USER:PASSWORD" in asked[0]
    monkeypatch.delenv(dashboard.AUTH_ENV)
    assert dashboard.resolve_auth(None) is None

    def closed(text):
        raise EOFError

    with pytest.raises(TfodError, match=dashboard.AUTH_ENV):
        dashboard.resolve_auth("-", prompt=closed)
    monkeypatch.setenv(dashboard.AUTH_ENV, "bad")
    with pytest.raises(TfodError, match="USER:PASSWORD"):
        dashboard.resolve_auth(None)


@pytest.mark.parametrize("form", ["raw", "json", "repr", "url", "url-plus", "base64"])
def test_redaction_covers_escaped_forms(form):
    import base64
    import urllib.parse

    password = 'p"w/é x%&+\\1'
    auth = f"alice:{password}"
    shown = {"raw": password, "json": json.dumps(password), "repr": repr({"a": password}),
             "url": urllib.parse.quote(password, safe=""),
             "url-plus": urllib.parse.quote_plus(auth),
             "base64": base64.b64encode(auth.encode()).decode()}[form]
    text = dashboard._redact(f"error: {shown} ({TOKEN!r})", TOKEN, auth)
    assert "***" in text and TOKEN not in text
    assert shown not in text and password not in text


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


def test_ctrl_c_stops_tensorboard_and_tunnel(stub_ngrok, monkeypatch, caplog):
    """tensorboard(ngrok=True), real pyngrok, stub agent: server up on loopback, tunnel opened
    to its port with the password from $TFOD_TB_AUTH; Ctrl-C closes the tunnel, ends the agent
    and the server. (A plain HTTP server stands in for TensorBoard.)"""
    import signal
    import threading

    started = []

    opened = threading.Event()

    class Server(subprocess.Popen):
        def wait(self, timeout=None):
            opened.set()  # tensorboard() waits on its server once the tunnel is open
            return super().wait(timeout)

    def fake_tensorboard(logdir, port, host="127.0.0.1", **kwargs):
        started.append(Server([sys.executable, "-m", "http.server", str(port), "--bind", host],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return started[-1]

    def blocked_in_wait(tid):
        """The thread sits in the wait4/waitid system call (Linux /proc), where a signal
        interrupts it; a signal that lands just before would wait for the next bytecode.
        (x86-64 system call numbers; elsewhere, no wait.)"""
        import platform

        if platform.machine() != "x86_64":
            return True
        try:
            return Path(f"/proc/self/task/{tid}/syscall").read_text().split()[0] in (
                "61", "247")
        except (OSError, IndexError):
            return True

    def ctrl_c_once_tunnel_is_open():
        opened.wait(120)  # Ctrl-C while tensorboard() waits, whatever the machine's load
        main = threading.main_thread()
        deadline = time.monotonic() + 60
        while not blocked_in_wait(main.native_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(main.ident, signal.SIGINT)  # as Ctrl-C does

    # a shell that starts a job in the background (nohup, `&` in a script) ignores SIGINT,
    # and Python keeps an ignored SIGINT: give the test Python's own Ctrl-C handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(dashboard, "start_tensorboard", fake_tensorboard)
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    monkeypatch.setenv(dashboard.AUTH_ENV, f"frank:{PASSWORD}")
    port = dashboard.free_port()
    threading.Thread(target=ctrl_c_once_tunnel_is_open, daemon=True).start()
    try:
        with caplog.at_level(logging.DEBUG):
            assert dashboard.tensorboard(stub_ngrok.tmp, port=port, ngrok=True) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    assert opened.is_set()
    record = stub_ngrok.record()
    (post,) = record["post"]
    assert post["upstream"] == {"url": f"http://localhost:{port}"}
    assert post["basic_auth"] == [f"frank:{PASSWORD}"]
    assert record["delete"] == [f"/api/endpoints/{post['name']}"]
    assert started[0].poll() is not None  # the server was stopped
    assert f"http://127.0.0.1:{port}/" in caplog.text and STUB_URL in caplog.text
    assert "NO authentication" not in caplog.text and PASSWORD not in caplog.text


def test_cli_ngrok_keeps_secrets_off_every_command_line(stub_ngrok, tmp_path):
    """`tfod tensorboard --ngrok` as a user runs it, token and password from the environment:
    they are in neither tfod's nor ngrok's argv, nor in its output.
    A failing agent ends it with exit code 1 and a clear error, without hanging."""
    env = {**os.environ, "NGROK_AUTHTOKEN": TOKEN, dashboard.AUTH_ENV: f"gina:{PASSWORD}",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "STUB_MODE": "fail",
           "STUB_ECHO": PASSWORD}
    (tmp_path / "runs").mkdir()
    cmd = [sys.executable, "-m", "tfod.cli", "tensorboard", "--logdir", str(tmp_path / "runs"),
           "--port", str(dashboard.free_port()), "--ngrok"]
    t0 = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.time() - t0
    assert done.returncode == 1, done.stderr[-2000:]
    assert "ngrok could not open a tunnel" in done.stderr and "Traceback" not in done.stderr
    assert "set NGROK_AUTHTOKEN" not in done.stderr  # it is set
    assert TOKEN not in done.stdout + done.stderr and PASSWORD not in done.stdout + done.stderr
    (argv,) = stub_ngrok.record()["argv"]
    assert not any(TOKEN in a or PASSWORD in a for a in argv + cmd)
    print(f"tfod tensorboard --ngrok with a failing agent ended in {seconds:.1f}s")
