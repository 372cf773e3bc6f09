"""The browser pages of `hpc-chat serve` (#33): the login link, the session cookie and what it
may do, and the chat page in a real headless Chromium: answers streamed as they grow, stopped,
routed to several agents (a panel each), conversations reopened and continued, and model text
holding HTML shown as text, never run.

The echo model makes an answer of 40 words at 0.25 s a word (10 s): long enough to see it grow
and to stop it on any machine, since no answer can come faster than its pace."""

from __future__ import annotations

import http.client
import json
import re
import stat
import urllib.error
import urllib.request

import pytest

from tests.helpers.browser import open_browser, wait_for
from tests.helpers.server import start_server, stop

SLOW = "echo?tokens=40&token_s=0.25"


@pytest.fixture
def server(tmp_path, fixtures):
    started = start_server(tmp_path, fixtures / "workflows" / "held.yml", model=SLOW)
    yield started
    stop(started)


def call(server, method: str, path: str, *, headers: dict | None = None,
         body: dict | None = None) -> tuple[int, dict, str]:
    """One HTTP request with exactly these headers (no key unless given)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url.removesuffix("/v1") + path, data=data,
                                     method=method, headers={**(headers or {})})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def link_token(server) -> str:
    return (server.home / "server" / "login-url").read_text().strip().rsplit("token=", 1)[1]


def test_a_login_link_opens_one_session_and_a_cookie_alone_never_changes_anything(server):
    login_file = server.home / "server" / "login-url"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    first = link_token(server)
    assert login_file.read_text().startswith(server.url.removesuffix("/v1") + "/login?token=")

    status, headers, page = call(server, "GET", "/")
    assert status == 200 and "<title>hpc_chat</title>" in page
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert call(server, "GET", "/v1/models")[0] == 401  # the pages hold no data; the API does

    assert call(server, "GET", "/static/chat.js")[0] == 200
    assert call(server, "GET", "/static/api-key")[0] == 401  # only the package's assets
    assert call(server, "GET", "/static/api-key",  # are open, and only they are served
                headers={"Authorization": f"Bearer {server.key}"})[0] == 404
    page_header = {"X-HPC-Chat": "1"}
    # A login is open to all: a body without a length (chunked) is read up to 4 KiB only,
    # and a token of any other shape (here a lone surrogate) is refused like a wrong one.
    assert chunked_login(server, b"{" + b" " * 100_000 + b"}") == 413
    status, _, body = call(server, "POST", "/login", headers=page_header,
                           body={"token": "\ud800" * 20})
    assert status == 403, body
    assert call(server, "POST", "/login", body={"token": first})[0] == 403  # not the page
    status, _, body = call(server, "POST", "/login", headers=page_header,
                           body={"token": "x" * 32})
    assert status == 403 and "login-url" in json.loads(body)["error"]["message"]
    status, headers, _ = call(server, "POST", "/login", headers=page_header,
                              body={"token": first})
    assert status == 200
    cookie = headers["set-cookie"]
    # The server's own cookie name (browsers share cookies across a host's ports), for this
    # server's path, never to scripts, never on a request another site starts; Secure only
    # where the browser came over https (a proxy that ends TLS says so).
    assert re.match(r"hpc_chat_session_[0-9a-f]{8}=", cookie), cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/;" in cookie
    assert "Secure" not in cookie
    session = {"Cookie": cookie.split(";", 1)[0]}

    # The link is good once: a new one replaces it in the file, and the old one is refused.
    assert link_token(server) != first
    assert call(server, "POST", "/login", headers=page_header, body={"token": first})[0] == 403

    assert call(server, "GET", "/v1/models", headers=session)[0] == 200
    ask = {"model": "balanced_agent", "max_tokens": 2,
           "messages": [{"role": "user", "content": "hello there"}]}
    # The cookie alone (a form another site posts) is refused; the page's header is needed.
    status, _, body = call(server, "POST", "/v1/chat/completions", headers=session, body=ask)
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
    status, _, body = call(server, "POST", "/v1/chat/completions",
                           headers={**session, **page_header}, body=ask)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"]
    # The API key still works alone, as before.
    assert call(server, "GET", "/v1/models",
                headers={"Authorization": f"Bearer {server.key}"})[0] == 200

    assert call(server, "POST", "/logout", headers={**session, **page_header})[0] == 200
    assert call(server, "GET", "/v1/models", headers=session)[0] == 401

    status, headers, _ = call(server, "POST", "/login", body={"token": link_token(server)},
                              headers={**page_header, "X-Forwarded-Proto": "https"})
    assert status == 200 and headers["set-cookie"].endswith("; Secure")


def chunked_login(server, body: bytes) -> int:
    """POST /login with a chunked body (no Content-Length); the status."""
    host, port = server.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("POST", "/login")
        for name, value in (("X-HPC-Chat", "1"), ("Content-Type", "application/json"),
                            ("Transfer-Encoding", "chunked")):
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for start in range(0, len(body), 8192):
                piece = body[start:start + 8192]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except OSError:  # the server answered and closed before the whole body: fine
            pass
        return conn.getresponse().status
    finally:
        conn.close()


def panel_texts(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [p.find_element(By.CSS_SELECTOR, ".text").text
            for p in browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .panel")]


def agent_names(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [a.text for a in browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .agent")]


def send(browser, question: str, model: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    box = browser.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question)
    browser.find_element(By.ID, "send").click()


def answered(browser) -> bool:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, "send").is_enabled() and \
        not browser.find_element(By.ID, "stop").is_enabled()


def test_the_chat_page_streams_stops_reopens_and_shows_html_as_text(server, tmp_path):
    from selenium.webdriver.common.by import By

    browser = open_browser(tmp_path)
    root = server.url.removesuffix("/v1") + "/"
    try:
        browser.get(root)  # not logged in: the page says how
        wait_for(lambda: browser.find_element(By.ID, "login-needed").is_displayed(), 30,
                 "the login notice")
        browser.get((server.home / "server" / "login-url").read_text().strip())
        wait_for(lambda: browser.current_url == root, 30, "the chat page after the login")
        assert "token=" not in browser.current_url
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#model option")) == 4,
                 30, "the models")

        # Streamed: the answer is seen growing before it ends.
        send(browser, "stream this please", "balanced_agent")
        seen = set()

        def growing():
            texts = panel_texts(browser)
            if texts and texts[-1] and browser.find_element(By.ID, "stop").is_enabled():
                seen.add(texts[-1])
            return answered(browser) and panel_texts(browser)
        wait_for(growing, 120, "the streamed answer to end")
        final = panel_texts(browser)[-1]
        assert len(final.split()) == 40 and final.startswith("stream this please")
        assert any(final.startswith(part) and len(part) < len(final) for part in seen), seen
        agent = browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .agent")[-1].text
        assert agent == "balanced_agent"
        copy = browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .panel button.copy")[-1]
        copy.click()
        wait_for(lambda: copy.text == "copied", 10, "the copy button to say it copied")

        # Stopped: the answer ends where it was, and the server stops decoding it.
        send(browser, "stop this one", "balanced_agent")
        wait_for(lambda: len(panel_texts(browser)) == 2 and panel_texts(browser)[-1], 60,
                 "the second answer to start")
        browser.find_element(By.ID, "stop").click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".note")[-1].text ==
                 "stopped", 30, "the answer to say it was stopped")
        assert len(panel_texts(browser)[-1].split()) < 40
        key = {"Authorization": f"Bearer {server.key}"}
        wait_for(lambda: json.loads(call(server, "GET", "/v1/status", headers=key)[2])[
            "requests"]["running"] == 0, 30, "the server to end the stopped request")

        # Model text holding HTML is text: nothing runs, no element is made from it.
        hostile = ('<script>window.pwnedA=1</script> <img src=x onerror="window.pwnedB=1"> '
                   '[click](javascript:window.pwnedC=1)')
        send(browser, hostile, "balanced_agent")
        wait_for(lambda: answered(browser) and len(panel_texts(browser)) == 3, 120,
                 "the third answer")
        assert '<img src=x onerror="window.pwnedB=1">' in panel_texts(browser)[-1]
        assert browser.execute_script(
            "return [window.pwnedA, window.pwnedB, window.pwnedC]") == [None, None, None]
        messages = browser.find_element(By.ID, "messages")
        assert not messages.find_elements(By.CSS_SELECTOR, "img, script, a")

        # Several agents (model auto, routed by keywords): a panel each, each growing as its
        # agent's answer is generated, then the final texts.
        send(browser, "imagine a story and analyze the data", "auto")
        growing = wait_for(lambda: browser.find_element(By.ID, "stop").is_enabled() and
                           len(panel_texts(browser)) == 5 and all(panel_texts(browser)[-2:])
                           and (panel_texts(browser)[-2:], agent_names(browser)[-2:]), 60,
                           "both agents' answers growing")
        wait_for(lambda: answered(browser) and len(panel_texts(browser)) == 5, 120,
                 "a panel per routed agent")
        assert sorted(agent_names(browser)[-2:]) == ["analytical_agent", "creative_agent"]
        assert sorted(growing[1]) == ["analytical_agent", "creative_agent"]
        finals = dict(zip(agent_names(browser)[-2:], panel_texts(browser)[-2:]))
        for text, agent in zip(*growing):
            assert finals[agent].startswith(text) and len(finals[agent].split()) == 40
        assert any(len(text) < len(finals[agent]) for text, agent in zip(*growing)), growing

        # Reopened from the list and continued: the stored turns come back, and a new
        # message goes on from them.
        browser.find_element(By.ID, "new-conversation").click()
        assert not panel_texts(browser)
        link = wait_for(lambda: [a for a in browser.find_elements(By.CSS_SELECTOR,
                                                                 "#conversations a")
                                 if a.text == "stream this please"], 30,
                        "the conversation in the list")[0]
        name = link.get_attribute("data-id")
        link.click()
        wait_for(lambda: panel_texts(browser) and panel_texts(browser)[0] == final, 30,
                 "the reopened conversation")
        assert len(panel_texts(browser)) == 4  # 3 answered turns, the last one two agents
        send(browser, "and one more", "balanced_agent")
        wait_for(lambda: answered(browser) and len(panel_texts(browser)) == 5, 120,
                 "the continued conversation's answer")
        status, _, body = call(server, "GET", f"/v1/conversations/{name}",
                               headers={"Authorization": f"Bearer {server.key}"})
        stored = json.loads(body)["messages"]
        assert status == 200 and [m["role"] for m in stored] == ["user", "assistant"] * 4
        assert stored[-2]["content"] == "and one more"
        assert "stop this one" not in [m["content"] for m in stored]  # a stopped answer
        assert browser.execute_script(
            "return [window.pwnedA, window.pwnedB, window.pwnedC]") == [None, None, None]
    finally:
        browser.quit()


def test_markdown_is_rendered_with_elements_made_from_text(server, tmp_path):
    """The renderer itself, in the browser: code blocks, lists, emphasis, http(s) links kept,
    any other link and every tag left as text."""
    browser = open_browser(tmp_path)
    try:
        browser.get(server.url.removesuffix("/v1") + "/")
        wait_for(lambda: browser.execute_script("return typeof Render"), 30, "the page")
        html = browser.execute_script("""
            const node = Render.markdown(arguments[0]);
            return [node.outerHTML, node.querySelectorAll('a').length,
                    node.querySelectorAll('pre code').length, node.querySelectorAll('li').length,
                    node.querySelectorAll('strong').length, node.querySelector('a').href,
                    node.querySelectorAll('img,script').length];""",
            "# Title\n```js\nlet a = '<b>x</b>';\n```\n- one\n- **two**\n"
            "[ok](https://example.org/a) [bad](javascript:alert(1)) <img src=x onerror=f()>")
        outer, links, blocks, items, strong, href, tags = html
        assert (links, blocks, items, strong, tags) == (1, 1, 2, 1, 0), outer
        assert href == "https://example.org/a"
        assert "let a = '&lt;b&gt;x&lt;/b&gt;';" in outer
        assert "[bad](javascript:alert(1))" in outer and "&lt;img src=x onerror=f()&gt;" in outer
    finally:
        browser.quit()
