"""The Ray Serve application `bsm serve up` deploys: an export answering HTTP requests. Runs inside Ray.

    POST /predict   records -> per record its class and probabilities (runner/serve_requests.py has the format)
    GET  /healthz   200 once the sessions are loaded and a warm-up record has scored; 503 while scoring is stuck
    GET  /info      classes, the fields a record takes, the export's metrics, parity figures and graph
    GET  /          a page to paste a dialogue into (runner/serve_page.py); /docs and /openapi.json: the API

Each replica loads the export with bsm's own `Predictor` (scoring/predict.py: the same tokenizer, chunking, graph choice
and int8 rule as `bsm predict`, every file checked against the manifest) with as many ONNX Runtime threads as
the replica has CPUs (Ray would leave it 1 per actor otherwise). Requests are batched across callers
(runner/serve_batching.py: what queued while the last batch scored, up to `max_batch_size` requests; a request
that finds the scorer idle waits at most `batch_wait_ms` for more) and scored on a worker thread, so the event
loop keeps accepting requests and answering /healthz. `check_health` (Serve calls it
every few seconds) fails while one scoring call has run longer than `stuck_after_s`, so Serve replaces a
replica stuck in ONNX Runtime instead of routing to it. A bearer token, when set, is compared in constant time
with the sha256 the config carries (the token itself is never in the config); the page's HTML is the one
thing served without it. Request text is logged only with `--verbose`.

The config (client/serve.py builds it) names `build` as the import path and gives it `ServeArgs` as `args`.
"""

import hashlib
import hmac
import logging
import os
import time
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve

from raytune_bsm.runner.serve_batching import Batcher
from raytune_bsm.runner.serve_page import page
from raytune_bsm.runner.serve_requests import Refusal, check_size, parse, predictions, request_schema
from raytune_bsm.serving import DEPLOYMENT, Limits, ServeArgs

log = logging.getLogger("ray.serve")
WARM_UP = ["Buyer: hello, where is my order?", "Seller: it shipped yesterday."]  # one record scored before ready
PIN_S, RENEW_S = 3600, 600  # the package's lease in Ray's GCS, and how often a live replica renews it
PUBLIC = {""}  # paths (under the route prefix) served without the token: the page's HTML, which holds no data


api = FastAPI(
    title="bsm: a served export",
    description="Scores buyer-seller dialogues with a bsm export. POST /predict; see also /info and /healthz.",
)
# This replica's token digest, in its process environment: Serve runs a pickled copy of `api` (serve.ingress),
# whose middleware may hold a copy of this module's globals, but `os.environ` is the one the process has.
TOKEN_ENV = "BSM_SERVE_TOKEN_SHA256"


