"""``alexnet serve``: the JSON API against ``alexnet predict --json``, every kind of bad input, the batcher,
the model description, the page's escaping, and the command's own errors. All on the CPU.

The app is driven by Starlette's test client; the slow-client, busy and concurrency tests talk to a real
uvicorn server on 127.0.0.1 (a thread of this process, ``alexnet.serve.in_thread``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import io
import json
import socket
import struct
import time
import warnings
import zlib

import numpy as np
import pytest

pytest.importorskip("starlette", reason="alexnet serve needs its extra: pip install 'alexnet[serve]'")
pytest.importorskip("uvicorn", reason="alexnet serve needs its extra: pip install 'alexnet[serve]'")
pytest.importorskip("python_multipart", reason="alexnet serve needs its extra: pip install 'alexnet[serve]'")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")

with warnings.catch_warnings():  # Starlette 1.x would rather its test client ran on httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from alexnet.serve import in_thread  # noqa: E402
from alexnet.serve.app import create_app  # noqa: E402
from alexnet.serve.batcher import Batcher  # noqa: E402
from alexnet.serve.limits import Limits  # noqa: E402
from alexnet.serve.service import Service  # noqa: E402

LIMITS = Limits(max_upload_bytes=200_000, max_pixels=1_000_000, max_batch=32, max_wait_ms=20, read_timeout_s=1.0)


@pytest.fixture(scope="module")
def service(trained):
    return Service(trained["ckpt"], neighbors=trained["prep"], device="cpu", limits=LIMITS)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def images(trained):
    """A few of the built-in data's validation images (JPEG), one of each class, and one as PNG."""
    from PIL import Image

    files = sorted(p for d in sorted((trained["src"] / "val").iterdir()) for p in sorted(d.iterdir())[:1])
    png = trained["root"] / "serve-query.png"
    Image.open(files[0]).convert("RGB").save(png)
    return files + [png]


def _post(client, path, data: bytes, name="image.jpg", **params):
    return client.post(path, params=params, files={"image": (name, data, "application/octet-stream")})


def _same_top(a, b, tol=1e-6):
    assert [(t["class"], t["id"], t["index"]) for t in a] == [(t["class"], t["id"], t["index"]) for t in b]
    assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a, b)) <= tol


