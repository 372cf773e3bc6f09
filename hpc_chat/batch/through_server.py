"""A batch answered by a running server (``hpc-chat batch --server``): the same input, output,
resume and summary as a batch with workers of its own (:mod:`hpc_chat.batch.run`), the
answers from the server's warm workers.

Each prompt is one ``POST /v1/chat/completions``, ``IN_FLIGHT`` at a time from threads, so the
server's workers decode them in batches while the output is written as each completes. An
OpenAI batch line is sent with its own body (the server checks it as the batch reader did);
a native prompt asks the one ``--agents`` name or the routed ``auto``. The server's refusals
become the line's error as its own workers' would (``error_kind`` input for a 4xx, runtime
for a 5xx); a full queue (429) or workers not ready yet (503) are waited out, as the server
asks with Retry-After. A server that goes away ends the run: every answer so far is written,
and ``--resume`` finishes it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from hpc_chat.batch.embed import embedding_answer
from hpc_chat.batch.input import BatchItem
from hpc_chat.batch.output import OUTPUT_KEYS, OutputWriter, failed_result, unknown_model
from hpc_chat.client import http as client
from hpc_chat.errors import HpcChatError
from hpc_chat.openai import completions
from hpc_chat.openai.batch import ROUTED_MODEL, RequestError, body_fields, line_options
from hpc_chat.openai.embeddings import EmbeddingLine
from hpc_chat.protocol.failure import FailureCode
from hpc_chat.structured.compile import line_over_run

IN_FLIGHT = 32  # enough to fill the slots of a few nodes' engines; the server queues the rest
POLL_S = 0.5


class ServerGone(HpcChatError):
    """The server could not be reached in the middle of a batch."""


def answer_through_server(url: str, items: list[BatchItem], writer: OutputWriter, *,
                          models: list[str], agent: str | None = None,
                          options: dict[str, Any] | None = None,
                          on_result: Callable[[BatchItem, dict], None] | None = None,
                          on_status: Callable[[str], None] | None = None,
                          in_flight: int = IN_FLIGHT) -> int:
    """Answer every item through the server at ``url`` and write each result as it
    completes; returns the number failed. ``models``: the server's model ids (a line that
    names another fails on its input, before any request)."""
    todo, taking = iter(items), threading.Lock()  # read as it is taken: never held whole
    done: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    status = on_status or (lambda text: None)

    def work() -> None:
        while not stop.is_set():
            try:
                with taking:
                    it = next(todo, None)
            except BaseException as exc:  # noqa: BLE001 - the input failed: the run ends
                done.put((None, exc))
                return
            if it is None:
                return
            try:
                done.put((it, ask(url, it, models, agent, options or {}, status, stop)))
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                done.put((it, exc))
                return

    # Daemon threads: an interrupted run exits at once (answers in flight then finish at the
    # server unused; --resume asks them again).
    threads = [threading.Thread(target=work, daemon=True, name=f"hpc_chat-batch-{n}")
               for n in range(min(in_flight, len(items)))]
    for t in threads:
        t.start()
    failed, gone = 0, None
    try:
        while True:
            try:
                it, result = done.get(timeout=POLL_S)  # Ctrl-C and SIGTERM land here
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and done.empty():
                    break  # every item was taken, and every request has come back
                continue
            if isinstance(result, BaseException):
                # No new requests; those in flight still come back (a server stopped with
                # SIGTERM finishes them) and are written before the run ends.
                if not isinstance(result, _Abandoned):
                    gone = gone or result
                stop.set()
                continue
            writer.write(it, result, finished_at=time.time())
            failed += not result["ok"]
            if on_result is not None:
                on_result(it, result)
            if done.empty() and not any(t.is_alive() for t in threads):
                break
    finally:
        stop.set()
    if isinstance(gone, ConnectionError):
        raise ServerGone(f"{gone}; {writer.written} results are written; rerun with --resume "
                         f"once it is back (or with --server off: workers of the command's "
                         f"own)")
    if gone is not None:
        raise gone
    return failed


def server_failure(code: str | None, status: int) -> FailureCode:
    """A server's error as the code its own workers' failure would carry: the code it
    answered with (one of ours), else what its status says."""
    try:
        return FailureCode(code)
    except ValueError:
        return FailureCode.INVALID_REQUEST if status < 500 else FailureCode.GENERATION_FAILED


class _Abandoned(Exception):
    """A request given up because the run is ending (not written: --resume asks it again)."""


def ask(url: str, item: BatchItem, models: list[str], agent: str | None,
        options: dict[str, Any], status: Callable[[str], None],
        stop: threading.Event) -> dict[str, Any]:
    """One item's result, in the form the workflow gives (what :class:`OutputWriter` writes)."""
    start = time.time()
    if isinstance(item.request, EmbeddingLine):
        return _embed(url, item.request, models, status, stop, start)
    completion = item.request is not None and item.request.url == completions.URL
    if item.request is not None:
        model = item.request.model
        # The line's own body, as the server would take it from any client (its ``user`` is
        # the end user's id, never a stored conversation); each line is a request of its
        # own, as with the batch's own workers: no stream.
        body = {**line_over_run(body_fields(options), item.request.body), "stream": False}
        body.pop("stream_options", None)
        if completion:  # the server's own route; the output adds the prompt back for echo
            try:
                line_options(item.request, options)  # refused here as on the workers
            except RequestError as exc:
                return failed_result(str(exc), FailureCode.INVALID_REQUEST)
            body = {k: v for k, v in body.items() if k not in ("hpc_chat_mode", "echo")}
    else:
        model = agent or ROUTED_MODEL
        body = {"model": model, "messages": [{"role": "user", "content": item.prompt}],
                **body_fields(options)}
    if model not in models:
        return unknown_model(model, models)
    send = client.text_completion if completion else client.complete
    done = _call(url, lambda: send(url, body), status, stop, start)
    if done.get("ok") is False:
        return done
    return _result(url, done, start, completion)


