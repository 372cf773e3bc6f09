"""``ParslChatWorkflow``: route, answer in parallel on Parsl workers, aggregate, remember.

The API of the original design, under ``hpc_chat``::

    workflow = ParslChatWorkflow()
    await workflow.initialize("config/ParslChatWorkflow.yml")
    print(await workflow.process_user_input("Hello, explain quantum computing"))
    print(await workflow.get_performance_stats())
    await workflow.shutdown()

One request becomes one Parsl task per chosen agent (agents answer in parallel, on any worker);
the driver aggregates the answers, so aggregation costs no extra round trip to a worker.
Only the driver touches the history database; workers get recent turns by value.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from hpc_chat.agents.aggregate import aggregate_responses
from hpc_chat.agents.cache import ResponseCache
from hpc_chat.agents.collaborative import EnhancedCollaborativeAgent
from hpc_chat.agents.modes import Mode, parse_mode
from hpc_chat.agents.routing import Route, route
from hpc_chat.driver.asking import ask_agent
from hpc_chat.driver.collaborate import collaborate, first_round, without_format
from hpc_chat.driver.executors.base import ChatExecutor
from hpc_chat.driver.executors.factory import build_parsl_config, make_executor, pool_start_plan
from hpc_chat.driver.executors.grouping import RequestBatcher
from hpc_chat.driver.history import MemoryHistory, create_history
from hpc_chat.driver.remote_agent import RemoteAgents
from hpc_chat.driver.result import describe_error, request_result
from hpc_chat.driver.result_streams import ResultStreams
from hpc_chat.driver.stats import PerformanceStats
from hpc_chat.driver.workflow_config import LoadedWorkflow, load_workflow
from hpc_chat.errors import ConfigError, ExecutorError, FormatError, HistoryError, HpcChatError
from hpc_chat.llm.models import RemoteModel, model_location, remote_model
from hpc_chat.protocol.context import SiteModel, TaskContext
from hpc_chat.protocol.failure import FailureCode, failure_code
from hpc_chat.protocol.stream import StreamSpec
from hpc_chat.sites.build import site_model
from hpc_chat.sites.registry import load_profile
from hpc_chat.structured.compile import FORMAT_KEYS, output_format
from hpc_chat.worker.chat import model_name, stored_turn

HISTORY_FAILED = "the conversation history cannot be used"  # how such an error begins

__all__ = ["ParslChatWorkflow", "build_parsl_config", "create_parsl_chat_workflow",
           "describe_error"]


class ParslChatWorkflow:
    """The chat workflow on a Parsl executor (local workers or pilot jobs from a site profile).

    ``site``: a site profile name or path, over the config's ``parsl`` section. ``executor``: a
    :class:`ChatExecutor` to use instead of building one (started if needed, shut down with the
    workflow). ``history_path``: where the SQLite history lives instead. ``allocation``: run
    inside the current batch job, workers started on its nodes with the profile's launcher
    rather than submitted as pilot jobs. ``endpoint``: a Globus Compute endpoint id, where tasks
    run instead of Parsl workers; ``globus_state``: where a batch keeps its Globus Compute task
    group, for ``--resume``. ``model``: a model name, alias or ``.gguf`` path every agent uses
    instead of its own (``--model``; ``echo`` is the built-in test model), ``model_label``
    naming where it came from in error messages. ``task_size``: requests per worker task
    instead of ``performance.batch_size`` (``hpc-chat batch --task-size``)."""

    def __init__(self, *, site: str | None = None, executor=None,
                 history_path: str | None = None, allocation: bool = False,
                 endpoint: str | None = None, globus_state: str | None = None,
                 model: str | None = None, model_label: str = "--model",
                 task_size: int | None = None):
        self.site, self.task_size = site, task_size
        self.model, self.model_label = model, model_label
        self.endpoint, self.globus_state = endpoint, globus_state
        self.most_workers: int | None = None  # a node's workers at most (driver.pool_size)
        self.allocation = allocation
        self.profile = None
        self.executor: ChatExecutor | None = executor
        self.history_path = history_path
        self.loaded: LoadedWorkflow | None = None
        self.history: MemoryHistory | None = None
        self.agents: dict[str, EnhancedCollaborativeAgent] = {}
        self.site_model = SiteModel()
        self.stats = PerformanceStats()
        self.cache = ResponseCache()
        self._pending: set[asyncio.Task] = set()
        self.batcher, self._checked = None, None
        self.remote_models: dict[str, RemoteModel] = {}  # agent -> its model served elsewhere
        self.remote = RemoteAgents()
        self.result_streams = ResultStreams(self)

    # ----------------------------------------------------------------- lifecycle
    async def initialize(self, config_path: str | os.PathLike | None = None) -> None:
        """Load the config and agents, open the history, and start the executor once."""
        if self.loaded is not None:
            return
        await self._start(self._checked or self.check(config_path))

    def check(self, config_path: str | os.PathLike | None = None) -> LoadedWorkflow:
        """Load and check the config, the agents, the site and every model name, without
        starting anything: a mistake there costs no worker start-up. Done once."""
        if self._checked is not None:
            return self._checked
        loaded = load_workflow(config_path)
        settings = loaded.settings
        remote = bool(self.endpoint) or settings.executor.is_globus
        if remote and self.site:
            raise ConfigError("--endpoint and --site exclude each other: with an endpoint the "
                              "site is wherever the endpoint runs")
        if remote and not (self.endpoint or settings.executor.endpoint_id):
            raise ConfigError(f"{loaded.path}: config.executor.endpoint_id: needed with type "
                              f"{settings.executor.type} (or pass --endpoint)")
        if not remote and (self.executor is None or self.site):
            self._load_site(loaded)
        if self.model:
            self.site_model = self.site_model.model_copy(update={"override": self.model})
        for agent in loaded.agents:
            try:
                name = model_name(agent.config.model_dump(), self.site_model)
                if (served := remote_model(name)) is not None:  # called by this driver
                    self.remote_models[agent.name] = served
                elif not remote:  # an endpoint's models resolve on the endpoint
                    model_location(name, self.site_model.aliases)
            except ConfigError as exc:
                if self.model:
                    where = self.model_label  # --model, or $HPC_CHAT_MODEL
                elif agent.config.model == "default" and self.profile is not None:
                    where = f"{self.profile.source}: model.model"  # the site chose it
                else:
                    where = f"{agent.source}: config.model"
                raise ConfigError(f"{where}: {exc}") from None
        self._checked = loaded
        return loaded

    def check_agents(self, names: list[str] | None) -> None:
        """Refuse agent names the workflow does not have (before anything starts)."""
        loaded = self._checked or self.loaded
        known = [a.name for a in loaded.agents]
        unknown = [a for a in names or [] if a not in known]
        if unknown:
            raise ConfigError(f"unknown agent(s) {', '.join(unknown)}; this workflow has "
                              f"{', '.join(known)}")

    async def _start(self, loaded: LoadedWorkflow) -> None:
        settings = loaded.settings
        history_cfg = loaded.history
        if self.history_path:
            history_cfg = history_cfg.model_copy(update={"data_type": "sqlite",
                                                         "path": self.history_path})
        history = create_history(history_cfg)
        await history.initialize()
        if self.executor is None:
            self.executor = make_executor(
                loaded, self.profile, endpoint=self.endpoint, allocation=self.allocation,
                engines=pool_start_plan(loaded, self.site_model, self.remote_models),
                globus_state=self.globus_state, most_workers=self.most_workers)
        try:
            await asyncio.wait_for(self.executor.initialize(), settings.executor.timeout)
        except asyncio.TimeoutError:
            await history.close()
            raise ExecutorError(f"the executor did not start within executor.timeout="
                                f"{settings.executor.timeout}s") from None
        except BaseException:
            await history.close()
            raise
        self.loaded, self.history = loaded, history
        self.agents = {a.name: EnhancedCollaborativeAgent(a) for a in loaded.agents}
        perf = settings.performance
        size = self.task_size or perf.batch_size
        if size > 1 and self.executor.supports_batching:
            self.batcher = RequestBatcher(self.executor, size, perf.timeout_seconds)

    def _load_site(self, loaded: LoadedWorkflow) -> None:
        """The site profile this workflow runs on (``local`` unless one is named)."""
        name = self.site or loaded.settings.parsl.site or "local"
        profile = load_profile(name)
        profile.refuse_placeholders("running on this site")
        self.profile = profile
        self.site_model = site_model(profile)

    async def shutdown(self) -> None:
        """Cancel what is still pending, stop Parsl and its workers, close the history."""
        if self.batcher is not None:
            self.batcher.cancel_all()
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self.executor is not None:
            await self.executor.shutdown()
        if self.history is not None:
            await self.history.close()
        await self.remote.close()
        await self.result_streams.stop()
        self.loaded = None

    async def __aenter__(self):
        await self.initialize()
        return self

    async def __aexit__(self, *exc):
        await self.shutdown()

    # ----------------------------------------------------------------- requests
    def _require(self) -> LoadedWorkflow:
        if self.loaded is None:
            raise HpcChatError("the workflow is not initialized; call 'await initialize()'")
        return self.loaded

    def choose_agents(self, text: str, agents: list[str] | None = None,
                      options: dict[str, Any] | None = None) -> list[Route]:
        """The routes for ``text``: the named agents, or the keyword router's choice; a reply
        with a format (in the request's ``options``, or a routed agent's) is one answer."""
        loaded = self._require()
        one_answer = output_format(**{k: (options or {}).get(k) for k in FORMAT_KEYS}) is not None
        if agents:
            self.check_agents(agents)
            if one_answer and len(agents) > 1:
                raise HpcChatError("a response_format, grammar or tools gives one answer: "
                                   "name one agent (or ask the routed 'auto')")
            return [Route(a, 1.0, ()) for a in agents]
        routes = route(text, loaded.agents, loaded.default_agent)
        cap = 1 if one_answer or any(self.agents[r.agent].config.config.response_format or
                                     self.agents[r.agent].config.config.grammar
                                     for r in routes) else loaded.settings.routing.max_agents
        return routes[:cap] if cap else routes

    def submit_request(self, text: str, *, conversation_id: str | None = None,
                       agents: list[str] | None = None, options: dict[str, Any] | None = None,
                       request_key: str | None = None, system_prompt: str | None = None,
                       history: list[dict[str, str]] | None = None,
                       stream: dict[str, Any] | None = None,
                       streams: dict[str, dict[str, Any]] | None = None) -> asyncio.Task:
        """Start one request; the task resolves to a result dict (never raises for a failed
        answer: ``ok`` is false and ``error`` says why). Call it from a coroutine; outside
        one, use ``loop.run_until_complete(workflow.process_request(...))``.

        ``history`` (earlier ``{"role", "content"}`` turns) and ``system_prompt`` give the
        whole conversation instead of a stored one, as an OpenAI request does: those messages
        are decoded as given, never shortened to fit the context. ``stream`` (from
        :meth:`hpc_chat.driver.token_hub.TokenHub.open`) has the worker send the answer's text as
        it grows, when one agent answers; ``streams`` (agent name -> such a stream) sends each
        of those agents' answers to its own."""
        self._require()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise HpcChatError("submit_request/submit_message must be called from a coroutine "
                               "(inside the event loop); outside one, run "
                               "process_request(...) in your loop") from None
        given = None if history is None and system_prompt is None else \
            {"history": list(history or []), "system_prompt": system_prompt}
        task = loop.create_task(self._run_request(text, conversation_id, agents, options,
                                                  request_key, given, stream, streams))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def submit_message(self, text: str, **kwargs) -> asyncio.Future:
        """An awaitable that resolves to the reply string (the original design's API)."""
        task = self.submit_request(text, **kwargs)

        async def reply() -> str:
            result = await task
            if not result["ok"]:
                raise HpcChatError(f"the request failed: {result['error']}")
            return result["response"]

        return asyncio.ensure_future(reply())

    async def process_request(self, text: str, **kwargs) -> dict[str, Any]:
        """Answer one request and return the full result dict (see :meth:`submit_request`)."""
        return await self.submit_request(text, **kwargs)

    async def process_user_input(self, text: str, conversation_id: str | None = None,
                                 **kwargs) -> str:  # the original design's name
        return await self.submit_message(text, conversation_id=conversation_id, **kwargs)

    async def _run_request(self, text, conversation_id, agent_names, options,
                           request_key=None, given=None, stream=None,
                           streams=None) -> dict[str, Any]:
        loaded = self._require()
        settings = loaded.settings
        start = time.time()
        options = {**settings.generation.model_dump(exclude_none=True), **(options or {})}
        if not isinstance(text, str) or not text.strip():
            return self._finish(start, text, None, error="the prompt is empty",
                                code=FailureCode.INVALID_REQUEST)
        try:  # a format that cannot be enforced is refused here, before any worker sees it
            mode = parse_mode(options.pop("mode", None) or settings.collaboration.mode)
            if mode is Mode.ROUTE:
                routes = self.choose_agents(text, agent_names, options)
            else:
                self.check_agents(agent_names)
                routes = first_round(loaded, text, agent_names, options, mode)
        except FormatError as exc:
            return self._finish(start, text, None, error=str(exc), code=failure_code(exc))
        except ConfigError as exc:  # an agent this workflow does not have
            return self._finish(start, text, None, error=str(exc),
                                code=FailureCode.MODEL_NOT_FOUND)
        except HpcChatError as exc:
            return self._finish(start, text, None, error=str(exc),
                                code=FailureCode.INVALID_REQUEST)
        if given is not None:
            history = given["history"]
            context = TaskContext(history=history, options=options, model=self.site_model,
                                  system_prompt=given["system_prompt"], exact=True)
        else:
            try:
                history = await self.history.recent(conversation_id) if conversation_id else []
            except HistoryError as exc:  # locked by another process, unreadable: this request
                return self._finish(start, text, None, error=f"{HISTORY_FAILED}: {exc}",
                                    code=FailureCode.HISTORY_UNAVAILABLE)
            context = TaskContext(history=history, options=options, model=self.site_model)

        def streamed(agent: str) -> TaskContext:
            if streams and agent in streams:
                return context.model_copy(update={"stream": StreamSpec(**streams[agent])})
            if stream is not None and len(routes) == 1:  # several would interleave in one
                return context.model_copy(update={"stream": StreamSpec(**stream)})
            return context

        async def in_round(agent: str, prompt: str, final: bool) -> dict[str, Any]:
            """A round's question to one agent: the request's format and stream are the
            reply's (the synthesis); each answer comes back on a result stream of its own."""
            sent = context if final else \
                context.model_copy(update={"options": without_format(options)})
            if final and stream is not None:  # the reply is what the client streams
                sent = context.model_copy(update={"stream": StreamSpec(**stream)})
            opened = await self.result_streams.open() if sent.stream is None else None
            if opened is not None:
                sent = sent.model_copy(update={"stream": StreamSpec(**opened[1])})
            try:
                return await ask_agent(self, agent, prompt, history, sent,
                                       request_key=request_key if prompt is text else None)
            finally:
                if opened is not None:
                    self.result_streams.close(opened[0])

        if mode is Mode.ROUTE:
            combined = aggregate_responses(list(await asyncio.gather(*(
                ask_agent(self, r.agent, text, history, streamed(r.agent),
                          request_key=request_key, score=r.score, matched=r.matched)
                for r in routes))))
        else:
            combined = await collaborate(settings.collaboration, mode, text,
                                         [r.agent for r in routes], loaded.aggregator, in_round)
        stopped = any(r.get("finish_reason") == "cancelled" for r in combined["responses"])
        if combined["ok"] and conversation_id and not stopped:
            try:
                await self.history.append_turns(conversation_id, [
                    {"role": "user", "content": stored_turn(text, options.get("tool_result"))},
                    {"role": "assistant", "content": combined["content"],
                     "agent": ",".join(combined["agents"]),
                     "prompt_tokens": combined["usage"]["prompt_tokens"],
                     "completion_tokens": combined["usage"]["completion_tokens"],
                     "rounds": combined.get("rounds")}])
            except HistoryError as exc:  # a full quota, a lock held too long: say so
                return self._finish(start, text, None, error=f"{HISTORY_FAILED}: the answer "
                                    f"was made but not stored: {exc}",
                                    code=FailureCode.HISTORY_UNAVAILABLE)
        error = "; ".join(f"{e['agent']}: {e['error']}" if e["agent"] else e["error"]
                          for e in combined["errors"]) or None
        return self._finish(start, text, combined, error=None if combined["ok"] else error,
                            routes=routes)

    def _finish(self, start: float, text: Any, combined: dict | None, *, error: str | None,
                routes: list[Route] | None = None,
                code: FailureCode | None = None) -> dict[str, Any]:
        result, record = request_result(
            start, text, combined, error=error, routes=routes, code=code,
            site=self.profile.name if self.profile is not None else None)
        self.stats.add(record)
        return result

    # ----------------------------------------------------------------- statistics
    async def get_performance_stats(self) -> dict[str, Any]:
        """Request counts, response times, throughput, tokens/s, cache hits and model loads."""
        return self.stats.summary()

    async def wait_for_workers(self, minimum: int = 1, timeout: float | None = None) -> int:
        """Wait until workers are connected (default limit: ``executor.timeout``)."""
        limit = timeout if timeout is not None else self._require().settings.executor.timeout
        return await self.executor.wait_for_workers(minimum, limit)

    async def get_parsl_stats(self) -> dict[str, Any]:
        """Workers, blocks and task counts from the executor."""
        if self.executor is None:
            return {"active_workers": 0, "pending_tasks": 0, "completed_tasks": 0}
        return await asyncio.to_thread(self.executor.stats)


async def create_parsl_chat_workflow(config_path: str | os.PathLike | None = None,
                                     **kwargs) -> ParslChatWorkflow:
    """Create and initialize a workflow (the original design's helper)."""
    workflow = ParslChatWorkflow(**kwargs)
    await workflow.initialize(config_path)
    return workflow
