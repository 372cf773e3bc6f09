"""A Batch API batch on pilot jobs of its own: ``metadata`` ``hpc_chat_blocks`` (and
``hpc_chat_site``).

A batch is answered on the server's workers, beside interactive traffic. One created with
``metadata={"hpc_chat_blocks": "4"}`` gets workers of its own instead: a workflow like the
server's (the same workflow file, agents and ``--model``) on the server's site, or on the site
``hpc_chat_site`` names, with exactly that many blocks (pilot jobs), at most the site profile's
``provider.max_blocks`` (the admin's bound). They are submitted when the batch starts answering
and cancelled when it ends (completed, cancelled or expired) or the server stops; a server
started again submits them anew for the batch's unfinished lines. The batch's requests then
neither wait for interactive ones nor slow them down.

Metadata is OpenAI's own field (string pairs), so any client sets it, and it stays visible in
the Batch object. The request is checked when the batch is created: an unknown site, a site
with placeholder values, a number of blocks out of bounds, or a server on a Globus Compute
endpoint is a 400 naming the key.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_chat.errors import ConfigError
from hpc_chat.server.errors import ApiError

log = logging.getLogger(__name__)

SITE_KEY, BLOCKS_KEY = "hpc_chat_site", "hpc_chat_blocks"
# A profile's name (sites.schema.SiteProfile.name): an API client names a site the server's
# registry holds; a path would let it run a profile (and its worker_init) from any file.
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Pilots:
    """The pilot jobs a batch asked for: ``site`` is the profile name it gave, None for the
    server's own site (whatever path or name the server was started with)."""

    site: str | None
    name: str  # the site's profile name, shown in the Batch object
    blocks: int


def requested(metadata: dict[str, Any] | None, server_wf) -> Pilots | None:
    """The pilot jobs ``metadata`` asks for, checked against the server's workflow
    (:class:`ApiError` naming the key); None when it asks for none. The messages name no
    path of the server's: an API client learns whether it may, not where profiles live."""
    if not metadata or not ({SITE_KEY, BLOCKS_KEY} & set(metadata)):
        return None
    key = f"metadata.{BLOCKS_KEY if BLOCKS_KEY in metadata else SITE_KEY}"
    if server_wf.profile is None:
        raise _refused(key, "this server's workers are a Globus Compute endpoint's: a batch "
                            "cannot ask for pilot jobs of its own here")
    site = metadata.get(SITE_KEY) or None
    if server_wf.allocation and site is None:
        raise _refused(key, f"this server runs inside its job's allocation; name a site in "
                            f"metadata.{SITE_KEY} for pilot jobs of the batch's own")
    text = metadata.get(BLOCKS_KEY, "1")
    if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) < 1:
        raise _refused(f"metadata.{BLOCKS_KEY}", f"{BLOCKS_KEY} must be a whole number of "
                                                 f"pilot jobs (\"1\", \"4\"), not {text!r}")
    blocks = int(text)
    profile = server_wf.profile if site is None else _named_profile(site)
    if profile.placeholders():
        raise _refused(f"metadata.{SITE_KEY}", f"site {profile.name!r} still has placeholder "
                                               f"values: its admin must fill them in first")
    if blocks > profile.provider.max_blocks:
        raise _refused(f"metadata.{BLOCKS_KEY}", f"{blocks} blocks asked; site "
                                                 f"{profile.name!r} allows 1 to "
                                                 f"{profile.provider.max_blocks} a batch "
                                                 f"(its provider.max_blocks)")
    return Pilots(site, profile.name, blocks)


def _named_profile(site: str):
    """A profile of the server's registry by name: never a file path, nor a name ending in
    ``.yaml``, which the registry would take for one (an API client must not make the server
    load a profile, and run its ``worker_init``, from any file)."""
    from hpc_chat.sites.registry import SUFFIXES, all_profiles, load_profile

    found = all_profiles().get(site) if SITE_NAME.fullmatch(site) and \
        not site.endswith(SUFFIXES) else None
    if found is None:
        raise _refused(f"metadata.{SITE_KEY}", f"no site profile named {site!r} on this "
                                               f"server ('hpc-chat sites list' shows them)")
    try:
        return load_profile(found)
    except ConfigError:
        raise _refused(f"metadata.{SITE_KEY}", f"site {site!r} does not load on this server "
                                               f"(its admin sees why with 'hpc-chat sites "
                                               f"validate {site}')") from None


def _refused(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", code="invalid_request", param=param)


async def start(pilots: Pilots, server_wf, work: Path):
    """The batch's own workflow, its pilot jobs submitted (they start whenever the scheduler
    runs them: the batch's requests wait in Parsl's queue until then). Its history, unused by
    batch lines, is a file of the batch's own."""
    from hpc_chat.driver.workflow import ParslChatWorkflow

    wf = ParslChatWorkflow(site=server_wf.site if pilots.site is None else
                           str(_named_profile(pilots.site).source),
                           model=server_wf.model, model_label=server_wf.model_label,
                           history_path=str(work / "history.sqlite"))
    wf.check(server_wf.loaded.path)
    wf.profile = wf.profile.with_blocks(pilots.blocks)  # what the executor is built from
    try:
        await wf.initialize(server_wf.loaded.path)
    except BaseException:
        await wf.shutdown()
        raise
    log.info("batch pilot jobs: %d block(s) on site %s", pilots.blocks, pilots.name)
    return wf


def job_ids(wf) -> list[str]:
    """The scheduler's ids of a workflow's pilot jobs (read from Parsl, not asked of the
    interchange: the Batch object is shown from the event loop)."""
    htex = wf.executor.htex() if wf.executor is not None else None
    return [] if htex is None else [str(j) for j in list(htex.blocks_to_job_id.values())]
