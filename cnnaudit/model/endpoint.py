"""`EndpointQuery`: a model behind an Open Inference Protocol (KServe v2) REST endpoint, the API that
MLServer, Triton, KServe and TorchServe answer, audited by its forward passes alone.

    backend = EndpointQuery("http://127.0.0.1:8080/v2/models/resnet", headers={"Authorization": "Bearer ..."})
    scores = backend.predict(x)  # x: float32, in backend.layout, first dimension the images

On construction it reads the model's metadata (`GET URL`): the input's name, datatype and shape, which
set `layout` (NHWC when the shape is [N, H, W, C] with C in {1, 3}, else NCHW) and `input_shape`, and the
output it reads (one named "logits" if there is one, else the first). `predict` splits a batch into
requests of at most `batch` images, sends up to `concurrency` of them at once (`POST URL/infer`) and
returns one row of scores per image, in order.

Inputs are converted to the model's datatype: floats (FP16/FP32/FP64) keep the pixel values, sent as 9
significant digits (exact for float32); integer inputs get 8-bit pixels, round(255 * x) in [0, 255] for
UINT8 and the other integer types, round(255 * x) - 128 for INT8 (the zero point of int8-quantized image
models), so a UINT8 model sees the image file's own pixel values when x is in [0, 1].

A request that fails for a reason that may pass (no connection, a timeout, HTTP 5xx or 429) is retried
with exponential backoff; after `retries` retries it is a `QueryError`. Any other refusal (HTTP 4xx: a
wrong shape, a missing model, refused credentials) is an `AuditError` at once: retrying cannot fix it.

Header values (tokens) and the URL's user name, password and query never appear in a message, `repr` or
`describe()`: only header names do.

Only the REST binding is implemented: the protocol's gRPC binding would need grpcio and generated stubs,
and every OIP server answers REST as well.
"""

from __future__ import annotations

import base64
import http.client
import json
import numbers
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np

from ..errors import AuditError
from .query import QueryBackend, QueryError, check_layout, static_layout

# HTTP by the standard library (urllib, json), not requests/httpx/orjson: one backend adds no run-time
# dependency to cnnaudit, and the slow part, the request's numbers, is written by numpy (_json_floats).

DATATYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8, "UINT16": np.uint16,
             "UINT32": np.uint32, "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64}
RETRY_STATUSES = {408, 429}  # and every 5xx
MAX_BACKOFF_S = 30.0
SHAPE_FIX = "check --layout, --input-size and --channels"

