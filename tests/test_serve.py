"""`vitkit serve` as a client meets it: the library's numbers over HTTP, hostile requests answered with a 4xx
(and the server still serving), metrics, the OpenAPI page, the page at / in a real browser, and SIGTERM
finishing the request in flight before exiting 0. One server (a tiny model) serves the whole module."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitkit
from _server import Served, free_port

CHROMIUM = Path("/usr/lib/chromium/chromium")  # Debian's chromium (scripts/setup.sh installs it)


@pytest.fixture(scope="module")
def files(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = root / "digits"
    vitkit.save_pretrained(vitkit.create_model("vit_digits"), model)
    Image.fromarray(photos["chelsea"]).save(root / "cat.jpg", quality=90)
    Image.fromarray(photos["coffee"]).save(root / "coffee.png")
    return {"root": root, "model": model, "cat": (root / "cat.jpg").read_bytes(),
            "coffee": (root / "coffee.png").read_bytes()}


@pytest.fixture(scope="module")
def server(files):
    served = Served(str(files["model"]), "--max-batch-size", "8", "--batch-timeout-ms", "20", "--timeout-s", "3",
                    "--max-body-mb", "4")
    yield served
    served.stop()


def _alive(server) -> None:
    status, body = server.post_image("/predict?top_k=1", _cat_png())
    assert status == 200 and len(body["predictions"]) == 1


def _cat_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


def test_predict_equals_the_library(server, files):
    want = vitkit.predict([files["root"] / "cat.jpg", files["root"] / "coffee.png"], str(files["model"]), top_k=3)
    for key, w in zip(("cat", "coffee"), want):
        status, raw = server.post_image("/predict?top_k=3", files[key])
        status2, form = server.post_form("/predict?top_k=3", {"image": (f"{key}.img", files[key])})
        assert status == status2 == 200
        assert form["image"] == f"{key}.img"
        for got in (raw, form):
            assert [p["index"] for p in got["predictions"]] == [p.index for p in w.top_k]
            assert [p["label"] for p in got["predictions"]] == [p.label for p in w.top_k]
            np.testing.assert_allclose([p["probability"] for p in got["predictions"]],
                                       [p.probability for p in w.top_k], atol=1e-4)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, files):
    want = {k: vitkit.predict([files["root"] / n], str(files["model"]), top_k=k)[0]
            for k, n in ((1, "cat.jpg"), (4, "coffee.png"))}
    jobs = [(1, "cat"), (4, "coffee")] * 8
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda job: server.post_image(f"/predict?top_k={job[0]}", files[job[1]]), jobs))
    for (k, _), (status, body) in zip(jobs, answers):
        assert status == 200
        assert [p["index"] for p in body["predictions"]] == [p.index for p in want[k].top_k]
        np.testing.assert_allclose([p["probability"] for p in body["predictions"]],
                                   [p.probability for p in want[k].top_k], atol=1e-4)
    _, metrics = server.request("GET", "/metrics")
    sizes = [line for line in metrics.decode().splitlines() if line.startswith("vitkit_serve_batch_size_bucket")]
    one = next(float(line.split()[-1]) for line in sizes if 'le="1.0"' in line)
    total = next(float(line.split()[-1]) for line in sizes if 'le="+Inf"' in line)
    assert total > one, f"no batch held more than one request: {sizes}"


def test_features_equal_the_library(server, files):
    for pool in ("default", "avg"):
        want = vitkit.extract_features([files["root"] / "cat.jpg"], str(files["model"]), pool=pool).features[0]
        status, body = server.post_image(f"/features?pool={pool}", files["cat"])
        assert status == 200 and body["shape"] == list(want.shape) and body["pool"] == pool
        np.testing.assert_allclose(body["features"], want, atol=1e-5)


def test_attention_is_a_png_overlay(server, files):
    import base64

    status, body = server.post_image("/attention", files["cat"])
    assert status == 200
    img = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert img.format == "PNG" and img.mode == "RGB" and min(img.size) > 32
    assert np.asarray(img).std() > 5  # an image, not a blank


def _assert_clean_error(status, body, code, *words):
    assert status == code, (status, body)
    detail = body["detail"]
    assert isinstance(detail, str) and "Traceback" not in detail
    for word in words:
        assert word in detail, detail


def test_bad_requests_get_a_4xx_naming_the_problem(server, files):
    text = b"just some text, not an image\n" * 10
    _assert_clean_error(*server.post_image("/predict", text, content_type="text/plain"), 415, "text/plain")
    _assert_clean_error(*server.post_image("/predict", text), 400, "not an image")
    assert "just some text" not in json.dumps(server.post_image("/predict", text)[1])  # the bytes are not echoed
    truncated = files["cat"][: len(files["cat"]) // 3]
    _assert_clean_error(*server.post_image("/predict", truncated), 400, "truncated")
    _assert_clean_error(*server.post_image("/predict", b""), 400, "empty")
    _assert_clean_error(*server.post_form("/predict", {"image": ("a.jpg", files["cat"]), "x": ("b", b"1")}), 422,
                        "'image'")
    _assert_clean_error(*server.post_form("/predict", {"photo": ("a.jpg", files["cat"])}), 422, "'photo'")
    _assert_clean_error(*server.post_image("/predict?topk=3", files["cat"]), 422, "'topk'", "top_k")
    _assert_clean_error(*server.post_image("/predict?top_k=0", files["cat"]), 422, "top_k")
    _assert_clean_error(*server.post_image("/features?pool=max", files["cat"]), 422, "pool")
    _alive(server)


def test_a_64_mb_body_is_refused_before_it_is_read(server):
    junk = np.random.default_rng(0).integers(0, 256, 64 * 2**20, dtype=np.uint8).tobytes()
    start = time.monotonic()
    try:  # the server answers 413 from the Content-Length, and may close before the client has sent it all
        status, body = server.post_image("/predict", junk)
        _assert_clean_error(status, body, 413, "4 MB")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - start < 20
    # without a Content-Length (chunked): refused as soon as the limit is passed
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 2**20 + junk[: 2**20] + b"\r\n"
        try:
            for _ in range(64):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    _alive(server)


def test_a_slow_client_times_out_and_others_are_served_meanwhile(server, files):
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
        s.sendall(files["cat"][:100])  # ... and the rest never comes
        _alive(server)  # served while the slow one waits
        start = time.monotonic()
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - start < 10  # --timeout-s 3
    _alive(server)


def test_100_concurrent_connections(server, files):
    def one(_):
        try:
            return server.post_image("/predict?top_k=1", files["cat"], timeout=60)[0]
        except OSError as exc:
            return type(exc).__name__
    with ThreadPoolExecutor(100) as pool:
        codes = list(pool.map(one, range(100)))
    # every one answered: 200, or 504 for one that waited in the queue longer than --timeout-s (how many do
    # depends on how busy the machine is); none hangs, none is dropped, none gets a 500
    assert set(codes) <= {200, 504}, codes
    assert 200 in codes, codes
    _alive(server)


def test_metrics_and_openapi(server):
    status, text = server.request("GET", "/metrics")
    text = text.decode()
    assert status == 200
    assert 'vitkit_serve_requests_total{code="200",endpoint="/predict"}' in text
    assert 'vitkit_serve_errors_total{code="415",endpoint="/predict"}' in text
    assert 'vitkit_serve_errors_total{code="413",endpoint="/predict"}' in text
    assert 'vitkit_serve_request_seconds_bucket{endpoint="/predict",le="+Inf"}' in text
    status, spec = server.request("GET", "/openapi.json")
    paths = json.loads(spec)["paths"]
    assert status == 200 and {"/predict", "/features", "/attention", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/predict"]["post"]["requestBody"]["content"]
    assert server.request("GET", "/docs")[0] == 200


def test_the_page_in_a_headless_browser(server, files, tmp_path):
    assert CHROMIUM.exists(), ("Debian's chromium is not installed: scripts/setup.sh installs it with apt "
                               "(as root); the page cannot be tested without a browser")
    from playwright.sync_api import sync_playwright

    (tmp_path / "cat.jpg").write_bytes(files["cat"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(f"http://127.0.0.1:{server.port}/", timeout=10_000)
            page.set_input_files("#file", str(tmp_path / "cat.jpg"))
            page.wait_for_selector("#classes tr:nth-child(5)", timeout=10_000)
            page.wait_for_function("document.getElementById('overlay').naturalWidth > 0", timeout=10_000)
            rows = page.locator("#classes tr").all_inner_texts()
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    status, want = server.post_image("/predict?top_k=5", files["cat"])
    assert [r.split("\t")[0] for r in rows] == [p["label"] for p in want["predictions"]]
    assert Image.open(shot).size[0] >= 1000


def test_an_image_classifier_has_no_zero_shot(server, files):
    _assert_clean_error(*server.post_image("/zero-shot?labels=cat,dog", files["cat"]), 404, "no text tower",
                        "/predict")
    _alive(server)


def test_sigterm_finishes_the_request_in_flight_then_exits_0(server, files):
    """Last in this module: it stops the module's server."""
    out = {}

    def slow_upload():  # in flight while SIGTERM arrives: half the body now, the rest after
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
            data = files["cat"]
            s.sendall(b"POST /predict?top_k=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data) + data[:1000])
            out["sent"] = True
            time.sleep(1.0)
            s.sendall(data[1000:])
            out["reply"] = b"".join(iter(lambda: s.recv(65536), b""))

    t = threading.Thread(target=slow_upload)
    t.start()
    while "sent" not in out:
        time.sleep(0.05)
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    t.join(timeout=30)
    assert out["reply"].startswith(b"HTTP/1.1 200"), out.get("reply", b"")[:300]
    assert b'"predictions"' in out["reply"]
    assert server.proc.wait(timeout=30) == 0, server.output()


def test_health_is_503_while_the_model_loads_and_warms_up(server):
    # the port opens before the worker has imported torch, loaded the model and run its warm-up
    statuses = server.startup_statuses
    assert statuses[0] == 503 and statuses[-1] == 200 and set(statuses) == {503, 200}, statuses


def test_damaged_weights_are_one_line_before_the_workers_start(files, tmp_path):
    from _cli import run_cli

    folder = tmp_path / "damaged"
    shutil.copytree(files["model"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    res = run_cli("serve", str(folder), "--port", str(free_port()), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith(f"vitkit serve: error: {weights} is not a valid safetensors file")


def test_a_worker_that_fails_to_start_stops_the_server(files):
    from litserve.utils import WorkerSetupStatus

    from vitkit.serve.server import build_server
    from vitkit.serve.settings import ServeSettings

    server = build_server(str(files["model"]), ServeSettings())
    server._shutdown_event = threading.Event()
    server.workers_setup_status = {"/predict_0": WorkerSetupStatus.READY, "/predict_1": WorkerSetupStatus.STARTING}
    watcher = threading.Thread(target=server._watch_workers)
    watcher.start()
    time.sleep(0.2)
    assert watcher.is_alive() and not server._shutdown_event.is_set()  # still waiting for the second worker
    server.workers_setup_status["/predict_1"] = WorkerSetupStatus.ERROR
    watcher.join(timeout=5)
    assert server._shutdown_event.is_set() and server.startup_failed


def test_cli_errors_are_one_line_before_anything_starts():
    from _cli import run_cli

    res = run_cli("serve", "no_such_model", "--port", "8123", timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == ("vitkit serve: error: Unknown model 'no_such_model'. See vitkit.list_models() or "
                                  "`vitkit models` for all names.")


@pytest.mark.parametrize("field, value, words", [
    ("port", 80, ["port=80", "1024-65535"]), ("max_batch_size", 0, ["max_batch_size=0", "positive"]),
    ("precision", "fp8", ["precision='fp8'", "fp32"]), ("timeout_s", "3", ["timeout_s='3'"]),
    ("batch_timeout_ms", -1, ["batch_timeout_ms=-1"])])
def test_settings_are_checked(field, value, words):
    from vitkit.errors import ConfigError
    from vitkit.serve import ServeSettings

    with pytest.raises(ConfigError) as err:
        ServeSettings(**{field: value})
    for word in words:
        assert word in str(err.value)


def test_one_batch_of_mixed_tasks_and_a_bad_image(files):
    """The model worker in this process: a batch holding every task and a broken upload answers each request as
    the library does, and the broken one alone with its error."""
    from vitkit.serve import ServeSettings
    from vitkit.serve.worker import ModelWorker

    worker = ModelWorker(str(files["model"]), settings=ServeSettings(precision="fp32", backend="onnxruntime"))
    worker.setup("cpu")
    requests = [{"task": "predict", "data": files["cat"], "name": "cat.jpg", "top_k": 2, "pool": "default"},
                {"task": "features", "data": files["coffee"], "name": "coffee.png", "top_k": 5, "pool": "avg"},
                {"task": "predict", "data": files["cat"][:500], "name": "cut.jpg", "top_k": 5, "pool": "default"},
                {"task": "attention", "data": files["cat"], "name": "cat.jpg", "top_k": 5, "pool": "default"},
                {"task": "predict", "data": files["coffee"], "name": "coffee.png", "top_k": 4, "pool": "default"}]
    out = [worker.encode_response(o) for o in worker.predict([worker.decode_request(r) for r in requests])]
    want = vitkit.predict([files["root"] / "cat.jpg", files["root"] / "coffee.png"], str(files["model"]), top_k=4)
    for got, w, k in ((out[0], want[0], 2), (out[4], want[1], 4)):  # ONNX Runtime fp32, the server's runner
        assert [p["index"] for p in got["predictions"]] == [p.index for p in w.top_k[:k]]
        np.testing.assert_allclose([p["probability"] for p in got["predictions"]],
                                   [p.probability for p in w.top_k[:k]], atol=1e-4)
    feats = vitkit.extract_features([files["root"] / "coffee.png"], str(files["model"]), pool="avg").features[0]
    np.testing.assert_allclose(out[1]["features"], feats, atol=1e-5)
    assert out[2].status_code == 400 and b"truncated" in out[2].body
    assert out[3]["overlay_png"] and out[3]["method"] == "rollout"
    worker.max_batch_size = 1  # then LitServe hands predict one request, not a list
    alone = worker.predict(worker.decode_request(requests[0]))  # a batch of one: equal up to GEMM rounding
    assert [p["index"] for p in alone["predictions"]] == [p["index"] for p in out[0]["predictions"]]
    np.testing.assert_allclose([p["probability"] for p in alone["predictions"]],
                               [p["probability"] for p in out[0]["predictions"]], atol=1e-5)


@pytest.mark.parametrize("suffix", [".xml", ".onnx"])
def test_an_optimized_file_is_served_as_the_library_runs_it(files, tmp_path, suffix):
    """A graph written by `vitkit optimize` / `vitkit export` answers /predict (and /features where the graph has
    them) as `vitkit.predict` runs the file; /attention, which needs the model's tokens, is a 422 naming why."""
    from vitkit.deploy import export_model
    from vitkit.serve import ServeSettings
    from vitkit.serve.worker import ModelWorker

    graph = export_model(vitkit.load_model(str(files["model"])), tmp_path / f"m{suffix}").path
    worker = ModelWorker(str(graph), settings=ServeSettings())
    worker.setup("cpu")
    requests = [{"task": task, "data": files["cat"], "name": "cat.jpg", "top_k": 3, "pool": "default"}
                for task in ("predict", "features", "attention")]
    got = [worker.encode_response(o) for o in worker.predict([worker.decode_request(r) for r in requests])]
    want = vitkit.predict([files["root"] / "cat.jpg"], str(graph), top_k=3)[0]
    assert [p["index"] for p in got[0]["predictions"]] == [p.index for p in want.top_k]
    np.testing.assert_allclose([p["probability"] for p in got[0]["predictions"]],
                               [p.probability for p in want.top_k], atol=1e-6)
    if suffix == ".xml":  # the IR carries the pooled features beside the logits
        feats = vitkit.extract_features([files["root"] / "cat.jpg"], str(files["model"])).features[0]
        np.testing.assert_allclose(got[1]["features"], feats, atol=1e-4)
    else:
        assert got[1].status_code == 422 and b"output only, not its features" in got[1].body
    assert got[2].status_code == 422 and b"exported graph" in got[2].body and b"/attention" in got[2].body


def test_serving_an_optimized_file_with_settings_it_cannot_take_is_one_line(files, tmp_path):
    from _cli import run_cli
    from vitkit.deploy import export_model

    graph = export_model(vitkit.load_model(str(files["model"])), tmp_path / "m.onnx").path
    res = run_cli("serve", str(graph), "--precision", "int8", "--port", "8123", timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "exported graph" in res.stderr and "--precision 'int8' does not apply" in res.stderr


@pytest.fixture(scope="module")
def image_text(files):
    from _text_refs import clip_folder, siglip_folder

    siglip, clip = files["root"] / "siglip", files["root"] / "clip"
    siglip_folder(siglip)
    clip_folder(clip)
    return {"siglip": siglip, "clip": clip}


ZS_LABELS = ["cat", "dog", "red car", "Café crème"]


def _assert_same(got, want, k):
    assert [p["index"] for p in got["predictions"]] == [p.index for p in want.top_k[:k]]
    assert [p["label"] for p in got["predictions"]] == [p.label for p in want.top_k[:k]]
    np.testing.assert_allclose([p["probability"] for p in got["predictions"]],
                               [p.probability for p in want.top_k[:k]], atol=1e-4)


def test_zero_shot_server_equals_the_library(files, image_text):
    """A SigLIP server: /zero-shot gives vitkit.zero_shot's numbers (raw body and form, concurrent requests with
    different labels in the same batches), refuses bad labels with a 422 naming them, and keeps serving."""
    cat, coffee = files["root"] / "cat.jpg", files["root"] / "coffee.png"
    folder = str(image_text["siglip"])
    want = vitkit.zero_shot([cat, coffee], ZS_LABELS, model=folder, top_k=3)
    two = ["a plushie fish", "the cartoon robot"]
    templated = vitkit.zero_shot([cat], two, model=folder, templates=["art of the {}", "itap of a {}"], top_k=2)[0]
    served = Served(folder, "--max-batch-size", "8", "--batch-timeout-ms", "50", "--timeout-s", "20")
    try:
        query = "labels=cat,dog,red%20car,Caf%C3%A9%20cr%C3%A8me&top_k=3"
        status, raw = served.post_image(f"/zero-shot?{query}", files["cat"])
        status2, form = served.post_form("/zero-shot", {"image": ("cat.jpg", files["cat"]),
                                                        "labels": (None, ",".join(ZS_LABELS).encode()),
                                                        "top_k": (None, b"3")})
        assert status == status2 == 200, (raw, form)
        assert form["image"] == "cat.jpg" and raw["threshold"] == 0.5
        _assert_same(raw, want[0], 3)
        _assert_same(form, want[0], 3)
        jobs = [(f"/zero-shot?{query}", files["coffee"], want[1], 3),
                ("/zero-shot?labels=a%20plushie%20fish,the%20cartoon%20robot&template=art%20of%20the%20%7B%7D"
                 "&template=itap%20of%20a%20%7B%7D&top_k=2", files["cat"], templated, 2)] * 4
        with ThreadPoolExecutor(8) as pool:  # mixed label sets, batched together
            answers = list(pool.map(lambda job: served.post_image(job[0], job[1]), jobs))
        for (_, _, w, k), (code, body) in zip(jobs, answers):
            assert code == 200, body
            _assert_same(body, w, k)
        _assert_clean_error(*served.post_image("/zero-shot", files["cat"]), 422, "labels")
        _assert_clean_error(*served.post_image("/zero-shot?labels=cat,,dog", files["cat"]), 422, "Label 1")
        _assert_clean_error(*served.post_image("/zero-shot?labels=cat,Cat", files["cat"]), 422, "'Cat'",
                            "duplicate")
        _assert_clean_error(*served.post_image("/zero-shot?labels=cat&template=no%20slot", files["cat"]), 422,
                            "'no slot'")
        _assert_clean_error(*served.post_image("/zero-shot?labels=cat&topk=2", files["cat"]), 422, "'topk'")
        _assert_clean_error(*served.post_image("/predict", files["cat"]), 404, "/zero-shot")
        assert served.post_image("/features", files["cat"])[0] == 200  # the image tower
        status, again = served.post_image(f"/zero-shot?{query}", files["cat"])
        assert status == 200
        _assert_same(again, want[0], 3)
    finally:
        assert served.stop() == 0


def test_zero_shot_worker_batch_of_label_sets(files, image_text):
    """A CLIP model (softmax) in this process's worker: one batch with two label sets and a broken upload."""
    from vitkit.serve import ServeSettings
    from vitkit.serve.worker import ModelWorker

    folder = str(image_text["clip"])
    worker = ModelWorker(folder, settings=ServeSettings())
    worker.setup("cpu")
    base = {"task": "zero-shot", "top_k": 4, "templates": None, "pool": "default"}
    requests = [{**base, "data": files["cat"], "name": "cat.jpg", "labels": ZS_LABELS},
                {**base, "data": files["coffee"], "name": "coffee.png", "labels": ["bird", "fish"], "top_k": 1},
                {**base, "data": files["cat"][:500], "name": "cut.jpg", "labels": ZS_LABELS},
                {**base, "data": files["coffee"], "name": "coffee.png", "labels": ZS_LABELS}]
    out = [worker.encode_response(o) for o in worker.predict([worker.decode_request(r) for r in requests])]
    want = vitkit.zero_shot([files["root"] / "cat.jpg", files["root"] / "coffee.png"], ZS_LABELS, model=folder,
                            top_k=4)
    other = vitkit.zero_shot([files["root"] / "coffee.png"], ["bird", "fish"], model=folder, top_k=1)[0]
    _assert_same(out[0], want[0], 4)
    _assert_same(out[3], want[1], 4)
    _assert_same(out[1], other, 1)
    assert "labels" not in out[0]  # a softmax model lists no labels above a threshold
    np.testing.assert_allclose(sum(p["probability"] for p in out[0]["predictions"]), 1.0, atol=1e-5)
    assert out[2].status_code == 400 and b"truncated" in out[2].body