@api.middleware("http")
async def _authorize(request: Request, call_next: Any) -> Any:
    want = os.environ.get(TOKEN_ENV)
    if want and _relative(request).strip("/") not in PUBLIC:
        given = request.headers.get("authorization", "")
        digest = hashlib.sha256(given.removeprefix("Bearer ").strip().encode()).hexdigest()
        if not given.startswith("Bearer ") or not hmac.compare_digest(digest, want):
            return JSONResponse(
                {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'", "field": "headers"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    return await call_next(request)


def _relative(request: Request) -> str:
    """The request's path under the application's route prefix."""
    path, root = request.url.path, request.scope.get("root_path", "").rstrip("/")
    return path[len(root) :] if root and path.startswith(root) else path


@api.exception_handler(Exception)
async def _internal(request: Request, e: Exception) -> JSONResponse:
    log.error("%s %s failed: %s", request.method, request.url.path, type(e).__name__)  # no text, no traceback
    return JSONResponse({"error": f"internal error ({type(e).__name__}); see the replica's log", "field": None}, 500)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(api)
class BsmScorer:
    def __init__(self, args: dict[str, Any]) -> None:
        from raytune_bsm.scoring.predict import Predictor  # numpy, onnxruntime: in the replica only

        self.args = ServeArgs.of(args)
        self.limits = self.args.limits
        if self.args.token_sha256:
            os.environ[TOKEN_ENV] = self.args.token_sha256
        else:
            os.environ.pop(TOKEN_ENV, None)
        self.predictor = Predictor(self.args.export, precision=self.args.precision, threads=self.args.threads)
        choice = self.predictor.choice
        entries = {e["path"]: e for e in self.predictor.manifest["files"]}
        self.export = {"run": self.args.run, "graph": choice.file, "sha256": entries[choice.file]["sha256"]}
        self.text_field = self.predictor.text_field
        self.batcher = Batcher(self._score_now, self.args.max_batch_size, self.args.batch_wait_ms / 1000)
        self.busy_since: float | None = None  # monotonic start of the scoring call running now
        self.scored = self.batches = 0  # records and scoring calls (batches) of this replica, the warm-up included
        self.pinned = 0.0
        self._renew_package_lease()
        self._score_now([WARM_UP])  # ready (the constructor returns) only once a record has scored
        log.info("%s: %s", self.export["graph"], self.predictor.summary)

    # ------------------------------------------------------------------------------------------- scoring

    def _score_now(self, dialogues: list[Any]) -> Any:
        """Probabilities float64 [N, K] for N dialogues; on a worker thread, never on the event loop."""
        self.busy_since = time.monotonic()
        try:
            plan = self.predictor.calls(dialogues, self.args.batch_size)
            probs = self.predictor.score(len(dialogues), plan)
        finally:
            self.busy_since = None
        self.scored, self.batches = self.scored + len(dialogues), self.batches + 1
        return probs

    def _renew_package_lease(self) -> None:
        """Keep this application's uploaded package in Ray's GCS while any replica lives. Ray deletes an uploaded
        package when nothing references it (a detached actor's reference dies with it) once its upload pin (10
        minutes) has expired: a lone replica killed later would leave its replacement nothing to start from. So
        every live replica pins it for an hour, renewed every 10 minutes; after `down` it expires by itself."""
        import ray
        from ray.experimental.internal_kv import _pin_runtime_env_uri

        env = ray.get_runtime_context().runtime_env
        for uri in [*(env.get("py_modules") or []), env.get("working_dir")]:
            if isinstance(uri, str) and uri.startswith("gcs://"):
                _pin_runtime_env_uri(uri, expiration_s=PIN_S)
        self.pinned = time.monotonic()

    def check_health(self) -> None:
        """Serve's health check: a scoring call running longer than `stuck_after_s` means a stuck replica."""
        if time.monotonic() - self.pinned > RENEW_S:
            self._renew_package_lease()
        if self.busy_since is not None and (busy := time.monotonic() - self.busy_since) > self.args.stuck_after_s:
            raise RuntimeError(f"one scoring call has run for {busy:.0f} s (limit {self.args.stuck_after_s:.0f} s)")

    # ---------------------------------------------------------------------------------------------- routes

    @api.post(
        "/predict",
        summary="Score dialogues",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema("dialogue", Limits())}},
            }
        },
    )
    async def predict(self, request: Request) -> JSONResponse:
        try:
            size = request.headers.get("content-length", "")
            if size.isdigit():
                check_size(int(size), self.limits)  # refused before the body is read
            body, n = [], 0
            async for piece in request.stream():
                n += len(piece)
                check_size(n, self.limits)
                body.append(piece)
            records = parse(b"".join(body), self.text_field, self.limits)
        except Refusal as r:
            return JSONResponse(r.body(), status_code=r.status)
        if self.args.verbose:
            log.info("scoring %d records: %r", len(records), [r.dialogue for r in records])
        probs = await self.batcher.score([r.dialogue for r in records])
        answer = predictions(records, probs, self.predictor.class_names, self.export, self.predictor.choice.precision)
        return JSONResponse(answer)

    @api.get("/healthz", summary="Ready once the export is loaded and a warm-up record has scored")
    async def healthz(self) -> JSONResponse:
        try:
            self.check_health()
        except RuntimeError as e:
            return JSONResponse({"status": "stuck", "error": str(e)}, status_code=503)
        return JSONResponse({"status": "ready", "scored": self.scored, "batches": self.batches, "export": self.export})

    @api.get("/info", summary="Classes, fields, the export's metrics and parity figures")
    async def info(self) -> JSONResponse:
        p = self.predictor
        parity = {k: v for k, v in (p.manifest.get("parity") or {}).items() if not isinstance(v, (list, dict))}
        return JSONResponse(
            {
                "classes": p.class_names,
                "fields": {
                    "id": "optional: a string or an integer, echoed back (default: the record's index)",
                    self.text_field: "required: the dialogue, a string or a list of message strings, not blank",
                },
                "export": self.export,
                "precision": p.choice.precision,
                "graph_choice": p.choice.why,
                "metrics": p.info.get("metrics") or {},
                "precision_metrics": p.manifest.get("precision") or {},
                "parity": parity,
                "limits": asdict(self.limits),
                "batching": {"max_batch_size": self.args.max_batch_size, "batch_wait_ms": self.args.batch_wait_ms},
                "threads": p.scorer.threads,
            }
        )

    @api.get("/", response_class=HTMLResponse, summary="A page to score a dialogue by hand")
    async def index(self) -> HTMLResponse:
        c = self.predictor.choice
        title = f"{self.args.run}: {', '.join(self.predictor.class_names)}"
        return HTMLResponse(
            page(title, self.args.run, c.file, c.precision, self.text_field, bool(self.args.token_sha256))
        )


def build(args: dict[str, Any]) -> Any:
    """The application builder the Serve config's `import_path` names."""
    return BsmScorer.bind(asdict(ServeArgs.of(args)))
