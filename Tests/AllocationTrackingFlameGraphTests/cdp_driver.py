#!/usr/bin/env python3
"""Opens a flame-graph page in a real headless Chromium and drives it with real input events over the Chrome
DevTools Protocol; prints what it observed as one JSON object. The Swift tests decide what is right.

    cdp_driver.py PAGE.html ARTIFACT_DIR --search TERM --click NAME

Steps: load the page and wait for its first picture (screenshot `initial.png`); move the mouse over the widest
frame named NAME and read the tooltip (`hover.png`); click the search box and type TERM key by key (screenshot `search.png`);
click that frame (screenshot `zoom.png`); click "Back"; focus the metric menu and press the down arrow.
After each step it reads the drawn frames (name, geometry, class) from the document.

Needs `chromium` on PATH and the `websocket-client` package (PyPI). Exit status 0 with the JSON; 2 with a
one-line reason on stderr when Chromium cannot be started or driven.
"""
import argparse, base64, json, os, shutil, subprocess, sys, tempfile, time, urllib.request

import websocket  # websocket-client


class Browser:
    def __init__(self, width, height):
        self.profile = tempfile.mkdtemp(prefix="flamegraph-chromium-")
        arguments = ["chromium", "--headless", "--disable-gpu", "--remote-debugging-port=0",
                     "--user-data-dir=" + self.profile, "--window-size=%d,%d" % (width, height),
                     "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--hide-scrollbars", "about:blank"]
        if os.geteuid() == 0:
            arguments.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # Chromium's log into a file: a pipe nobody reads fills up (64 KiB of D-Bus and GPU complaints on a fresh
        # container) and blocks the browser.
        self.log_path = os.path.join(self.profile, "chromium.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=self.log)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if self.process.poll() is not None:
                raise RuntimeError("chromium exited with status %d: %s" % (
                    self.process.returncode, open(self.log_path, "rb").read().decode(errors="replace")[-400:]))
            if time.time() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            time.sleep(0.05)
        port = int(open(port_file).read().split("\n")[0])
        targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=30))
        page = next(t for t in targets if t["type"] == "page")
        # Chromium refuses DevTools connections with an Origin it was not told to allow.
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.errors = []  # uncaught exceptions and console errors of the page

    def send(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details.get("text"))
            elif message.get("method") == "Runtime.consoleAPICalled" and message["params"]["type"] == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in message["params"]["args"]))
            elif message.get("method") == "Log.entryAdded" and message["params"]["entry"]["level"] == "error":
                self.errors.append(message["params"]["entry"]["text"])
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError("%s: %s" % (method, message["error"]))
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError("script error: %s" % json.dumps(result["exceptionDetails"])[:400])
        return result["result"].get("value")

    def wait_for(self, expression, seconds=30):
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.02)
        raise RuntimeError("timed out waiting for " + expression)

    def mouse(self, kind, x, y, **extra):
        self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def click(self, x, y):
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, button="left", clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", clickCount=1)

    def key(self, key, code, virtual_key, text=None):
        down = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": virtual_key}
        if text is not None:
            down["text"] = text
        self.send("Input.dispatchKeyEvent", **down)
        self.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, windowsVirtualKeyCode=virtual_key)

    def type(self, text):
        for character in text:
            self.key(character, "", ord(character.upper()) if character.isalnum() else 0, text=character)

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as file:
            file.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.socket.close()
        finally:
            self.process.kill()
            self.process.wait()
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)


FRAMES = """Array.from(document.querySelectorAll('#flame g[data-node]')).map(g => {
  const r = g.querySelector('rect').getBoundingClientRect();
  return {name: g.getAttribute('aria-label'), node: Number(g.getAttribute('data-node')),
          x: r.x, y: r.y, width: r.width, height: r.height, cls: g.getAttribute('class') || '',
          fill: g.querySelector('rect').getAttribute('fill')};
})"""


