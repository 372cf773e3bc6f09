"""Agents whose model runs elsewhere, behind OpenAI's chat API: called from the driver.

The driver makes these calls itself rather than sending them to a Parsl worker: compute nodes
often cannot reach outside the cluster, while the driver (a login node, the driver job, the
server) is where the workflow's user is, with the endpoint's key in its environment. A call
goes through OpenAI's own SDK, whose retries apply: 408, 409, 429 and 5xx answers (and lost
connections) are tried again ``max_retries`` times, with exponential backoff and jitter, or
after the server's ``Retry-After``. At most ``max_concurrency`` calls to one endpoint are in
flight from this driver (a round of a whole batch file would otherwise open thousands).

The answer has the shape a worker's has (:class:`~hpc_chat.protocol.result.AgentAnswer`), so
the aggregation, the history, the cache, provenance and every output treat it alike. Its
provenance names the endpoint and the model id the endpoint reported; the API key is read
from the environment variable the model names, at the call, and is never written anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from typing import Any

from hpc_chat.driver.token_hub import local_stream
from hpc_chat.errors import HpcChatError
from hpc_chat.llm.models import RemoteModel
from hpc_chat.protocol.result import AgentAnswer, FinishReason, Timings, Usage, WorkerIdentity
from hpc_chat.worker.provenance import versions

# What a remote model is sent: OpenAI's own sampling parameters. top_k, repeat_penalty and a
# raw grammar are the local engine's (llama.cpp's sampler), not part of OpenAI's API.
SENT = ("temperature", "top_p", "max_tokens", "seed", "stop", "response_format")
# What only hpc_chat's own engine does: refused for a remote model rather than dropped.
LOCAL_ONLY = {"grammar": "a raw grammar (send response_format instead)", "tools": "tools",
              "tool_result": "a tool's result", "logprobs": "logprobs",
              "text_completion": "a text completion (a raw prompt, no chat template)",
              "ignore_eos": "ignore_eos"}


class RemoteRequestError(HpcChatError, ValueError):
    """The endpoint refused the request itself (400, 422): asking again will not help."""


class RemoteAgents:
    """One SDK client and one concurrency bound per remote model used by this driver."""

    def __init__(self) -> None:
        self._clients: dict[RemoteModel, tuple[Any, asyncio.Semaphore]] = {}

    def _client(self, remote: RemoteModel):
        if remote not in self._clients:
            from openai import AsyncOpenAI  # the SDK costs its import only when used

            key = os.environ.get(remote.api_key_env, "") if remote.api_key_env else ""
            client = AsyncOpenAI(base_url=remote.base_url, api_key=key or "none",
                                 max_retries=remote.max_retries, timeout=remote.timeout_s)
            self._clients[remote] = client, asyncio.Semaphore(remote.max_concurrency)
        return self._clients[remote]

    async def answer(self, remote: RemoteModel, agent: dict[str, Any],
                     messages: list[dict[str, Any]], options: dict[str, Any],
                     history_turns: int, stream: dict[str, Any] | None = None) -> dict[str, Any]:
        """``agent``'s answer (its :meth:`AgentConfig.to_dict`) to ``messages`` from the remote
        model: the agent's sampling settings under the request's ``options``."""
        if remote.api_key_env and not os.environ.get(remote.api_key_env):
            raise HpcChatError(f"the remote model {remote.label()} needs an API key in "
                               f"${remote.api_key_env}, which is not set")
        unusable = [what for k, what in LOCAL_ONLY.items()
                    if _asked(options.get(k, agent["config"].get(k)))]
        if unusable:
            raise RemoteRequestError(f"{unusable[0]} needs hpc_chat's own engine: the remote "
                                     f"model {remote.label()} is not asked it")
        settings = {**{k: agent["config"].get(k) for k in SENT}, **options}
        params = {k: _sent(k, settings[k]) for k in SENT if settings.get(k) not in (None, [])}
        client, slots = self._client(remote)
        sent = [{"role": m["role"], "content": m["content"]} for m in messages]
        channel = local_stream(stream)
        async with slots:
            start = time.time()
            try:
                if channel is not None and channel.tokens:
                    reply = await _streamed(client, remote, sent, params, channel)
                else:
                    reply = await _whole(client, remote, sent, params)
            except HpcChatError:
                raise
            except Exception as exc:  # the SDK's, after its retries
                raise _failure(remote, exc) from None
            finally:
                if channel is not None:
                    channel.finish()
            end = time.time()
        text, finish, usage, reported, ident = reply
        elapsed = max(end - start, 1e-9)
        return AgentAnswer(
            content=text, agent=agent["name"], model=remote.label(),
            model_path=remote.base_url, finish_reason=finish, usage=usage,
            timings=Timings(model_load_s=0.0, model_loaded_now=False,
                            generation_s=round(elapsed, 4),
                            tokens_per_s=round(usage.completion_tokens / elapsed, 2),
                            start=start, end=end),
            history_turns_used=history_turns,
            worker=WorkerIdentity(host=socket.gethostname(), pid=os.getpid()),
            n_threads=0, batched=False,
            provenance={**versions(), "remote": True, "endpoint": remote.base_url,
                        "model": reported, "model_requested": remote.model,
                        "response_id": ident, "sampling": params,
                        "answer_sha256": hashlib.sha256(text.encode()).hexdigest(),
                        "host": socket.gethostname(), "start": start, "end": end},
        ).wire()

    async def close(self) -> None:
        for client, _ in self._clients.values():
            await client.close()
        self._clients.clear()


def _asked(value: Any) -> bool:
    """A request's option is set (``logprobs: 0`` is: no alternatives, but logprobs)."""
    return value is not None and value is not False and value != [] and value != ""