def _result(url: str, done: dict[str, Any], start: float, completion: bool) -> dict[str, Any]:
    """The server's answer in the workflow's form: a chat completion's, or a text
    completion's (its one prompt's provenance, its legacy logprobs in the chat shape the
    output line is made from)."""
    try:
        choice, usage = done["choices"][0], done.get("usage") or {}
        if completion:
            text, logprobs = choice["text"], completions.chat_logprobs(choice.get("logprobs"))
            provenance = (done.get("hpc_chat") or {}).get("prompts", [None])[0] or {}
        else:
            text, logprobs = choice["message"]["content"], choice.get("logprobs")
            provenance = done.get("hpc_chat") or {}
        listed = provenance.get("agents") or []
        return {**dict.fromkeys(OUTPUT_KEYS), "ok": True, "response": text,
                "logprobs": logprobs, "agents": [a.get("agent") for a in listed
                                                 if a.get("agent")],
                "latency_s": round(time.time() - start, 4),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "cached_tokens": int((usage.get("prompt_tokens_details") or {})
                                     .get("cached_tokens") or 0),
                "finish_reason": choice.get("finish_reason"),
                "cached": any(a.get("cached") for a in listed),
                "provenance": {**provenance, "server": url} if provenance else None}
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return failed_result(f"the server's answer is not a {'text' if completion else 'chat'}"
                             f" completion ({type(exc).__name__}: {exc})",
                             FailureCode.GENERATION_FAILED, round(time.time() - start, 4))


def _call(url: str, call: Callable[[], dict], status: Callable[[str], None],
          stop: threading.Event, start: float) -> dict[str, Any]:
    """The server's answer to ``call`` once it is ready, or the failed result of a request it
    refused; a refusal no line can get past (a wrong key, workers that failed) ends the run."""
    try:
        done = client.until_ready(url, call, on_wait=status, stop=stop)
    except client.Stopped:
        raise _Abandoned() from None
    except client.ServerError as exc:
        if exc.status == 401 or exc.code == "workers_failed":
            raise  # no line can be answered: the run ends (what came back is written)
        return failed_result(exc.reason, server_failure(exc.code, exc.status),
                             round(time.time() - start, 4))
    status("")
    return done if isinstance(done, dict) else {}


def _embed(url: str, req: EmbeddingLine, models: list[str], status: Callable[[str], None],
           stop: threading.Event, start: float) -> dict[str, Any]:
    """A ``/v1/embeddings`` line answered by the server."""
    if req.model not in models:
        return unknown_model(req.model, models)
    body = {"model": req.model, "input": req.inputs, "encoding_format": req.encoding}
    done = _call(url, lambda: client.embeddings(url, body), status, stop, start)
    if done.get("ok") is False:
        return done
    if not isinstance(done.get("data"), list):
        return failed_result("the server's answer is not a list of embeddings",
                             FailureCode.GENERATION_FAILED, round(time.time() - start, 4))
    return embedding_answer(done, req.model, start)
