"""`i2i serve`: the HTTP API (sizes, formats, every refusal as a one-line JSON error, serving on after each), the
page in a real browser against a real server, and the command's own errors."""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from conftest import one_line_error
from i2i.checkpoint import atomic_save, generator_record
from i2i.cli import serve as serve_cli
from i2i.serve import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, create_app, load_generators, unique_names
from i2i.translate import Translator

RNG = np.random.default_rng(0)


def noise(h: int, w: int, c: int = 3, dtype=np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    return RNG.integers(0, top, (h, w, c), endpoint=True).astype(dtype)


def encoded(img: np.ndarray, suffix: str = ".png") -> bytes:
    """An RGB(A) or gray image's file bytes (OpenCV wants BGR)."""
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[:, :, [2, 1, 0, 3][: img.shape[2]]]
    ok, buf = cv2.imencode(suffix, img)
    assert ok
    return buf.tobytes()


def decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` × ``height`` RGB, with a few bytes of its pixel data (as a decompression bomb,
    whose zeros compress to nothing, would have)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, registry) -> list[Path]:
    """Two tiny generators, both files named G.pt: A→B colour (domains and method recorded), and colour → gray."""
    paths = []
    for out_channels, prov in ((3, {"method": "cyclegan", "domains": ["A", "B"]}), (1, {})):
        torch.manual_seed(out_channels)
        entry = registry.get("generator", "resnet_6blocks")
        params = entry.validate({"ngf": 4})
        net = entry.build(3, out_channels, **params)
        path = tmp_path_factory.mktemp("serve") / "G.pt"
        atomic_save(generator_record(net, "resnet_6blocks", params, 3, out_channels,
                                     {"generator_plugin": entry.plugin, **prov}), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def generators(ckpts) -> dict[str, Translator]:
    return load_generators(ckpts, "cpu")


@pytest.fixture(scope="module")
def client(generators) -> TestClient:
    return TestClient(create_app(generators))


def one_line(res: httpx.Response, status: int, *fragments: str) -> str:
    """The answer is ``status`` with a JSON body {"error": one line holding ``fragments``}."""
    assert res.status_code == status, (res.status_code, res.text)
    assert res.headers["content-type"].startswith("application/json"), res.headers
    message = res.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message, message
    for f in fragments:
        assert f in message, message
    return message


@pytest.mark.parametrize("kind", ["png", "jpeg", "16-bit", "gray", "rgba"])
def test_good_images_come_back_at_their_size_as_png(client, kind):
    img = {"png": noise(45, 61), "jpeg": noise(50, 33), "16-bit": noise(40, 52, dtype=np.uint16),
           "gray": noise(37, 64, 1), "rgba": noise(48, 64, 4)}[kind]
    res = client.post("/translate?generator=G", content=encoded(img, ".jpg" if kind == "jpeg" else ".png"))
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "image/png" and res.content.startswith(b"\x89PNG")
    assert res.headers["x-i2i-generator"] == "G" and float(res.headers["x-i2i-seconds"]) >= 0
    out = decoded(res.content)
    assert out.shape[:2] == img.shape[:2]
    assert out.dtype == (np.uint16 if kind == "16-bit" else np.uint8)
    assert out.shape[2] == (4 if kind == "rgba" else 3)  # gray in, colour out: the generator's channels
    if kind == "rgba":
        assert np.array_equal(out[:, :, 3], img[:, :, 3])  # alpha passed through


def test_json_variant(client):
    img = noise(33, 47)
    b64 = base64.b64encode(encoded(img)).decode()
    for image in (b64, "data:image/png;base64," + b64, "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))):
        res = client.post("/translate.json", json={"image": image, "generator": "G-2"})
        assert res.status_code == 200, res.text
        doc = res.json()
        assert (doc["width"], doc["height"], doc["generator"]) == (47, 33, "G-2") and doc["seconds"] >= 0
        assert decoded(base64.b64decode(doc["image"])).shape == (33, 47)  # G-2 gives gray


def test_two_generators_are_listed_and_selectable(client, generators):
    listed = client.get("/generators").json()
    assert [g["name"] for g in listed] == ["G", "G-2"] == list(generators)
    assert listed[0]["domains"] == ["A", "B"] and listed[0]["method"] == "cyclegan"
    assert listed[0]["architecture"] == "resnet_6blocks" and listed[1]["out_channels"] == 1
    png = encoded(noise(40, 40))
    first, second = (decoded(client.post(f"/translate?generator={n}", content=png).content) for n in ("G", "G-2"))
    assert first.shape == (40, 40, 3) and second.shape == (40, 40)
    one_line(client.post("/translate", content=png), 400, "several generators are loaded (G, G-2)",
             "?generator=NAME")
    only = TestClient(create_app({"G": generators["G"]}))
    assert decoded(only.post("/translate", content=png).content).shape == (40, 40, 3)  # optional with one
    assert unique_names([Path("a/G.pt"), Path("b/G.pt"), Path("c/G_AB.pt"), Path("d/G.pt")]) == [
        "G", "G-2", "G_AB", "G-3"]


def bad_requests(good: bytes) -> list[tuple[str, str, dict, int, list[str]]]:
    """Refused requests to an app with --max-bytes 100000 and --max-pixels 8100: (method, path, httpx keyword
    arguments, status, fragments of the one-line message)."""
    truncated = encoded(noise(64, 64))

    async def chunks():  # a body without Content-Length: the limit is checked while it is read
        for _ in range(30):
            yield bytes(8192)

    j = {"generator": "G"}
    return [  # (method, path, keyword arguments, status, fragments of the message)
        ("POST", "/translate?generator=G", {"content": b"hello, not an image"}, 400,
         ["what was sent is not an image i2i can read", ".png"]),
        ("POST", "/translate?generator=G", {"content": truncated[: len(truncated) // 2]}, 400,
         ["PNG image could not be decoded", "corrupt or truncated", "complete file"]),
        ("POST", "/translate?generator=G", {"content": truncated[:20]}, 400, ["PNG image is corrupt or truncated"]),
        ("POST", "/translate?generator=G", {"content": b""}, 400, ["body is empty", "--data-binary"]),
        ("POST", "/translate?generator=G", {"content": bytes(150_000)}, 413,
         ["the image is 146.5 KiB, over this server's limit of 97.7 KiB (--max-bytes 100000)", "smaller file"]),
        ("POST", "/translate?generator=G", {"content": chunks()}, 413,
         ["the image is over this server's limit of 97.7 KiB (--max-bytes 100000)"]),
        ("POST", "/translate?generator=G", {"content": encoded(noise(96, 96))}, 413,
         ["96×96 px", "--max-pixels 8100"]),
        ("POST", "/translate?generator=G", {"content": png_header(5000, 4000)}, 413, ["5000×4000 px (20.0 MP)"]),
        ("POST", "/translate?generator=G", {"content": png_header(50_000, 40_000)}, 413,
         ["2000000000 px (2000.0 MP)"]),
        ("POST", "/translate?generator=H", {"content": good}, 404, ["no generator 'H'", "G, G-2"]),
        ("POST", "/translate?generator=g-2", {"content": good}, 404, ["did you mean 'G-2'?"]),
        ("POST", "/translate.json", {"content": b'{"image": '}, 400, ["not valid JSON", '"image": "<base64>"']),
        ("POST", "/translate.json", {"json": [1, 2]}, 400, ['no "image" string']),
        ("POST", "/translate.json", {"json": {"image": "***", **j}}, 400, ["not valid base64", "base64 -w0"]),
        ("POST", "/translate.json", {"json": {"image": "data:image/png", **j}}, 400, ['"image" is empty']),
        ("POST", "/translate.json", {"json": {"image": base64.b64encode(b"GIF89a...").decode(), **j}}, 400,
         ["GIF image"]),
        ("POST", "/translate.json", {"json": {"image": base64.b64encode(bytes(100_001)).decode(), **j}}, 413,
         ["the image is 97.7 KiB, over this server's limit of 97.7 KiB (--max-bytes 100000)"]),
        ("POST", "/translate.json", {"json": {"image": "A" * 200_000, **j}}, 413,
         ["the JSON body is 195.3 KiB, over", "(--max-bytes 100000, base64-encoded)"]),
        ("POST", "/translate.json", {"json": {"image": base64.b64encode(good).decode(), "generator": 3}}, 400,
         ['"generator" must be']),
        ("GET", "/translate", {}, 405, ["GET is not allowed on /translate; use POST", "image file's bytes"]),
        ("PUT", "/translate.json", {"content": b"{}"}, 405, ["use POST"]),
        ("POST", "/generators", {}, 405, ["use GET"]),
        ("GET", "/nowhere", {}, 404, ["nothing at /nowhere", "POST /translate"]),
    ]


def test_a_burst_of_bad_and_good_requests(generators, tmp_path, monkeypatch):
    """Bad requests mixed with good ones, sent at once: each bad one is its 4xx with a one-line message naming the
    problem and the fix, every good one is translated, and the server serves on; nothing is written to disk."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    app = create_app(generators, max_bytes=100_000, max_pixels=90 * 90)
    good = encoded(noise(48, 64))
    bad = bad_requests(good)
    j = {"generator": "G"}
    good_requests = [("POST", "/translate?generator=G", {"content": good}, 200, []),
                     ("POST", "/translate.json", {"json": {"image": base64.b64encode(good).decode(), **j}}, 200, [])]
    requests = [r for i, b in enumerate(bad) for r in (b, good_requests[i % 2])]

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
            return await asyncio.gather(*(c.request(m, p, **kw) for m, p, kw, _, _ in requests))

    started = time.perf_counter()
    # in a thread of its own: the browser tests' Playwright keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        answers = pool.submit(asyncio.run, burst()).result()
    for (_, path, _, status, fragments), res in zip(requests, answers, strict=True):
        if status == 200:
            assert res.status_code == 200, res.text
            out = decoded(res.content if path == "/translate?generator=G" else base64.b64decode(res.json()["image"]))
            assert out.shape == (48, 64, 3)
        else:
            one_line(res, status, *fragments)
    assert time.perf_counter() - started < 20
    with TestClient(app) as c:  # and after all that, it still translates
        assert decoded(c.post("/translate?generator=G-2", content=good).content).shape == (48, 64)
    assert not list(cwd.iterdir()) and not list(tmp.iterdir())  # decoded from memory: no file anywhere


def test_an_unexpected_failure_is_a_logged_500_and_the_server_serves_on(generators, caplog):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise ZeroDivisionError("a bug in the generator")

    c = TestClient(create_app({"broken": Broken(), "G": generators["G"]}))  # a bare module runs on the CPU
    assert c.get("/generators").json()[0]["architecture"] == "Broken"
    with caplog.at_level(logging.ERROR, logger="i2i.serve"):
        res = c.post("/translate?generator=broken", content=encoded(noise(32, 32)))
    one_line(res, 500, "internal error (ZeroDivisionError: a bug in the generator)", "keeps serving")
    assert "Traceback" in caplog.text and "/translate failed" in caplog.text
    assert c.post("/translate?generator=G", content=encoded(noise(32, 32))).status_code == 200


def test_the_page_is_self_contained(client):
    res = client.get("/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    html = res.text
    assert f'const LIMITS = {{"maxBytes": {DEFAULT_MAX_BYTES}, "maxPixels": {DEFAULT_MAX_PIXELS}}};' in html
    assert "default-src 'self'" in res.headers["content-security-policy"]
    for outside in ("http://", "https://", "//cdn", "@import"):  # nothing fetched from elsewhere
        assert outside not in html, outside
    assert (serve_cli.MAX_BYTES, serve_cli.MAX_PIXELS) == (DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, url: str, seconds: float = 40) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"i2i serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "generators", trust_env=False, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("i2i serve did not start in time")


def test_the_page_in_a_browser_against_a_real_server(page, ckpts, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    img = tmp_path / "photo.png"
    img.write_bytes(encoded(noise(50, 70)))
    (tmp_path / "notes.png").write_text("not an image")
    proc = subprocess.Popen([sys.executable, "-m", "i2i", "serve", "--ckpt", ckpts[0], "--ckpt", ckpts[1],
                             "--port", str(port), "--device", "cpu"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_serving(proc, url)
        page.goto(url)
        page.wait_for_function("() => document.querySelectorAll('#generator option').length === 2")
        assert page.locator("#generator option").first.inner_text() == "G: A → B, cyclegan, resnet_6blocks"
        page.set_input_files("#file", str(img))
        page.wait_for_function("() => document.getElementById('output-img').naturalWidth > 0", timeout=20_000)
        sizes = page.evaluate("['input-img', 'output-img'].map(id => { const i = document.getElementById(id); "
                              "return [i.naturalWidth, i.naturalHeight]; })")
        assert sizes == [[70, 50], [70, 50]]
        assert page.locator("#slider").get_attribute("type") == "range"
        page.locator("#slider").fill("20")
        assert page.evaluate("document.getElementById('compare').style.getPropertyValue('--pos')") == "20%"
        with page.expect_download() as download:  # the download link gives the PNG, named after the input
            page.click("#download")
        assert download.value.suggested_filename == "photo_G.png"
        assert decoded(Path(download.value.path()).read_bytes()).shape == (50, 70, 3)
        page.select_option("#generator", "G-2")  # another generator: translated again, named after it
        page.wait_for_function("() => document.getElementById('download').download === 'photo_G-2.png'")
        page.set_input_files("#file", str(tmp_path / "notes.png"))  # the API's one-line error, in the page
        page.wait_for_selector("#error:not([hidden])")
        assert "not an image i2i can read" in page.inner_text("#error")
        assert page.locator("#result").is_hidden()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, stderr
    assert f"open {url} (Ctrl-C stops)" in stdout and "2 generator(s) (G, G-2) on cpu" in stdout
    assert stdout.rstrip().endswith("stopped") and "Traceback" not in stderr, (stdout, stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png", "photo.png"]


def test_cli_errors_are_one_line(cli, ckpts, tmp_path, monkeypatch):
    def never(*args):
        raise AssertionError("would have served")

    monkeypatch.setattr(serve_cli, "_serve", never)
    one_line_error(cli("serve", "--ckpt", tmp_path / "none.pt"), "generator checkpoint not found")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    one_line_error(cli("serve", "--ckpt", ckpts[0], "--ckpt", tmp_path / "other.pt", "--device", "cpu"),
                   "other.pt is not an i2i generator checkpoint")
    one_line_error(cli("serve", "--ckpt", ckpts[0], "--port", "70000"), "--port 70000 is not a port: use 1 to 65535")
    one_line_error(cli("serve", "--ckpt", ckpts[0], "--max-pixels", "0"), "--max-pixels and --max-bytes must be >= 1")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(cli("serve", "--ckpt", ckpts[0], "--port", port, "--device", "cpu"),
                       f"cannot listen on 127.0.0.1:{port}", "choose another --port")
        res = cli("serve", "--ckpt", ckpts[0], "--port", port, "--host", "0.0.0.0", "--device", "cpu")
        one_line_error(res, f"cannot listen on 0.0.0.0:{port}", alone=False)
    one_line_error(cli("serve", "--ckpt", ckpts[0], "--host", "no-such-host.invalid"), "--host no-such-host.invalid")
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    one_line_error(cli("serve", "--ckpt", ckpts[0]), 'pip install "i2i[serve]"')


def test_a_host_other_than_this_machine_is_warned_about(cli, ckpts, monkeypatch):
    """Bound to every network: one warning line before the URL (here 127.0.0.1, the one that opens)."""
    served = []
    monkeypatch.setattr(serve_cli, "_serve", lambda application, sock: served.append(sock.getsockname()))
    res = cli("serve", "--ckpt", ckpts[0], "--host", "0.0.0.0", "--port", _free_port(), "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    warnings = [li for li in res.stderr.splitlines() if li.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: listening on 0.0.0.0: anyone who can reach")
    port = served[0][1]
    assert f"open http://127.0.0.1:{port}/ (Ctrl-C stops)" in res.stdout and served[0][0] == "0.0.0.0"
