"""Triton Inference Server Python-backend model that serves a luodi bundle's generate, streaming (decoupled).

`luodi triton` copies this file into the model repository as `<model>/1/model.py`, beside the bundle. Triton's
Python backend imports it with `triton_python_backend_utils` available; the bundle is loaded (and verified)
once per model instance. Requests carry `text_input` (a prompt, or, when `chat` is true, a JSON list of chat
messages; other chat text is one user message) and optional `max_tokens`, `temperature`, `top_k`, `top_p`,
`seed` and `stream`; responses carry `text_output` (one piece per response when streaming, the whole text
otherwise) and, on the final response, `finish_reason`. The tensor names follow Triton's vLLM backend so its
clients work unchanged. Every request of a batch is answered: one that fails gets an error response.
"""

import json
import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import luodi
from luodi.inputs import check_messages

log = logging.getLogger(__name__)

OPTIONS = {"max_tokens": ("max_new_tokens", int), "temperature": ("temperature", float), "top_k": ("top_k", int),
           "top_p": ("top_p", float), "seed": ("seed", int)}


def _scalar(request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else value.item()


def _text(name: str, text: str):
    return pb_utils.Tensor(name, np.array([text.encode("utf-8")], dtype=np.object_))


def _chat_messages(text: str) -> list[dict]:
    """A chat request's messages: a JSON list (or a lone object, refused) is checked as messages; any other
    text, JSON scalars included, is one user message."""
    try:
        messages = json.loads(text)
    except ValueError:
        return [{"role": "user", "content": text}]
    return check_messages(messages) if isinstance(messages, (list, dict)) else [{"role": "user", "content": text}]


def _send_error(sender, error: Exception) -> None:
    """The request's final response carries the error. Sending it can fail only when the request is already
    closed (its final response sent) or gone; that is logged and the batch goes on."""
    if not isinstance(error, luodi.LuodiError):
        log.error("request failed", exc_info=error)
    message = str(error) if isinstance(error, luodi.LuodiError) else f"{type(error).__name__}: {error}"
    try:
        sender.send(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception:
        log.exception("could not send the error response of a failed request (%s)", message)


class TritonPythonModel:
    """Loads the bundle named by the config's `bundle` parameter; one generation per request."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        threads = int(params["threads"]) if params.get("threads") else None
        self.lm = luodi.load(folder / params["bundle"], threads=threads,
                             verify=params.get("verify", "true") != "false")

    def _generate(self, request, sender) -> None:
        prompt = _scalar(request, "text_input")
        if prompt is None:
            raise luodi.LuodiError("the request has no text_input")
        if _scalar(request, "chat"):
            prompt = _chat_messages(prompt)
        options = {key: cast(value) for name, (key, cast) in OPTIONS.items()
                   if (value := _scalar(request, name)) is not None}
        if options.get("temperature"):
            options["do_sample"] = True
        stream = self.lm.stream(prompt, **options)
        if _scalar(request, "stream"):
            for piece in stream:
                sender.send(pb_utils.InferenceResponse(output_tensors=[_text("text_output", piece)]))
            text = ""
        else:
            text = "".join(stream)
        final = [_text("text_output", text), _text("finish_reason", stream.result.finish_reason)]
        sender.send(pb_utils.InferenceResponse(output_tensors=final),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def execute(self, requests):
        """Decoupled: every response goes through the request's sender. Anything one request raises (bad
        input, a template error, a runtime failure) becomes that request's error response only; the rest of
        the batch is still answered."""
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except Exception as e:
                _send_error(sender, e)
        return None

    def finalize(self):
        self.lm = None
