"""Client of vLLM's OpenAI-compatible server: chat (whole or streamed), exact token counts
through the engine's own ``/tokenize``, model info and its Prometheus metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx

from rag.errors import RagError

Message = dict[str, str]


class EngineUnavailableError(RagError):
    """The engine cannot be reached (stopped, starting, or the network is down)."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for the HTTP Retry-After header


class EngineTimeoutError(RagError):
    """The engine did not answer within the configured timeout."""


class EngineRejectedError(RagError):
    """The engine refused a request (for example a prompt longer than its window)."""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    max_model_len: int


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


@dataclass(frozen=True)
class Delta:
    """One streamed piece: text, and on the last one the usage."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class EngineClient:
    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        repetition_penalty: float = 1.0,
    ) -> None:
        self.repetition_penalty = repetition_penalty
        self.timeout = timeout  # seconds a read may wait (connect: 5 s)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self._model = model
        self._info: ModelInfo | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def known_model_info(self) -> ModelInfo | None:
        """The served model's info if it has been read already (no request)."""
        return self._info

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise EngineTimeoutError(f"the engine did not answer {path} in time") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailableError(f"the engine at {self.base_url} is unreachable") from exc
        _raise_for_status(response, path)
        return response

    async def health(self) -> bool:
        """Whether the engine serves. vllm-router answers ``/health`` 503 as soon as one of its
        replicas is down (``Unhealthy servers: [...]``), while the others still serve: its
        ``/readiness`` then says whether any replica is healthy. vLLM itself has no
        ``/readiness`` (404), so a dead vLLM stays unhealthy."""
        try:
            response = await self._http.get("/health", timeout=3.0)
            if response.status_code == 503 and response.text.startswith("Unhealthy servers"):
                ready = await self._http.get("/readiness", timeout=3.0)
                return ready.status_code == 200 and ready.json().get("healthy_workers", 0) > 0
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return response.status_code == 200

    async def model_info(self, refresh: bool = False) -> ModelInfo:
        """The served model and its ``max_model_len``, as the engine reports them."""
        if self._info is not None and not refresh:
            return self._info
        data = (await self._request("GET", "/v1/models")).json()["data"]
        chosen = next((m for m in data if m["id"] == self._model), None) if self._model else None
        if chosen is None:
            if self._model is not None:
                served = ", ".join(m["id"] for m in data)
                raise EngineRejectedError(f"model {self._model!r} is not served (served: {served})")
            chosen = data[0]
        self._info = ModelInfo(id=chosen["id"], max_model_len=int(chosen["max_model_len"]))
        return self._info

    async def count_chat_tokens(self, messages: list[Message]) -> int:
        """Tokens of the whole chat prompt, template included, by the served model's tokenizer."""
        info = await self.model_info()
        body = {"model": info.id, "messages": messages, "add_generation_prompt": True}
        return int((await self._request("POST", "/tokenize", json=body)).json()["count"])

    async def count_tokens(self, text: str) -> int:
        info = await self.model_info()
        body = {"model": info.id, "prompt": text, "add_special_tokens": False}
        return int((await self._request("POST", "/tokenize", json=body)).json()["count"])

    def _chat_body(
        self, model: str, messages: list[Message], max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if self.repetition_penalty != 1.0:  # vLLM's sampling extension of the OpenAI API
            body["repetition_penalty"] = self.repetition_penalty
        return body

    async def chat(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Completion:
        info = await self.model_info()
        body = self._chat_body(info.id, messages, max_tokens, temperature)
        data = (await self._request("POST", "/v1/chat/completions", json=body)).json()
        choice = data["choices"][0]
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=int(data["usage"]["prompt_tokens"]),
            completion_tokens=int(data["usage"]["completion_tokens"]),
            finish_reason=choice.get("finish_reason"),
        )

    async def stream_chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float,
        read_timeout: float | None = None,
    ) -> AsyncGenerator[Delta, None]:
        """Text deltas as the engine produces them; closing the iterator aborts the request.

        The first delta is empty and comes as soon as the engine has accepted the request
        (its response status is in), so a caller can learn of a refusal before it answers.
        ``read_timeout`` lengthens this request's read timeout past the client's (a caller that
        bounds the wait itself, e.g. by an admitted ask's deadline); it never shortens it.
        """
        info = await self.model_info()
        body = self._chat_body(info.id, messages, max_tokens, temperature)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        timeout = httpx.Timeout(max(self.timeout, read_timeout or 0.0), connect=5.0)
        try:
            async with self._http.stream(
                "POST", "/v1/chat/completions", json=body, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response, "/v1/chat/completions")
                yield Delta(text="")
                finish: str | None = None
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[6:]
                    if payload == "[DONE]":
                        return
                    event = json.loads(payload)
                    for choice in event.get("choices", []):
                        finish = choice.get("finish_reason") or finish
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            yield Delta(text=text)
                    usage = event.get("usage")
                    if usage:
                        yield Delta(
                            text="",
                            prompt_tokens=int(usage["prompt_tokens"]),
                            completion_tokens=int(usage["completion_tokens"]),
                            finish_reason=finish,
                        )
        except httpx.TimeoutException as exc:
            raise EngineTimeoutError("the engine stopped streaming within the timeout") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailableError(f"the engine at {self.base_url} is unreachable") from exc

    async def metrics_text(self) -> str:
        return (await self._request("GET", "/metrics", timeout=5.0)).text


def _raise_for_status(response: httpx.Response, path: str) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json().get("error", {}).get("message") or response.text
    except (ValueError, AttributeError):
        message = response.text
    if response.status_code in (502, 503, 504):
        raise EngineUnavailableError(f"the engine answered {response.status_code} on {path}")
    raise EngineRejectedError(f"the engine refused {path} ({response.status_code}): {message}")


def prefix_cache_counters(metrics: str) -> tuple[float, float]:
    """(hits, queries) of vLLM's prefix cache, summed over engines, from its /metrics text."""
    hits = queries = 0.0
    for line in metrics.splitlines():
        if line.startswith("vllm:prefix_cache_hits_total"):
            hits += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:prefix_cache_queries_total"):
            queries += float(line.rsplit(" ", 1)[1])
    return hits, queries
