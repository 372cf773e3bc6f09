"""Request lines as OpenAI batch files and clients send them."""

from __future__ import annotations


def line(body=None, **top):
    base = {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "balanced_agent",
                     "messages": [{"role": "user", "content": "hi"}], **(body or {})}}
    return {**base, **top}
