"""The browser's login (server/web_login.py) and the engine board (server/board.py)."""

from __future__ import annotations

import os
import stat

import pytest

from hpc_chat.errors import ConfigError
from hpc_chat.server import board as board_module
from hpc_chat.server.board import EngineBoard
from hpc_chat.server.web_login import MAX_SESSIONS, WebLogin, cookie_may, normalize_root


def test_a_token_opens_one_session_and_the_link_file_follows(tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path / "home"))
    login = WebLogin("/rnode/node7/8080/", token="t" * 20)
    path = login.write_link("https://ondemand.example")
    assert path.read_text() == f"https://ondemand.example/rnode/node7/8080/login?token={'t' * 20}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert login.redeem("x" * 20) is None and login.redeem(None) is None
    session = login.redeem("t" * 20)
    assert session and login.valid(session) and not login.valid(session + "x")
    assert login.redeem("t" * 20) is None  # once
    assert "t" * 20 not in path.read_text()  # the file has the next link
    cookie = login.cookie(session, secure=True)
    assert "Path=/rnode/node7/8080/;" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and cookie.endswith("; Secure")
    login.end(session)
    assert not login.valid(session)


def test_each_server_has_its_own_cookie_and_odd_tokens_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HPC_CHAT_LOGIN_TOKEN", "k" * 32)
    first, second = WebLogin(), WebLogin()
    assert first.cookie_name != second.cookie_name  # two tunnels to one host: two sessions
    assert "HPC_CHAT_LOGIN_TOKEN" not in os.environ  # the workers it starts never see it
    assert first.chosen and not second.chosen
    assert first.redeem("\ud800" * 32) is None and first.redeem("k" * 31 + "!") is None
    assert first.redeem("k" * 32) is not None


def test_sessions_are_bounded_oldest_forgotten(tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path / "home"))
    login = WebLogin()
    sessions = []
    for _ in range(MAX_SESSIONS + 3):
        token = login.link().rsplit("=", 1)[1]
        sessions.append(login.redeem(token))
    assert not any(login.valid(s) for s in sessions[:3])
    assert all(login.valid(s) for s in sessions[3:])


@pytest.mark.parametrize("token", ["short", "a" * 129, "has space in it xxxxxxx", "ü" * 20])
def test_a_login_token_from_the_environment_is_checked(token, monkeypatch):
    monkeypatch.setenv("HPC_CHAT_LOGIN_TOKEN", token)
    with pytest.raises(ConfigError, match="HPC_CHAT_LOGIN_TOKEN"):
        WebLogin()


@pytest.mark.parametrize("root,expected", [("", ""), ("/", ""),
                                           ("/rnode/n1/8080", "/rnode/n1/8080"),
                                           ("/rnode/n1/8080/", "/rnode/n1/8080")])
def test_root_paths(root, expected):
    assert normalize_root(root) == expected


@pytest.mark.parametrize("root", ["rnode/x", "/a b", "/a/../b;", "/x?y", '/"x', "/a/../b",
                                  "/./x"])
def test_bad_root_paths_are_refused(root):
    with pytest.raises(ConfigError, match="--root-path"):
        normalize_root(root)


def test_a_cookie_may_read_but_changes_need_the_pages_header():
    assert cookie_may("GET", {}) and cookie_may("HEAD", {})
    assert not cookie_may("POST", {}) and not cookie_may("DELETE", {"x-hpc-chat": "0"})
    assert cookie_may("POST", {"x-hpc-chat": "1"})


def answer(host, pid, running, cached=False, tokens=5):
    return {"agent": "a", "model": "m", "cached": cached, "usage": {"completion_tokens": tokens},
            "worker": {"host": host, "pid": 1, "block": "0"},
            "engine": {"host": host, "pid": pid, "slots": 8},
            "engine_load": {"running": running, "waiting": 0}}


def test_the_board_keeps_each_engine_as_of_its_last_answer(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(board_module.time, "time", lambda: now[0])
    board = EngineBoard()
    board.saw({"completion_tokens": 10, "responses": [answer("n1", 5, 3), answer("n2", 9, 1)]})
    now[0] = 1012.0
    board.saw({"completion_tokens": 5, "responses": [answer("n1", 5, 6),
                                                     answer("n2", 9, 7, cached=True)]})
    engines = board.engines()
    assert [(e["host"], e["running"], e["answers"], e["tokens"]) for e in engines] == [
        ("n1", 6, 2, 10), ("n2", 1, 1, 5)]
    assert board.tokens_history() == [[1000.0, 1.0], [1010.0, 0.5]]
    now[0] = 1012.0 + board_module.FORGET_S + 1
    assert board.engines() == []
