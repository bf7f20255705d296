"""A real TensorBoard and a real headless Chromium for the browser check (tests/test_browser.py).

TensorBoard's pages are rendered in the browser (Angular, Polymer components in shadow DOM, plugins in
iframes), so `chromium --dump-dom` shows little more than the tab bar. Chromium is driven instead over the
DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages ended by a NUL byte on file descriptors
3 and 4, no websocket library needed); page_text() walks the rendered page, shadow roots and iframes
included. Both processes run in their own process group and are stopped by its id.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

INSTALL = "headless Chromium not found: install it with `sudo apt-get install -y chromium` (`make test` does it: scripts/get_chromium.sh)"

# The rendered page as text, one line per text node, shadow roots and same-origin iframes walked into;
# each <img> as "IMG natural WxH shown WxH fit F" (its pixels on the screen and CSS object-fit).
PAGE_TEXT = r"""
(() => {
  const out = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      const t = node.textContent.trim();
      if (t) out.push(t);
      return;
    }
    if (node.nodeType === Node.ELEMENT_NODE) {
      if (node.tagName === 'SCRIPT' || node.tagName === 'STYLE') return;
      if (node.tagName === 'IMG' && node.complete && node.naturalWidth) {
        const r = node.getBoundingClientRect();
        out.push(`IMG natural ${node.naturalWidth}x${node.naturalHeight} shown ${r.width}x${r.height} ` +
                 `fit ${getComputedStyle(node).objectFit}`);
      }
      if (node.shadowRoot) walk(node.shadowRoot);
      if (node.tagName === 'IFRAME') { try { walk(node.contentDocument); } catch (e) {} }
    }
    for (const child of node.childNodes || []) walk(child);
  };
  walk(document);
  return out.join('\n');
})()
"""


def shows(text, string):
    """Whether page text shows `string`, also when the page splits it over text nodes ("conv1_filters",
    "/tower_1" in two spans)."""
    return string in text or string in text.replace("\n", "")


def _stop(process):
    """Stop a process group this module started (its leader's pid is the group id)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class TensorBoard:
    """`tensorboard --logdir LOGDIR` on 127.0.0.1, on a port the OS picks; a context manager."""

    def __init__(self, logdir, log_path):
        self.logdir, self.log_path = str(logdir), str(log_path)

    def __enter__(self):
        self.log = open(self.log_path, "w")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", self.logdir, "--host", "127.0.0.1", "--port", "0"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            found = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+/)", open(self.log_path).read())
            if found:
                self.url = found.group(1)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        self.__exit__()
        pytest.fail(f"TensorBoard did not start; its log:\n{open(self.log_path).read()[-3000:]}")

    def get(self, path):
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as response:
            return json.loads(response.read())

    def wait_for(self, path, predicate, timeout=120):
        """get(path) until predicate(answer) holds; the last answer."""
        deadline = time.time() + timeout
        while True:
            answer = self.get(path)
            if predicate(answer) or time.time() > deadline:
                return answer
            time.sleep(1)

    def __exit__(self, *exc):
        _stop(self.process)
        self.log.close()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe; a context manager."""

    def __init__(self, profile_dir, window=(1280, 900)):
        self.profile_dir, self.window = str(profile_dir), window

    def __enter__(self):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            pytest.fail(INSTALL)
        to_browser, from_browser = os.pipe(), os.pipe()
        # the browser reads commands on fd 3 and writes answers on fd 4 (dup first: os.pipe's fds are
        # close-on-exec, and dup2 onto the same number would keep that flag)
        wiring = (os.dup(to_browser[0]), os.dup(from_browser[1]))

        def on_fds_3_and_4():
            os.dup2(wiring[0], 3)
            os.dup2(wiring[1], 4)

        self.stderr = open(self.profile_dir + ".log", "w")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             f"--user-data-dir={self.profile_dir}", f"--window-size={self.window[0]},{self.window[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr, preexec_fn=on_fds_3_and_4,
            close_fds=False, start_new_session=True)
        for fd in (*wiring, to_browser[0], from_browser[1]):
            os.close(fd)
        self.commands = os.fdopen(to_browser[1], "wb", buffering=0)
        self.answers = os.fdopen(from_browser[0], "rb", buffering=0)
        self.buffer, self.last_id = b"", 0
        return self

    def send(self, method, params=None, session=None):
        """One DevTools command; its result (events that arrive before it are dropped)."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.commands.write(json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = self.answers.read(1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe; see {self.profile_dir}.log")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def page_text(self, url, expected, ready=lambda text: True, timeout=120):
        """Open url in a new tab; its rendered text (PAGE_TEXT) once it shows every string of `expected`
        (shows()) and ready(text) holds, or as it is when `timeout` seconds have passed."""
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        deadline = time.time() + timeout
        try:
            while True:
                time.sleep(1)
                result = self.send("Runtime.evaluate", {"expression": PAGE_TEXT, "returnByValue": True}, session)
                text = result["result"].get("value", "")
                if (all(shows(text, s) for s in expected) and ready(text)) or time.time() > deadline:
                    return text
        finally:
            self.send("Target.closeTarget", {"targetId": target})

    def __exit__(self, *exc):
        for stream in (self.commands, self.answers):
            stream.close()
        _stop(self.process)
        self.stderr.close()