_URL_FORM = "http://HOST:PORT/v2/models/NAME (optionally .../versions/VERSION)"
_MODEL_PATH = re.compile(r"^(?P<prefix>.*)/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would forward the headers (the token) to wherever the server points, and
    turn a POST into a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class EndpointQuery(QueryBackend):
    """A model served over the Open Inference Protocol's REST binding (`URL` = .../v2/models/NAME).

    Args:
        url: the model's URL, http(s)://HOST:PORT/v2/models/NAME or .../versions/VERSION; a user name and
            password in it (http://user:pass@host/...) are sent as HTTP basic authentication.
        batch: at most this many images per request.
        timeout: seconds to wait for the server to connect, and for each read of an answer.
        retries: retries of a request after a connection error, timeout, HTTP 5xx or 429.
        concurrency: requests in flight at once.
        headers: HTTP headers sent with every request (e.g. {"Authorization": "Bearer TOKEN"}); their values
            are secrets, never shown.
        layout: "nchw" or "nhwc" to override what the metadata's input shape says.
        backoff: seconds before the first retry; each next one waits twice as long (at most 30 s).

    Attributes: url (without credentials or query), name, version, platform, input_name, datatype,
    input_shape (None for dynamic dimensions), layout, input_dtype, output_name (None: the answer's
    first output), and counters of HTTP requests: `requests` (sent, retries included), `retried` and
    `failed_requests` (answered with an error or not at all).
    """

    kind = "endpoint"

    def __init__(self, url: str, *, batch: int = 32, timeout: float = 30.0, retries: int = 3, concurrency: int = 4,
                 headers: dict | None = None, layout: str | None = None, backoff: float = 0.5):
        for name, value, low in (("batch", batch, 1), ("concurrency", concurrency, 1), ("retries", retries, 0)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise AuditError(f"The endpoint's {name} must be an integer >= {low}, not {value!r}.")
        if not timeout > 0 or not backoff >= 0:
            raise AuditError(f"The endpoint's timeout must be > 0 and its backoff >= 0 seconds "
                             f"(got {timeout!r} and {backoff!r}).")
        self.batch, self.timeout, self.retries, self.concurrency, self.backoff = \
            batch, float(timeout), retries, concurrency, float(backoff)
        self._headers = self._check_headers(headers or {})
        self._secrets: list[str] = []
        for value in self._headers.values():
            self._secrets += [value, value.split()[-1]] if value.split() else []
        self.url, self._request_url = self._parse_url(url)
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.requests = self.retried = self.failed_requests = 0

        meta = self._metadata()
        self.platform = str(meta.get("platform") or "")
        if self.version is None and len(meta.get("versions") or []) == 1:
            self.version = str(meta["versions"][0])
        inputs, outputs = meta.get("inputs") or [], meta.get("outputs") or []
        # no input metadata (MLServer allows it): the protocol's usual name and float32, any shape
        first = inputs[0] if inputs and isinstance(inputs[0], dict) else {}
        self.input_name = str(first.get("name") or "input-0")
        self.datatype = str(first.get("datatype") or "FP32").upper()
        if self.datatype not in DATATYPES:
            raise AuditError(f"The endpoint {self.url} takes input {self.input_name!r} as {self.datatype}, which "
                             f"cnnaudit cannot send images as; it sends {', '.join(DATATYPES)}.")
        self.input_dtype = np.dtype(DATATYPES[self.datatype])
        shape = first.get("shape")
        self.input_shape = [d if isinstance(d, int) and d >= 0 else None for d in shape] \
            if isinstance(shape, list) else None
        self.layout = check_layout(layout) or ("nhwc" if static_layout(self.input_shape) == "nhwc" else "nchw")
        names = [str(o.get("name")) for o in outputs if isinstance(o, dict) and o.get("name")]
        self.output_name = "logits" if "logits" in names else names[0] if names else None

    # --- what the audit records -------------------------------------------------------------------------

    def describe(self) -> dict:
        out = {"url": self.url, "name": self.name}
        if self.version is not None:
            out["version"] = self.version
        out.update({"platform": self.platform,
                    "input": {"name": self.input_name, "datatype": self.datatype, "shape": self.input_shape},
                    "output": self.output_name, "batch": self.batch, "timeout_s": self.timeout,
                    "retries": self.retries, "concurrency": self.concurrency, "headers": sorted(self._headers)})
        return out

    def __repr__(self) -> str:
        return f"EndpointQuery({self.url!r}, headers={sorted(self._headers)!r})"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # --- queries -----------------------------------------------------------------------------------------

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        self._check_shape(x)
        if len(x) == 0:
            return np.zeros((0, 0), np.float32)
        chunks = [(i, x[s:s + self.batch]) for i, s in enumerate(range(0, len(x), self.batch))]
        if len(chunks) == 1 or self.concurrency == 1:
            return self._join([self._infer(i, c) for i, c in chunks])
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="cnnaudit-endpoint")
            pool = self._pool
        futures = [pool.submit(self._infer, i, c) for i, c in chunks]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f in done and f.exception() is not None:
                for p in pending:
                    p.cancel()
                raise f.exception()
        return self._join([f.result() for f in futures])

    @staticmethod
    def _join(parts: list[np.ndarray]) -> np.ndarray:
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _check_shape(self, x: np.ndarray) -> None:
        shape = self.input_shape
        if shape is None or len(shape) != x.ndim:
            return
        if any(want is not None and want != got for want, got in zip(shape[1:], x.shape[1:])):
            raise AuditError(f"The endpoint {self.url} takes input {self.input_name!r} of shape "
                             f"{_shape_text(shape)} ({self.layout.upper()}), not images of shape "
                             f"{_shape_text([None, *x.shape[1:]])}; {SHAPE_FIX} to fit it.")

    def _infer(self, index: int, x: np.ndarray) -> np.ndarray:
        """One request for the images x (the batch's `index`-th), retried; their scores, one row per image."""
        if not np.isfinite(x).all():
            raise AuditError(f"A batch sent to the endpoint {self.url} holds NaN or infinite pixel values, which "
                             "JSON cannot carry; check the preprocessing (--mean/--std) and the images.")
        body = self._body(x)
        request = urllib.request.Request(self._request_url("/infer"), data=body, method="POST",
                                         headers={**self._headers, "Content-Type": "application/json",
                                                  "Accept": "application/json"})
        last, retry_after = "", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._delay(attempt - 1, index, retry_after))
            with self._lock:
                self.requests += 1
                self.retried += attempt > 0
            try:
                with self._opener.open(request, timeout=self.timeout) as resp:
                    answer = resp.read()
                return self._scores(json.loads(answer), len(x))
            except urllib.error.HTTPError as exc:
                status, message = exc.code, self._server_message(exc)
                with self._lock:
                    self.failed_requests += 1
                if status >= 500 or status in RETRY_STATUSES:
                    last, retry_after = f"HTTP {status} ({message})", _retry_after(exc)
                    continue
                raise self._refusal(status, message, x) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                with self._lock:
                    self.failed_requests += 1
                last, retry_after = self._failure_text(exc), None
        tries = f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}"
        raise QueryError(f"The endpoint {self.url} failed a batch of {len(x)} images after {tries}: {last}.")

    def _delay(self, k: int, index: int, retry_after: float | None) -> float:
        """backoff x 2^k seconds (at most 30), plus up to 20% set by the batch's index so that concurrent
        retries spread out; a server's Retry-After wins when it asks for longer."""
        delay = min(MAX_BACKOFF_S, self.backoff * 2 ** k) * (1 + 0.05 * (index % 5))
        return max(delay, min(retry_after or 0.0, MAX_BACKOFF_S))

    def _body(self, x: np.ndarray) -> bytes:
        """The v2 JSON request, its data flat, row-major, in the model's datatype."""
        dtype = self.input_dtype
        if dtype.kind == "f":
            data = _json_floats(x.astype(dtype))
        else:
            pixels = np.rint(x * 255.0) - (128 if dtype == np.int8 else 0)
            data = _json_ints(np.clip(pixels, -128 if dtype == np.int8 else 0, 127 if dtype == np.int8 else 255))
        head = {"name": self.input_name, "shape": list(x.shape), "datatype": self.datatype}
        outputs = f',"outputs":[{{"name":{json.dumps(self.output_name)}}}]' if self.output_name else ""
        return (b'{"inputs":[' + json.dumps(head)[:-1].encode() + b',"data":[' + data + b']}]'
                + outputs.encode() + b"}")

    def _scores(self, answer, n: int) -> np.ndarray:
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        outputs = [o for o in outputs if isinstance(o, dict)] if isinstance(outputs, list) else []
        if not outputs:
            raise ValueError("no outputs")
        chosen = next((o for o in outputs if o.get("name") == self.output_name), None) if self.output_name else None
        if chosen is None and self.output_name is not None and len(outputs) > 1:
            raise AuditError(f"The endpoint {self.url} answered without output {self.output_name!r} (it has "
                             f"{', '.join(repr(o.get('name')) for o in outputs)}); check the model's metadata.")
        chosen = chosen or outputs[0]
        datatype = str(chosen.get("datatype", "FP32")).upper()
        if datatype not in DATATYPES and datatype != "BOOL":
            raise AuditError(f"The endpoint {self.url} answers with {datatype} values in output "
                             f"{chosen.get('name')!r}, not numbers; it must return one row of scores per image.")
        if not isinstance(chosen.get("data"), list):
            raise ValueError(f"output {chosen.get('name')!r} has no data")
        scores = np.asarray(chosen["data"], dtype=DATATYPES.get(datatype, np.bool_))
        if scores.size == 0 or scores.size % n:
            raise AuditError(f"The endpoint {self.url} answered {scores.size} values in output "
                             f"{chosen.get('name')!r} for {n} images; it must return one row of scores per image.")
        return scores.reshape(n) if scores.size == n else scores.reshape(n, -1)

    # --- errors, without secrets -------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def _server_message(self, exc: urllib.error.HTTPError) -> str:
        """The server's error message, first line, at most 200 characters: MLServer's and Triton's
        {"error": ...}, FastAPI's {"detail": ...}, or the body's text."""
        try:
            text = exc.read(4096).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            text = ""
        try:
            body = json.loads(text)
            if isinstance(body, dict):
                text = str(body.get("error") or body.get("detail") or body.get("message") or text)
        except ValueError:
            pass
        text = text.strip().splitlines()[0] if text.strip() else (exc.reason or "no message")
        return self._redact(str(text))[:200]

    def _failure_text(self, exc: BaseException) -> str:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return f"no answer within the {self.timeout:g} s timeout"
        if isinstance(exc, ValueError):
            return f"its answer is not Open Inference Protocol JSON ({self._redact(str(exc))[:200]})"
        return self._redact(f"{type(reason).__name__}: {reason}")[:200]

    def _refusal(self, status: int, message: str, x: np.ndarray | None = None) -> AuditError:
        """The AuditError for a 3xx/4xx answer: what it means and the fix, in one sentence."""
        if status in (401, 403):
            given = f"headers {', '.join(sorted(self._headers))}" if self._headers else "no credentials"
            return AuditError(f"The endpoint {self.url} refused the credentials (HTTP {status}, {given} sent); "
                              "check the token or pass the header it requires.")
        if status == 404:
            return AuditError(f"The endpoint {self.url} has no such model (HTTP 404: {message}); check the model "
                              f"name and version in the URL, which must look like {_URL_FORM}.")
        if 300 <= status < 400:
            return AuditError(f"The endpoint {self.url} redirects (HTTP {status}); give the URL it redirects to.")
        if x is None:
            return AuditError(f"The endpoint {self.url} refused the metadata request (HTTP {status}: {message}); "
                              f"check the URL, which must look like {_URL_FORM}.")
        if status == 413:
            return AuditError(f"The endpoint {self.url} refused a request of {len(x)} images as too large "
                              "(HTTP 413); use a smaller batch.")
        return AuditError(f"The endpoint {self.url} refused a batch of shape {_shape_text(list(x.shape))} as "
                          f"{self.datatype} (HTTP {status}: {message}); the input probably does not fit the "
                          f"model: {SHAPE_FIX}.")

    # --- construction ------------------------------------------------------------------------------------

    @staticmethod
    def _check_headers(headers: dict) -> dict:
        out = {}
        for name, value in headers.items():
            name, value = str(name), str(value)
            if not _HEADER_NAME.match(name):
                raise AuditError(f"Header name {name!r} is not a valid HTTP header name.")
            if "\r" in value or "\n" in value or not value.isprintable():
                raise AuditError(f"The value of header {name!r} holds a line break or control character; "
                                 "give it on one line.")
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise AuditError(f"The value of header {name!r} holds characters HTTP headers cannot carry "
                                 "(only Latin-1); check it.") from None
            out[name] = value
        return out

    def _parse_url(self, url: str):
        """(the URL to show: no user, password or query; a function from a suffix to the URL to request)."""
        parts = urllib.parse.urlsplit(str(url).strip())
        if parts.password:
            self._secrets.append(urllib.parse.unquote(parts.password))
        if parts.query:
            self._secrets += [parts.query] + [v for _, v in urllib.parse.parse_qsl(parts.query)]
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        try:
            netloc += f":{parts.port}" if parts.port else ""
        except ValueError:
            host = ""
        match = _MODEL_PATH.match(parts.path)
        shown = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        if parts.scheme not in ("http", "https") or not host or not match:
            raise AuditError(f"Endpoint URL {shown!r} must look like {_URL_FORM}.")
        self.name, self.version = urllib.parse.unquote(match["name"]), match["version"]
        if parts.username is not None and not any(k.lower() == "authorization" for k in self._headers):
            user = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            token = base64.b64encode(user.encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
            self._secrets += [token]
        path = parts.path.rstrip("/")
        return shown, lambda suffix="": urllib.parse.urlunsplit((parts.scheme, netloc, path + suffix, parts.query, ""))

    def _metadata(self) -> dict:
        request = urllib.request.Request(self._request_url(), headers={**self._headers, "Accept": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc.code, self._server_message(exc)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise AuditError(f"Cannot reach the endpoint {self.url} ({self._failure_text(exc)}); check the host and "
                             "port, and that the server is running.") from None
        try:
            meta = json.loads(text)
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or "name" not in meta:
            raise AuditError(f"The endpoint {self.url} did not answer with Open Inference Protocol model metadata "
                             f"(JSON with name, inputs and outputs); check the URL, which must look like {_URL_FORM}.")
        return meta


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return float(exc.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None


def _shape_text(shape: list) -> str:
    return "[" + ", ".join("N" if i == 0 else "?" if d is None else str(d) for i, d in enumerate(shape)) + "]"


# JSON numbers written by numpy, a fixed 16 bytes each (" d.dddddddde+XX,"): about 10x faster than
# json.dumps(x.tolist()), which formats every float in Python (seconds for one batch of 224 px images).
_SCALE = 10.0 ** (8 - np.arange(-60, 60))  # 10^(8-e) for every float32 decimal exponent e
_DIGIT_COLUMNS = (10, 9, 8, 7, 6, 5, 4, 3, 1)  # where the 9 significant digits go, last first
_PIECE = 1 << 18  # values formatted at once: bounds the temporaries (~16 bytes of text per value)


def _json_floats(a: np.ndarray) -> bytes:
    """Comma-separated JSON numbers for float32 (or float16) values, 9 significant digits: they read back as
    the same float32. Values must be finite."""
    v = np.asarray(a, dtype=np.float32).ravel().astype(np.float64)
    return b",".join(_float_piece(v[s:s + _PIECE]) for s in range(0, v.size, _PIECE))


def _float_piece(v: np.ndarray) -> bytes:
    mag = np.abs(v)
    nz = mag > 0
    e = np.floor(np.log10(mag, out=np.zeros_like(mag), where=nz)).astype(np.int32)
    m = np.rint(mag * _SCALE[e + 60])
    hi, lo = m >= 1e9, nz & (m < 1e8)  # log10 off by one near a power of ten, or 9.999999996 -> 10.00000000
    if hi.any() or lo.any():
        e += hi.astype(np.int32) - lo
        fix = hi | lo
        m[fix] = np.rint(mag[fix] * _SCALE[e[fix] + 60])
    m = m.astype(np.uint32)
    out = np.empty((v.size, 16), np.uint8)
    out[:, 0] = np.where(v < 0, ord("-"), ord(" "))
    out[:, 2], out[:, 11], out[:, 15] = ord("."), ord("e"), ord(",")
    out[:, 12] = np.where(e < 0, ord("-"), ord("+"))
    ae = np.abs(e).astype(np.uint8)
    out[:, 13], out[:, 14] = ae // 10 + 48, ae % 10 + 48
    for col in _DIGIT_COLUMNS:
        q = m // np.uint32(10)
        out[:, col] = (m - q * np.uint32(10)).astype(np.uint8) + np.uint8(48)
        m = q
    return out.tobytes()[:-1]


_INT_TEXT = np.array([list(f"{i:>4},".encode()) for i in range(-128, 256)], np.uint8)  # "-128," ... " 255,"


def _json_ints(a: np.ndarray) -> bytes:
    """Comma-separated JSON integers for values in [-128, 255] (right-aligned: JSON allows no leading 0)."""
    return _INT_TEXT[np.asarray(a, dtype=np.int64).ravel() + 128].tobytes()[:-1]
