"""The model worker: a LitServe ``LitAPI`` whose process holds the model and answers batches of requests.

LitServe collects up to ``max_batch_size`` requests (waiting at most ``batch_timeout``) and hands them to
``predict`` as one list: requests of the same task run as one call of the library function that answers it
(``vitkit.predict``, ``vitkit.extract_features``, ``vitkit.attention``), so the numbers are the library's.
A request that fails on its own (it should not: the API server checks every image first) is answered with its
own error; the others in its batch are not affected.
"""

from __future__ import annotations

import base64
import io
import logging
import signal
from typing import Any

import litserve as ls
import numpy as np
import torch
from PIL import Image
from starlette.responses import JSONResponse

from ..attention import attention_map, overlay
from ..data.images import decode_image
from ..errors import ConfigError, VitkitError
from ..features import extract_features, features_model
from ..graphmodel import StandIn
from ..inference import optimize_for_inference
from ..predict import predict
from ..runtime import ModelSpec, resolve_model
from ..zeroshot import load_image_text
from .settings import ServeSettings
from .zero_shot import ZeroShotRunner, is_image_text

logger = logging.getLogger(__name__)

TASKS = ("predict", "features", "attention", "zero-shot")


class ModelWorker(ls.LitAPI):
    """Holds one model; answers ``predict``, ``features``, ``attention`` and (an image-text model's)
    ``zero-shot`` requests in batches."""

    def __init__(self, model: ModelSpec, *, settings: ServeSettings, weights: Any = None,
                 labels: str | None = None) -> None:
        super().__init__(max_batch_size=settings.max_batch_size, batch_timeout=settings.batch_timeout_ms / 1000,
                         api_path="/predict")
        self.model_spec, self.weights, self.labels, self.settings = model, weights, labels, settings
        self.image_text = is_image_text(model)
        self.net: torch.nn.Module | None = None

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self, device: str) -> None:
        """Load the model, prepare its inference path once, and run one request of each task (warm-up):
        LitServe reports the server healthy only after this returns."""
        from . import metrics  # the worker process's metric files (prometheus multiprocess mode)

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the server stops this process once its requests are done

        self.metrics = metrics
        self.zero_shot: ZeroShotRunner | None = None
        if self.image_text:  # the image tower answers /features and /attention, both towers /zero-shot
            model = load_image_text(self.model_spec).to(self.settings.device).eval()
            self.zero_shot, net = ZeroShotRunner(model), model.visual
        else:
            net = resolve_model(self.model_spec, weights=self.weights, device=self.settings.device).eval()
        self.net = net
        s = self.settings
        default_path = (s.precision, s.backend) == ("fp32", "eager")
        if isinstance(net, StandIn):  # an exported graph runs as it was written (serve() refuses other settings)
            self.classify = self.embed = net
        else:
            self.classify = net if default_path else StandIn.of(optimize_for_inference(net, s.precision, s.backend),
                                                                net)
            self.embed = net if s.precision == "fp32" else features_model(net, s.precision)
        self.has_head = int(getattr(net, "num_classes", 0)) > 0
        size = tuple(net.pretrained_cfg.input_size[1:])
        warm = {"image": Image.fromarray(np.zeros((*size, 3), np.uint8)), "top_k": 1, "pool": "default",
                "labels": ["warm-up"], "templates": None}
        for task in TASKS:
            if self._answers(task):
                self._run(task, [warm])
        logger.info("model worker ready on %s", device)

    def _answers(self, task: str) -> bool:
        """Whether this model answers ``task``: predict needs a head, zero-shot a text tower, and an exported
        graph gives its output (and pooled features where it has them) but no attention."""
        if task == "predict":
            return self.has_head
        if task == "zero-shot":
            return self.zero_shot is not None
        if isinstance(self.net, StandIn):
            return task == "features" and self.net.feature_dim is not None
        return True

    # ------------------------------------------------------------------------------------------ requests
    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        item = dict(request)
        try:
            item["image"] = decode_image(item.pop("data"), name=item.get("name") or "the uploaded image")
        except VitkitError as exc:
            item["error"] = (400, str(exc))
        return item

    def batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return inputs

    def predict(self, items: list[dict[str, Any]] | dict[str, Any]) -> list[Any] | Any:
        """A batch's answers in order; with ``max_batch_size=1`` LitServe passes one request and takes one answer."""
        if isinstance(items, dict):
            return self.predict([items])[0]
        self.metrics.BATCH_SIZE.observe(len(items))
        out: list[Any] = [None] * len(items)
        for task in TASKS:
            rows = [i for i, item in enumerate(items) if item["task"] == task and "error" not in item]
            if not rows:
                continue
            try:
                answers = self._run(task, [items[i] for i in rows])
            except VitkitError as exc:  # e.g. a pool this model cannot do: every request of it is told why
                answers = [(422, str(exc))] * len(rows)
            for i, answer in zip(rows, answers):
                out[i] = answer
        return [items[i]["error"] if "error" in items[i] else out[i] for i in range(len(items))]

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: Any) -> Any:
        if isinstance(output, tuple):  # (status, message): this request's own error
            return JSONResponse({"detail": output[1]}, status_code=output[0])
        return output

    # ------------------------------------------------------------------------------------------ the tasks
    def _run(self, task: str, items: list[dict[str, Any]]) -> list[Any]:
        images = [item["image"] for item in items]
        if task == "predict":
            results = predict(images, self.classify, top_k=max(item["top_k"] for item in items),
                              labels=self.labels, batch_size=len(images))
            return [_predictions(r.to_dict(), item) for r, item in zip(results, items)]
        if task == "features":
            return self._features(images, items)
        if task == "zero-shot" and self.zero_shot is not None:  # the API server sends none to other models
            return self.zero_shot.run(items)
        return [self._attention(item) for item in items]

    def _features(self, images: list[Image.Image], items: list[dict[str, Any]]) -> list[Any]:
        answers: list[Any] = [None] * len(items)
        for pool in dict.fromkeys(item["pool"] for item in items):  # one call per pooling asked for
            rows = [i for i, item in enumerate(items) if item["pool"] == pool]
            result = extract_features([images[i] for i in rows], self.embed, pool=pool, batch_size=len(rows),
                                      num_workers=0)
            for i, vector in zip(rows, result.features):
                answers[i] = {"image": items[i].get("name") or "<image 0>", "pool": pool,
                              "shape": list(vector.shape), "features": vector.tolist()}
        return answers

    def _attention(self, item: dict[str, Any]) -> dict[str, Any]:
        if isinstance(self.net, StandIn):
            raise ConfigError(f"This server's model is an exported graph ({self.net.description}): it gives the "
                              f"model's output only, not its attention; serve the model itself for /attention.")
        view, heat = attention_map(item["image"], self.net, method=item.get("method", "rollout"))
        view.thumbnail((512, 512), Image.Resampling.LANCZOS)
        png = io.BytesIO()
        overlay(view, heat, alpha=0.5).save(png, format="PNG")
        return {"image": item.get("name") or "<image 0>", "method": item.get("method", "rollout"),
                "overlay_png": base64.b64encode(png.getvalue()).decode("ascii"),
                "grid": list(heat.shape)}


def _predictions(result: dict[str, Any], item: dict[str, Any]) -> dict[str, Any] | tuple[int, str]:
    """One image's answer cut to its own ``top_k`` (a batch is run with the largest asked for; top-k of a
    sorted list is its first k), named as the request named it."""
    if "error" in result:
        return 400, result["error"]
    result["predictions"] = result["predictions"][:item["top_k"]]
    result["image"] = item.get("name") or "<image 0>"
    return result


