"""The function sent to Globus Compute endpoints.

Its body imports what it needs, so it works whichever code serialization the endpoint allows
(by reference or by source); its arguments and result are plain JSON data, so it also works on
endpoints that accept only JSON argument serialization. The worker's model cache applies exactly
as in a Parsl worker: an endpoint worker loads each model once.
"""


def remote_chat(agent_config, message, context, time_limit=None, retry_attempts=0,
                walltime=None):
    """``process_chat_message`` on an endpoint worker, under the task's ``time_limit``
    (``retry_attempts`` is accepted for the same call shape as Parsl tasks; the endpoint's own
    retries apply). The endpoint runs its own installed copy of this function: ``walltime`` is
    what earlier clients called the limit, still taken from them."""
    from hpc_chat.worker.chat import process_chat_message
    from hpc_chat.worker.time_limit import limited

    with limited(time_limit if time_limit is not None else walltime):
        return process_chat_message(agent_config, message, context)