def _sent(key: str, value: Any) -> Any:
    """A parameter as the endpoint gets it: a response_format without the unset fields our own
    model fills with null (strict servers refuse ``"strict": null``); the schema inside is
    sent as given (a ``null`` there means something)."""
    if key != "response_format" or not isinstance(value, dict):
        return value
    out = {k: v for k, v in value.items() if v is not None}
    if isinstance(out.get("json_schema"), dict):
        out["json_schema"] = {k: v for k, v in out["json_schema"].items() if v is not None}
    return out


def _finish(reason: str | None) -> FinishReason:
    return {"length": FinishReason.LENGTH, "tool_calls": FinishReason.TOOL_CALLS}.get(
        reason or "stop", FinishReason.STOP)


async def _whole(client, remote: RemoteModel, messages, params):
    reply = await client.chat.completions.create(model=remote.model, messages=messages,
                                                 **params)
    if not reply.choices:
        raise HpcChatError(f"the remote model {remote.label()} sent no answer")
    choice = reply.choices[0]
    return (choice.message.content or "", _finish(choice.finish_reason), _usage(reply.usage),
            reply.model or remote.model, reply.id)


def _usage(reported) -> Usage:
    """The endpoint's usage, with the prompt tokens it found cached when it says."""
    details = getattr(reported, "prompt_tokens_details", None)
    return Usage(prompt_tokens=getattr(reported, "prompt_tokens", 0) or 0,
                 completion_tokens=getattr(reported, "completion_tokens", 0) or 0,
                 cached_tokens=getattr(details, "cached_tokens", 0) or 0)


async def _streamed(client, remote: RemoteModel, messages, params, channel):
    """The answer streamed, each piece put on the client's stream as it comes; stopped when
    the client goes away (the stream is closed)."""
    events = await client.chat.completions.create(
        model=remote.model, messages=messages, stream=True,
        stream_options={"include_usage": True}, **params)
    text, finish, usage, reported, ident = "", FinishReason.STOP, Usage(), remote.model, None
    try:
        async for event in events:
            reported, ident = event.model or reported, event.id or ident
            if event.usage is not None:
                usage = _usage(event.usage)
            for choice in event.choices:
                piece = choice.delta.content or ""
                if piece:
                    text += piece
                    if not channel.put(piece):
                        return text, FinishReason.CANCELLED, usage, reported, ident
                if choice.finish_reason:
                    finish = _finish(choice.finish_reason)
    finally:
        await events.close()
    return text, finish, usage, reported, ident


def _failure(remote: RemoteModel, exc: Exception) -> HpcChatError:
    """One line naming the endpoint and what it said (never the key, never the prompt)."""
    key = os.environ.get(remote.api_key_env or "", "")

    def scrubbed(text: str) -> str:  # a server that echoes the header back: before any cut
        return text.replace(key, f"${remote.api_key_env}") if len(key) >= 4 else text

    return _described(remote, exc, scrubbed)


def _described(remote: RemoteModel, exc: Exception, scrubbed) -> HpcChatError:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        what = f"answered HTTP {status}"
        if status in (400, 422):  # the request itself (404: the model or URL configured)
            return RemoteRequestError(f"the remote model {remote.label()} {what}: "
                                      f"{_said(exc, scrubbed)}")
        retried = f" (after {remote.max_retries} retries)" if status in (408, 409, 429) or \
            status >= 500 else ""
        return HpcChatError(f"the remote model {remote.label()} {what}{retried}: "
                            f"{_said(exc, scrubbed)}")
    name = type(exc).__name__
    if "Timeout" in name:
        return HpcChatError(f"the remote model {remote.label()} did not answer within "
                            f"timeout_s={remote.timeout_s:g} (after {remote.max_retries} "
                            f"retries)")
    return HpcChatError(f"the remote model {remote.label()} cannot be reached: {name}: "
                        f"{scrubbed(str(exc))[:200]}")


def _said(exc: Exception, scrubbed) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(error.get("message"), str):
            return scrubbed(error["message"])[:300]
    return scrubbed(str(getattr(exc, "message", exc)))[:300]