def center(browser, selector):
    box = browser.evaluate("(() => { const r = document.querySelector(%s).getBoundingClientRect();"
                           " return [r.x + r.width / 2, r.y + r.height / 2]; })()" % json.dumps(selector))
    return box[0], box[1]


def widest(frames, name):
    named = [f for f in frames if f["name"] == name]
    if not named:
        raise RuntimeError("no frame named %r is drawn" % name)
    return max(named, key=lambda f: f["width"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("page")
    parser.add_argument("artifacts")
    parser.add_argument("--search", required=True)
    parser.add_argument("--click", required=True)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    arguments = parser.parse_args()
    os.makedirs(arguments.artifacts, exist_ok=True)

    browser = Browser(arguments.width, arguments.height)
    try:
        observed = {}
        browser.send("Page.enable")
        browser.send("Runtime.enable")
        browser.send("Log.enable")
        # The viewport exactly (--window-size is the window's, whose frame headless Chromium also subtracts).
        browser.send("Emulation.setDeviceMetricsOverride", width=arguments.width, height=arguments.height,
                     deviceScaleFactor=1, mobile=False)
        started = time.time()
        browser.send("Page.navigate", url="file://" + os.path.abspath(arguments.page))
        observed["renderedAtMs"] = float(browser.wait_for(
            "document.documentElement && document.documentElement.getAttribute('data-rendered')"))
        observed["navigationToRenderWallMs"] = round((time.time() - started) * 1000)
        observed["title"] = browser.evaluate("document.title")
        observed["heading"] = browser.evaluate("document.querySelector('h1').textContent")
        observed["notes"] = browser.evaluate("Array.from(document.querySelectorAll('.note')).map(p => p.textContent)")
        observed["summary"] = browser.evaluate("document.getElementById('summary').textContent")
        observed["chartWidth"] = browser.evaluate("document.getElementById('flame').getBoundingClientRect().width")
        observed["frames"] = browser.evaluate(FRAMES)
        observed["screenshots"] = [browser.screenshot(os.path.join(arguments.artifacts, "initial.png"))]

        target = widest(observed["frames"], arguments.click)
        x, y = target["x"] + target["width"] / 2, target["y"] + target["height"] / 2
        browser.mouse("mouseMoved", x, y)
        observed["tooltip"] = browser.evaluate(
            "(() => { const t = document.getElementById('tooltip'); return t.hidden ? null : t.textContent; })()")
        observed["screenshots"].append(browser.screenshot(os.path.join(arguments.artifacts, "hover.png")))

        sx, sy = center(browser, "#search")
        browser.click(sx, sy)
        observed["searchFocused"] = browser.evaluate("document.activeElement.id")
        browser.type(arguments.search)
        observed["searchValue"] = browser.evaluate("document.getElementById('search').value")
        observed["matched"] = browser.evaluate("document.getElementById('matched').textContent")
        observed["searchFrames"] = browser.evaluate(FRAMES)
        observed["screenshots"].append(browser.screenshot(os.path.join(arguments.artifacts, "search.png")))

        browser.click(x, y)
        observed["zoomFrames"] = browser.evaluate(FRAMES)
        observed["zoomSummary"] = browser.evaluate("document.getElementById('summary').textContent")
        observed["screenshots"].append(browser.screenshot(os.path.join(arguments.artifacts, "zoom.png")))

        bx, by = center(browser, "#back")
        browser.click(bx, by)
        observed["backFrames"] = browser.evaluate(FRAMES)

        mx, my = center(browser, "#metric")
        browser.click(mx, my)
        browser.key("Escape", "Escape", 27)  # close the menu's popup, keeping its focus
        browser.key("ArrowDown", "ArrowDown", 40)
        observed["metricValue"] = browser.evaluate("document.getElementById('metric').value")
        observed["metricSummary"] = browser.evaluate("document.getElementById('summary').textContent")
        observed["metricFrames"] = browser.evaluate(FRAMES)
        observed["errors"] = browser.errors
        print(json.dumps(observed))
    finally:
        browser.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # one line for the test to show
        print("cdp_driver: %s" % error, file=sys.stderr)
        sys.exit(2)