def _is_refusal(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    msg = body["error"]
    assert "\n" not in msg and "Traceback" not in msg and 10 < len(msg) < 300 and msg.endswith("."), msg


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("tta", ["center", "10crop"])
def test_predict_answers_what_predict_json_prints(client, trained, images, tta, capsys):
    from alexnet.cli.main import main

    assert main(["predict", str(trained["ckpt"]), *map(str, images), "--json", "--tta", tta, "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == len(images)
    for path, cli in zip(images, printed):
        data = path.read_bytes()
        multipart = _post(client, "/v1/predict", data, name=path.name, tta=tta)
        raw = client.post("/v1/predict", params={"tta": tta}, content=data,
                          headers={"content-type": "image/png" if path.suffix == ".png" else "image/jpeg"})
        for r in (multipart, raw):
            assert r.status_code == 200, r.text
            [served] = r.json()
            assert set(served) == {"image", "top"}
            _same_top(served["top"], cli["top"])
        assert multipart.json()[0]["image"] == path.name


def test_exported_safetensors_is_served_like_the_checkpoint(trained, images, tmp_path):
    from alexnet.interop.export import export_checkpoint

    out = tmp_path / "model.safetensors"
    export_checkpoint(trained["ckpt"], "safetensors", out)
    with TestClient(create_app(Service(out, device="cpu", limits=LIMITS))) as c, \
            TestClient(create_app(Service(trained["ckpt"], device="cpu", limits=LIMITS))) as ref:
        data = images[1].read_bytes()
        _same_top(_post(c, "/v1/predict", data).json()[0]["top"], _post(ref, "/v1/predict", data).json()[0]["top"])
        assert c.get("/v1/model").json()["checkpoint"]["file"] == "model.safetensors"


def test_topk_and_tta_parameters(client, images):
    data = images[0].read_bytes()
    assert len(_post(client, "/v1/predict", data, topk=2).json()[0]["top"]) == 2
    assert len(_post(client, "/v1/predict", data, topk=4).json()[0]["top"]) == 4
    for params in ({"tta": "5crop"}, {"topk": "0"}, {"topk": "two"}, {"topk": "-1"}, {"topk": "99999999"}):
        _is_refusal(_post(client, "/v1/predict", data, **params), 400)


# ---------------------------------------------------------------- neighbours
def test_neighbors_in_fc7_and_pixel_space_match_the_cli(client, trained, images, capsys):
    from alexnet.cli.main import main

    r = _post(client, "/v1/neighbors", images[0].read_bytes(), k=4)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 4 and len(body["fc7"]) == 4 and len(body["pixels"]) == 4
    assert main(["neighbors", str(trained["ckpt"]), "--data", str(trained["prep"]), "--query", str(images[0]),
                 "-k", "4", "--json", "--device", "cpu", "--no-progress"]) == 0
    [cli] = json.loads(capsys.readouterr().out)
    assert [n["id"] for n in body["fc7"]] == [n["id"] for n in cli["neighbors"]]
    assert np.allclose([n["distance"] for n in body["fc7"]], [n["distance"] for n in cli["neighbors"]], atol=1e-5)
    d = [n["distance"] for n in body["pixels"]]
    assert d == sorted(d) and d[0] > 0
    for n in body["fc7"] + body["pixels"]:  # each neighbour's thumbnail, by its position in the train split
        t = client.get(f"/v1/train/{n['id']}.png")
        assert t.status_code == 200 and t.headers["content-type"] == "image/png" and t.content[:4] == b"\x89PNG"


def test_neighbors_without_neighbors_flag_is_404(trained, images):
    with TestClient(create_app(Service(trained["ckpt"], device="cpu", limits=LIMITS))) as c:
        _is_refusal(_post(c, "/v1/neighbors", images[0].read_bytes()), 404)
        _is_refusal(c.get("/v1/train/0.png"), 404)
        assert c.get("/v1/model").json()["neighbors"] is None


def test_thumbnails_are_by_position_never_by_path(client, service):
    _is_refusal(client.get(f"/v1/train/{service.train_count}.png"), 404)
    for path in ("/v1/train/-1.png", "/v1/train/..%2F..%2Fmeta.json", "/v1/train/%2Fetc%2Fpasswd.png",
                 "/v1/train/1.png/../../../etc/passwd"):
        r = client.get(path)
        assert r.status_code == 404 and "root:" not in r.text
    # a file name in the form is only echoed: the image sent is what is classified
    ok = _post(client, "/v1/predict", _jpeg(), name="/etc/passwd")
    assert ok.status_code == 200 and ok.json()[0]["image"] == "/etc/passwd"


# ---------------------------------------------------------------- bad input
def _jpeg(size=(48, 40), quality=90) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width x height`` pixels (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary="b0undary") -> tuple[bytes, dict]:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def _bad_requests():
    jpeg = _jpeg()
    flipped = bytearray(_jpeg((64, 64)))
    flipped[len(flipped) // 2: len(flipped) // 2 + 40] = bytes(40)  # zeroed entropy-coded data: libjpeg calls it corrupt
    many_fields, many_headers = _multipart([(f"f{i}", None, b"x") for i in range(40)] + [("image", "a.jpg", jpeg)])
    two_files, two_headers = _multipart([("image", "a.jpg", jpeg), ("other", "b.jpg", jpeg)])
    no_file, no_file_headers = _multipart([("note", None, b"hello")])
    big_file, big_headers = _multipart([("image", "a.jpg", b"\xff\xd8" + bytes(LIMITS.max_upload_bytes))])
    return {
        "empty raw body": (400, dict(content=b"", headers={"content-type": "image/jpeg"})),
        "empty multipart file": (400, dict(files={"image": ("a.jpg", b"", "image/jpeg")})),
        "multipart without a file": (400, dict(content=no_file, headers=no_file_headers)),
        "malformed multipart": (400, dict(content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data"})),
        "not an image": (422, dict(files={"image": ("a.jpg", b"just some text, not an image " * 20, "image/jpeg")})),
        "an HTML page": (422, dict(content=b"<html><script>alert(1)</script></html>", headers={"content-type": "image/png"})),
        "truncated JPEG": (422, dict(files={"image": ("a.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")})),
        "damaged JPEG": (422, dict(files={"image": ("a.jpg", bytes(flipped), "image/jpeg")})),
        "decompression bomb": (413, dict(files={"image": ("bomb.png", _png_declaring(30_000, 30_000), "image/png")})),
        "wrong content type": (415, dict(content=jpeg, headers={"content-type": "text/plain"})),
        "JSON body": (415, dict(json={"image": "/etc/passwd"})),
        "over the size limit, raw": (413, dict(content=b"\xff\xd8" + bytes(LIMITS.max_upload_bytes),
                                                headers={"content-type": "image/jpeg"})),
        "over the size limit, multipart": (413, dict(content=big_file, headers=big_headers)),
        "huge multipart form": (413, dict(content=_multipart([(f"f{i}", None, bytes(10_000)) for i in range(100)])[0],
                                          headers=many_headers)),
        "too many form fields": (400, dict(content=many_fields, headers=many_headers)),
        "two files": (400, dict(content=two_files, headers=two_headers)),
        "bad Content-Length": (400, dict(content=jpeg, headers={"content-type": "image/jpeg", "content-length": "12x"})),
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_input_is_a_4xx_json_error_and_the_server_goes_on(client, case):
    status, kw = _bad_requests()[case]
    _is_refusal(client.post("/v1/predict", **kw), status)
    ok = _post(client, "/v1/predict", _jpeg())
    assert ok.status_code == 200 and len(ok.json()[0]["top"]) == 4


def test_streamed_body_over_the_limit_is_refused_while_streaming(client):
    def body():  # no Content-Length: chunked, counted as it arrives
        for _ in range(100):
            yield bytes(10_000)

    _is_refusal(client.post("/v1/predict", content=body(), headers={"content-type": "image/jpeg"}), 413)


def test_pixel_limit_is_the_servers_own(trained):
    small = Limits(max_pixels=40 * 40)
    with TestClient(create_app(Service(trained["ckpt"], device="cpu", limits=small))) as c:
        _is_refusal(_post(c, "/v1/predict", _jpeg((48, 40))), 413)
        assert _post(c, "/v1/predict", _jpeg((40, 40))).status_code == 200


def test_unknown_routes_and_methods_are_json(client):
    _is_refusal(client.get("/nothing/here"), 404)
    _is_refusal(client.get("/v1/predict"), 405)
    _is_refusal(client.delete("/v1/model"), 405)


def test_an_unexpected_failure_is_a_500_without_traceback(trained, monkeypatch):
    s = Service(trained["ckpt"], device="cpu", limits=LIMITS)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        monkeypatch.setattr(s.ck, "probabilities", lambda x: 1 / 0)
        _is_refusal(_post(c, "/v1/predict", _jpeg()), 500)
        monkeypatch.undo()
        assert _post(c, "/v1/predict", _jpeg()).status_code == 200  # the batcher went on


# ---------------------------------------------------------------- model, page, OpenAPI
def test_model_description(client, trained, service):
    m = client.get("/v1/model").json()
    assert m["model"] == "alexnet-small" and m["num_classes"] == 4
    assert [c["class"] for c in m["classes"]] == [f"{c} shape" for c in trained["meta"]["classes"]]
    assert m["checkpoint"]["sha256"] == hashlib.sha256(trained["ckpt"].read_bytes()).hexdigest()
    assert m["eval_transform"]["crop"] == 32 and m["eval_transform"]["resize"] == 32
    assert m["neighbors"]["train_images"] == service.train_count == 80
    assert m["limits"]["max_upload_bytes"] == LIMITS.max_upload_bytes
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["batches"] >= 1


def test_openapi_describes_the_api(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/predict", "/v1/neighbors", "/v1/model", "/healthz"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/v1/predict"] and "422" in map(str, spec["paths"]["/v1/predict"]["post"]["responses"])


def test_page_is_served_and_never_parses_text_as_html(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/app.js").status_code == 200 and client.get("/style.css").status_code == 200
    js = importlib.resources.files("alexnet.serve").joinpath("static", "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js
    assert "textContent" in js
    html = page.text
    assert "http://" not in html and "https://" not in html  # no CDN: works offline


def test_class_names_are_returned_verbatim_in_json(tmp_path, images):
    import torch
    from helpers import small_checkpoint

    from alexnet.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "html.ckpt"
    small_checkpoint(path)
    ck = load_checkpoint(path)
    ck["class_names"] = ['<img src=x onerror="alert(1)">', "a & b", "</script>", "\u00e9t\u00e9"]
    ck["data_stats"] = {"mean_image": torch.full((32, 32, 3), 120.0), "mean_rgb": torch.full((3,), 120.0)}
    save_checkpoint(path, ck)
    with TestClient(create_app(Service(path, device="cpu", limits=LIMITS))) as c:
        names = {t["class"] for t in _post(c, "/v1/predict", _jpeg()).json()[0]["top"]}
        assert names == set(ck["class_names"])


# ---------------------------------------------------------------- the batcher
def test_batcher_batches_what_arrives_together_and_isolates_failures():
    seen = []

    def run(items):
        seen.append(list(items))
        if "boom" in items:
            raise ValueError("boom")
        return [i * 2 for i in items]

    async def main():
        b = Batcher(run, max_batch=8, max_wait_ms=50, size=lambda i: 3 if i == 7 else 1)
        await b.start()
        try:
            out = await asyncio.gather(*(b.submit(i) for i in range(6)))
            assert out == [0, 2, 4, 6, 8, 10]
            bad = await asyncio.gather(b.submit(1), b.submit("boom"), return_exceptions=True)
            assert all(isinstance(x, ValueError) for x in bad)  # its whole batch fails, each on its own
            assert await b.submit(21) == 42  # and the loop goes on
            out = await asyncio.gather(*(b.submit(i) for i in (7, 7, 7, 1)))  # views: 3 + 3 fit 8, the third waits
            assert out == [14, 14, 14, 2]
        finally:
            await b.stop()

    asyncio.run(main())
    assert seen[0] == list(range(6))
    assert [len(s) for s in seen[-2:]] == [2, 2] and sum(3 if i == 7 else 1 for i in seen[-2]) <= 8


@pytest.fixture(scope="module")
def live(service):
    with in_thread(service) as url:
        yield url


def test_concurrent_requests_give_the_answers_of_single_ones(live, client, images):
    import httpx

    jobs = [(p, tta) for p in images for tta in ("center", "10crop")] * 2
    single = {(p, tta): _post(client, "/v1/predict", p.read_bytes(), tta=tta).json()[0]["top"] for p, tta in jobs}
    before = httpx.get(f"{live}/healthz").json()

    async def main():
        async with httpx.AsyncClient(base_url=live, timeout=30) as c:
            return await asyncio.gather(*(
                c.post("/v1/predict", params={"tta": tta}, files={"image": (p.name, p.read_bytes(), "image/jpeg")})
                for p, tta in jobs))

    rs = asyncio.run(main())
    for (p, tta), r in zip(jobs, rs):
        assert r.status_code == 200, r.text
        _same_top(r.json()[0]["top"], single[(p, tta)], tol=1e-5)
    after = httpx.get(f"{live}/healthz").json()
    assert after["batches"] - before["batches"] < len(jobs)  # some requests shared a forward pass
    assert after["largest_batch"] > 10  # a 10-patch request and another in one pass at least


def _slow_client(url: str, sent: bytes, declared: int) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
              f"Content-Length: {declared}\r\n\r\n".encode() + sent)
    return s


def _response(s: socket.socket, timeout: float = 10.0) -> tuple[int, object]:
    """Status and JSON body of the one HTTP response ``s`` receives (by its Content-Length)."""
    s.settimeout(timeout)
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
            if len(body) >= length:
                return int(head.split()[1]), json.loads(body[:length])
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data[:200]!r}")
        data += chunk


def test_a_slow_client_is_answered_408_and_others_are_served_meanwhile(live, images):
    import httpx

    jpeg = images[0].read_bytes()
    start = time.monotonic()
    slow = _slow_client(live, jpeg[:100], len(jpeg))  # and then nothing more
    try:
        r = httpx.post(f"{live}/v1/predict", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=10)
        assert r.status_code == 200 and time.monotonic() - start < LIMITS.read_timeout_s
        status, body = _response(slow)
    finally:
        slow.close()
    assert status == 408 and "did not arrive" in body["error"]
    assert time.monotonic() - start >= LIMITS.read_timeout_s


def test_a_full_server_answers_503_at_once(trained, images):
    import httpx

    s = Service(trained["ckpt"], device="cpu", limits=Limits(max_inflight=2, read_timeout_s=3.0))
    jpeg = images[0].read_bytes()
    with in_thread(s) as url:
        holders = [_slow_client(url, jpeg[:10], len(jpeg)) for _ in range(2)]
        try:
            time.sleep(0.3)  # both are reading their bodies now
            r = httpx.post(f"{url}/v1/predict", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=10)
            _is_refusal(r, 503)
            assert r.headers["retry-after"] == "1"
            for h in holders:  # the held requests finish once their bodies arrive
                h.sendall(jpeg[10:])
                assert _response(h)[0] == 200
        finally:
            for h in holders:
                h.close()
        assert httpx.post(f"{url}/v1/predict", content=jpeg, headers={"content-type": "image/jpeg"}).status_code == 200


# ---------------------------------------------------------------- the command
def test_serve_without_the_extra_is_one_line_naming_it(trained, monkeypatch, capsys):
    import importlib.util

    from alexnet.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", str(trained["ckpt"]), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'alexnet[serve]'" in err and "uvicorn" in err


def test_serve_command_errors_are_one_line(trained, tmp_path, capsys):
    from alexnet.cli.main import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        cases = [
            ["serve", str(trained["ckpt"]), "--port", str(port), "--device", "cpu"],  # address in use
            ["serve", str(tmp_path / "missing.ckpt"), "--port", "0", "--device", "cpu"],
            ["serve", str(trained["ckpt"]), "--port", "0", "--neighbors", str(tmp_path / "nope"), "--device", "cpu"],
            ["serve", str(trained["ckpt"]), "--port", "70000"],
            ["serve", str(trained["ckpt"]), "--max-upload-bytes", "0"],
        ]
        for argv in cases:
            assert main(argv) == 2, argv
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and "Traceback" not in err and "error" in err, err
    finally:
        taken.close()


def test_binds_localhost_by_default():
    from alexnet.cli.main import build_parser

    args = build_parser().parse_args(["serve", "x.ckpt"])
    assert args.host == "127.0.0.1" and args.port == 8000
