"""EndpointQuery (model/endpoint.py) against a real MLServer serving tiny torch CNNs (tests/oip_server.py),
and against a small stdlib HTTP server on 127.0.0.1 for what MLServer cannot show: credentials, 429s,
datatypes and answers that are not the protocol."""

from __future__ import annotations

import base64
import json
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from cnnaudit.errors import AuditError
from cnnaudit.model.endpoint import EndpointQuery, _json_floats, _json_ints
from cnnaudit.model.query import QueryError, QueryModule
from tests.oip_server import Model, TinyCNN, free_port, start_mlserver

SENTINEL = -7.0  # an image holding this value makes the "flaky" model fail, every time
TOKEN = "Bearer s3cret"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests to 127.0.0.1 never go through a proxy a CI machine may set."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(channels=1, size=8).eval()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny):
    weights = tiny.state_dict()
    models = [Model("tiny", weights, version="3"), Model("tiny-nhwc", weights, layout="nhwc"),
              Model("flaky", weights, dynamic=True, extra={"fail_first": 2, "sentinel": SENTINEL}),
              Model("slow", weights, extra={"sleep": 2.0})]
    srv = start_mlserver(tmp_path_factory.mktemp("mlserver"), models)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _server_log_on_failure(request):
    """A failed test that used the server shows the server's log (tracebacks of its 500s included)."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed and "server" in request.fixturenames:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        log = request.getfixturevalue("server").log_text(8000)
        if reporter is not None:
            reporter.write_line(f"\n--- MLServer log (last 8000 characters) ---\n{log}")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def torch_scores(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# --- MLServer ------------------------------------------------------------------------------------------------

def test_metadata_sets_input_layout_and_output(server):
    q = EndpointQuery(server.url("tiny"))
    assert (q.name, q.version, q.platform) == ("tiny", None, "torch")
    assert (q.input_name, q.datatype, q.input_shape, q.layout, q.output_name) == \
        ("pixels", "FP32", [None, 1, 8, 8], "nchw", "logits")
    d = EndpointQuery(server.url("tiny", version="3"), batch=16, retries=2, concurrency=2).describe()
    assert d == {"url": server.url("tiny", version="3"), "name": "tiny", "version": "3", "platform": "torch",
                 "input": {"name": "pixels", "datatype": "FP32", "shape": [None, 1, 8, 8]}, "output": "logits",
                 "batch": 16, "timeout_s": 30.0, "retries": 2, "concurrency": 2, "headers": []}
    assert EndpointQuery(server.url("tiny-nhwc"), layout="nchw").layout == "nchw"  # the user's word wins


@pytest.mark.parametrize("n", [1, 7, 70])
def test_scores_equal_the_torch_model_in_order(server, tiny, n):
    q = EndpointQuery(server.url("tiny"), batch=32, concurrency=4)
    x = images(n, seed=n)
    scores = q.predict(x)
    assert scores.shape == (n, 10) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, torch_scores(tiny, x), atol=1e-5, rtol=0)
    assert (q.requests, q.retried, q.failed_requests) == (-(-n // 32), 0, 0)  # 70 images: 3 concurrent requests
    q.close()


def test_nhwc_metadata_and_query_module(server, tiny):
    q = EndpointQuery(server.url("tiny-nhwc"), batch=8)
    assert q.layout == "nhwc" and q.input_shape == [None, 8, 8, 1]
    module = QueryModule(q)
    x = images(20, seed=1)
    out = module(torch.from_numpy(x))  # NCHW in, as the audit feeds it: QueryModule makes it NHWC
    np.testing.assert_allclose(out.numpy(), torch_scores(tiny, x), atol=1e-5, rtol=0)
    assert (module.images, module.calls, q.requests) == (20, 1, 3)


def test_transient_500s_are_retried(server, tiny):
    # the flaky model fails each new batch twice (HTTP 500) before it answers it
    q = EndpointQuery(server.url("flaky"), batch=32, concurrency=4, retries=3, backoff=0.01)
    x = images(70, seed=2)
    np.testing.assert_allclose(q.predict(x), torch_scores(tiny, x), atol=1e-5, rtol=0)
    assert (q.requests, q.retried, q.failed_requests) == (9, 6, 6)


def test_a_batch_that_always_fails_raises_query_error_after_the_retries(server):
    q = EndpointQuery(server.url("flaky"), batch=32, retries=3, backoff=0.01)
    x = images(8, seed=3)
    x[5, 0, 2, 2] = SENTINEL
    start = time.perf_counter()
    with pytest.raises(QueryError) as info:
        q.predict(x)
    message = str(info.value)
    assert q.url in message and "HTTP 500" in message and "8 images" in message and "after 3 retries: HTTP 500 (Internal Server Error)" in message
    assert (q.requests, q.retried, q.failed_requests) == (4, 3, 4)
    assert time.perf_counter() - start >= 0.01 + 0.02 + 0.04  # it backed off


def test_a_timeout_is_retried_then_a_query_error(server):
    q = EndpointQuery(server.url("slow"), timeout=0.5, retries=1, backoff=0.01)
    start = time.perf_counter()
    with pytest.raises(QueryError, match=r"no answer within the 0\.5 s timeout") as info:
        q.predict(images(2))
    assert "2 images" in str(info.value) and "after 1 retry:" in str(info.value)
    assert (q.requests, q.retried, q.failed_requests) == (2, 1, 2)
    assert time.perf_counter() - start < 1.9  # two 0.5 s waits, not the server's 2 s


def test_a_wrong_input_shape_is_an_audit_error_naming_the_fix(server):
    q = EndpointQuery(server.url("tiny"))
    with pytest.raises(AuditError, match=r"takes input 'pixels' of shape \[N, 1, 8, 8\] \(NCHW\), not images of "
                                         r"shape \[N, 1, 6, 6\]; check --layout, --input-size and --channels"):
        q.predict(np.zeros((2, 1, 6, 6), np.float32))
    assert q.requests == 0  # the metadata said so: no request sent
    # metadata [-1, -1, -1, -1]: the server refuses it (MLServer's InferenceError: HTTP 400), no retry
    q = EndpointQuery(server.url("flaky"), backoff=0.01)
    with pytest.raises(AuditError) as info:
        q.predict(np.zeros((2, 1, 6, 6), np.float32))
    message = str(info.value)
    assert "HTTP 400: input 'pixels' has shape [2, 1, 6, 6] (72 values); this model takes [-1, 1, 8, 8]" in message
    assert "check --layout, --input-size and --channels" in message
    assert (q.requests, q.retried, q.failed_requests) == (1, 0, 1)


def test_missing_model_and_unreachable_server_are_audit_errors(server):
    with pytest.raises(AuditError, match=r"has no such model \(HTTP 404: Model nope not found\); check the model name"):
        EndpointQuery(server.url("nope"))
    url = f"http://127.0.0.1:{free_port()}/v2/models/tiny"
    with pytest.raises(AuditError, match=rf"Cannot reach the endpoint {url} \(.*refused.*\); check the host and port"):
        EndpointQuery(url, timeout=2)
    with pytest.raises(AuditError, match=r"must look like http://HOST:PORT/v2/models/NAME"):
        EndpointQuery(server.base + "/models/tiny")


# --- a stub server: credentials, 429, datatypes, answers that are not the protocol --------------------------

class Stub(BaseHTTPRequestHandler):
    """/v2/models/guarded needs `Authorization: Bearer s3cret` (or basic alice:pa55word) and answers each
    image's sum; /v2/models/echo-DATATYPE answers its input as output "logits"; /v2/models/busy answers
    429 to its first two requests; /v2/models/html answers a web page, /v2/models/moved a redirect."""

    seen: list = []
    revoked = False
    busy = 0

    def log_message(self, *args):
        pass

    def reply(self, status: int, body, headers: dict | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self) -> bool:
        auth = self.headers.get("Authorization")
        Stub.seen.append((self.command, self.path, auth, self.headers.get("X-Team")))
        basic = "Basic " + base64.b64encode(b"alice:pa55word").decode()
        if auth not in (TOKEN, basic) or Stub.revoked:
            self.reply(401, {"error": f"invalid credentials {auth}"})
            return False
        return True

    def do_GET(self):
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        if name == "html":
            return self.reply(200, b"<html><body>hello</body></html>", {"Content-Type": "text/html"})
        if name == "moved":
            return self.reply(307, {}, {"Location": "http://127.0.0.1:9/v2/models/elsewhere"})
        if name == "guarded" and not self.authorized():
            return
        datatype = name.split("-", 1)[1] if name.startswith("echo-") else "FP32"
        self.reply(200, {"name": name, "versions": ["7"], "platform": "stub",
                         "inputs": [{"name": "x", "datatype": datatype, "shape": [-1, 5]}],
                         "outputs": [{"name": "features"}, {"name": "logits"}]})

    def do_POST(self):
        name = self.path.split("?")[0].split("/")[3]
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if name == "guarded" and not self.authorized():
            return
        if name == "busy":
            Stub.busy += 1
            if Stub.busy <= 2:
                return self.reply(429, {"error": "slow down"}, {"Retry-After": "0"})
        inp = request["inputs"][0]
        data = np.asarray(inp["data"], dtype=np.float64).reshape(inp["shape"])
        if SENTINEL in data:
            return self.reply(400, {"error": f"rejected request with Authorization: {self.headers['Authorization']}"})
        out = data.reshape(len(data), -1).sum(1) if name in ("guarded", "busy") else data
        self.reply(200, {"model_name": name, "outputs": [
            {"name": "features", "datatype": "FP64", "shape": [1], "data": [0.0]},
            {"name": "logits", "datatype": "FP64", "shape": list(out.shape), "data": out.ravel().tolist()}]})


@pytest.fixture(scope="module")
def stub():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v2/models"
    httpd.shutdown()
    httpd.server_close()


def assert_secret_free(*texts):
    for text in texts:
        for secret in ("s3cret", "pa55word", "alice", "qs3cret", "YWxpY2U6cGE1NXdvcmQ="):
            assert secret not in text, text


def test_headers_are_sent_and_never_shown(stub):
    Stub.seen.clear()
    q = EndpointQuery(f"{stub}/guarded", headers={"Authorization": TOKEN, "X-Team": "audit"}, batch=2)
    x = np.random.default_rng(4).random((5, 5), dtype=np.float32)
    np.testing.assert_allclose(q.predict(x), x.sum(1), atol=1e-5)  # one value per image: shape (n,)
    assert [(m, a, t) for m, _, a, t in Stub.seen] == [("GET", TOKEN, "audit")] + [("POST", TOKEN, "audit")] * 3
    d = q.describe()
    assert d["headers"] == ["Authorization", "X-Team"] and d["version"] == "7" and d["output"] == "logits"
    x[1, 1] = SENTINEL  # the stub echoes the token in its 400: the message must not
    with pytest.raises(AuditError, match=r"HTTP 400: rejected request with Authorization: \*\*\*") as info:
        q.predict(x)
    assert_secret_free(repr(q), json.dumps(d), str(info.value), "".join(traceback.format_exception(info.value)))


def test_refused_credentials_are_an_audit_error_without_them(stub):
    for headers, sent in (({"Authorization": "Bearer wrong-s3cret"}, "headers Authorization sent"),
                          ({}, "no credentials sent")):
        with pytest.raises(AuditError, match=rf"refused the credentials \(HTTP 401, {sent}\); check the token") as e:
            EndpointQuery(f"{stub}/guarded", headers=headers)
        assert_secret_free(str(e.value), "".join(traceback.format_exception(e.value)))
        assert "wrong" not in str(e.value)
    q = EndpointQuery(f"{stub}/guarded", headers={"Authorization": TOKEN}, retries=3)
    Stub.revoked = True
    try:  # a token revoked during the audit: refused at once, not retried
        with pytest.raises(AuditError, match="refused the credentials"):
            q.predict(np.zeros((2, 5), np.float32))
    finally:
        Stub.revoked = False
    assert (q.requests, q.retried) == (1, 0)
    with pytest.raises(AuditError, match="value of header 'Authorization' holds a line break"):
        EndpointQuery(f"{stub}/guarded", headers={"Authorization": "Bearer s3cret\r\nX-Evil: 1"})


def test_url_credentials_and_query_are_used_but_never_shown(stub):
    Stub.seen.clear()
    q = EndpointQuery(stub.replace("http://", "http://alice:pa55word@") + "/guarded?key=qs3cret")
    assert q.url == f"{stub}/guarded"
    np.testing.assert_allclose(q.predict(np.ones((3, 5), np.float32)), [5.0] * 3)
    assert [p for _, p, _, _ in Stub.seen] == ["/v2/models/guarded?key=qs3cret", "/v2/models/guarded/infer?key=qs3cret"]
    assert_secret_free(repr(q), json.dumps(q.describe()))


def test_429_is_retried(stub):
    Stub.busy = 0
    q = EndpointQuery(f"{stub}/busy", backoff=0.01)
    np.testing.assert_allclose(q.predict(np.ones((2, 5), np.float32)), [5.0, 5.0])
    assert (q.requests, q.retried, q.failed_requests) == (3, 2, 2)


def test_datatypes_are_converted(stub):
    x = np.random.default_rng(5).random((3, 5), dtype=np.float32)
    x[0, :3] = [0.0, 1.0, 0.5 / 255]
    np.testing.assert_array_equal(EndpointQuery(f"{stub}/echo-FP32").predict(x).astype(np.float32), x)  # exact
    np.testing.assert_array_equal(EndpointQuery(f"{stub}/echo-UINT8").predict(x), np.rint(x * 255))
    np.testing.assert_array_equal(EndpointQuery(f"{stub}/echo-INT8").predict(x), np.rint(x * 255) - 128)
    np.testing.assert_array_equal(EndpointQuery(f"{stub}/echo-FP16").predict(x).astype(np.float32),
                                  x.astype(np.float16).astype(np.float32))
    q = EndpointQuery(f"{stub}/echo-UINT8")
    assert q.input_dtype == np.uint8 and q.layout == "nchw" and q.input_shape == [None, 5]
    with pytest.raises(AuditError, match="takes input .x. as BYTES, which cnnaudit cannot send"):
        EndpointQuery(f"{stub}/echo-BYTES")
    with pytest.raises(AuditError, match="NaN or infinite"):
        EndpointQuery(f"{stub}/echo-FP32").predict(np.full((1, 5), np.nan, np.float32))


def test_an_answer_that_is_not_the_protocol_is_an_audit_error(stub):
    with pytest.raises(AuditError, match=r"did not answer with Open Inference Protocol model metadata"):
        EndpointQuery(f"{stub}/html")
    with pytest.raises(AuditError, match=r"redirects \(HTTP 307\); give the URL it redirects to"):
        EndpointQuery(f"{stub}/moved", headers={"Authorization": TOKEN})  # not followed: the token stays here


def test_json_numbers_round_trip_exactly():
    rng = np.random.default_rng(6)
    values = np.concatenate([
        rng.random(10_000, dtype=np.float32), rng.standard_normal(10_000).astype(np.float32),
        (10.0 ** np.arange(-45, 39)).astype(np.float32),
        np.nextafter((10.0 ** np.arange(-44, 39)).astype(np.float32), np.float32(0)),
        np.array([0, -0.0, 1 / 255, 254 / 255, 3.4028235e38, -3.4028235e38, 1e-45, 999999999, 99999.995], np.float32)])
    back = np.asarray(json.loads(b"[" + _json_floats(values) + b"]"), dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(back, values)
    ints = np.arange(-128, 256)
    assert json.loads(b"[" + _json_ints(ints) + b"]") == ints.tolist()
