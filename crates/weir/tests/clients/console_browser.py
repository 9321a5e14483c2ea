"""Drives the Weir console in Debian's Chromium (headless) through chromedriver and Selenium,
as an operator would: first-run setup with the token file, create an upstream and a route and
see the proxy serve them, a validation error, a hostile name shown as text, a concurrent edit
shown as a conflict, the overview counting requests, a viewer without write controls, logout,
and the bytes a login plus the overview transfer. Saves a screenshot of each page.

Usage: console_browser.py CONSOLE_URL PROXY_URL TOKEN_FILE UPSTREAM_ADDR ARTIFACT_DIR HOOK_PORT AXE_JS
HOOK_PORT is where the node's subscription `hooks` (topic `orders`) delivers: this script
answers there, 500 until it replays the dead letter, then 200. AXE_JS is axe-core's
axe.min.js, run on every page (no serious or critical violation may remain).
Prints one line per step; exits non-zero at the first failed check.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, PROXY, TOKEN_FILE, UPSTREAM, ARTIFACTS, HOOK_PORT, AXE_JS = sys.argv[1:8]
AXE = open(AXE_JS).read()
PASSWORD = "console-admin-password-1"
XSS = "<img src=x onerror=alert(1)>"
os.makedirs(ARTIFACTS, exist_ok=True)


def step(msg):
    print(f"console: {msg}", flush=True)


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", "--no-first-run", "--disable-extensions"]:
        opts.add_argument(a)
    # The system driver: no download (Selenium Manager stays out of it).
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


class Hook(BaseHTTPRequestHandler):
    """The subscription's endpoint: fails until `accept` is set, then records deliveries."""
    accept = False
    delivered = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if Hook.accept:
            Hook.delivered.append(self.headers.get("webhook-id"))
        self.send_response(200 if Hook.accept else 500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


hook = ThreadingHTTPServer(("127.0.0.1", int(HOOK_PORT)), Hook)
threading.Thread(target=hook.serve_forever, daemon=True).start()


def axe_check(page):
    """axe-core on the page as it is: no serious or critical violation."""
    d.execute_script(AXE)
    result = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, { resultTypes: ['violations'] }).then(r => done(r.violations.map(v =>
          ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help })))).catch(e => done(String(e)));""")
    assert isinstance(result, list), result
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page}: {bad}"
    return len(result)


d = browser()
wait = WebDriverWait(d, 15)


def find(css):
    return wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def visible(css):
    return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def heading(text):
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1"), text))


def shot(name):
    d.save_screenshot(os.path.join(ARTIFACTS, f"{name}.png"))


def go(hash_):
    # A change of hash alone re-renders; the same hash again needs a reload.
    url = f"{BASE}/#/{hash_}"
    if d.current_url == url:
        d.refresh()
    else:
        d.get(url)


def set_editor(value):
    ed = visible("#editor")
    d.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
        ed, json.dumps(value, indent=2))


FORM_AUDIT = """
const done = arguments[arguments.length - 1];
const kind = arguments[0];
fetch('/api/v1/openapi.json').then(r => r.json()).then(doc => {
  const deref = (s) => { while (s && s.$ref) s = doc.components.schemas[s.$ref.split('/').pop()]; return s || {}; };
  const props = (s) => { s = deref(s); if (s.allOf) return s.allOf.flatMap(props); return Object.keys(s.properties || {}); };
  const body = doc.paths['/api/v1/' + kind].post.requestBody.content['application/json'].schema;
  const form = document.getElementById('form');
  const problems = [];
  const expected = props(body);
  for (const p of expected)
    if (!form.querySelector(`[data-field="${p}"]`)) problems.push(`${kind}: no control for ${p}`);
  let controls = 0;
  for (const el of form.querySelectorAll('[data-path]')) {
    controls++;
    const path = el.getAttribute('data-path');
    if (el.tagName === 'FIELDSET') {
      const legend = el.querySelector(':scope > legend');
      const help = el.querySelector(':scope > p.help');
      if (!legend || !legend.textContent.trim()) problems.push(`${kind}.${path}: no legend`);
      if (!help || !help.textContent.trim()) problems.push(`${kind}.${path}: no documentation`);
    } else {
      const label = form.querySelector(`label[for="${el.id}"]`);
      const help = document.getElementById(el.getAttribute('aria-describedby') || '');
      if (!label || !label.textContent.trim()) problems.push(`${kind}.${path}: no label`);
      if (!help || !help.textContent.trim()) problems.push(`${kind}.${path}: no documentation`);
    }
  }
  done({ problems, expected: expected.length, controls });
}).catch(e => done({ problems: [String(e)], expected: 0, controls: 0 }));
"""


def no_alert():
    try:
        d.switch_to.alert
    except NoAlertPresentException:
        return
    raise AssertionError("a script ran: an alert is open")


def api(method, path, token, body=None, headers=None):
    req = urllib.request.Request(f"{BASE}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def login(user, password):
    d.get(f"{BASE}/")
    heading("Log in")
    visible("input[name=username]").send_keys(user)
    find("input[name=password]").send_keys(password)
    find("form button[type=submit]").click()
    heading("Overview")


def logout():
    visible("header.top button").click()
    heading("Log in")


def create(kind, value):
    go(kind)
    visible("#new").click()
    heading("New")
    visible("#mode-json").click()
    set_editor(value)
    find("#review").click()
    visible("#diff")
    find("#apply").click()


try:
    # 1. First run: the setup token from the file only Weir's user can read.
    d.get(f"{BASE}/")
    heading("Create the first admin")
    assert os.path.basename(TOKEN_FILE) in find("main pre").text
    shot("setup")
    axe_check("setup")
    token = open(TOKEN_FILE).read().strip()
    visible("input[name=token]").send_keys(token)
    find("input[name=password]").send_keys(PASSWORD)
    find("form button[type=submit]").click()
    heading("Overview")
    step("setup: the first admin was created with the token file and is logged in")
    status, body, _ = api("POST", "/api/v1/login", "-", {"username": "admin", "password": PASSWORD})
    assert status == 200, body
    bearer = body["token"]

    # 2. An upstream and a route, then the proxy serves them.
    create("upstreams", {"name": "shop-up", "targets": [{"address": UPSTREAM}]})
    wait.until(EC.text_to_be_present_in_element((By.ID, "object-name"), "shop-up"))
    create("routes", {"name": "shop", "match": {"paths": ["/shop/*"]}, "upstream": "shop-up"})
    wait.until(EC.text_to_be_present_in_element((By.ID, "object-name"), "shop"))
    deadline = time.time() + 10
    while True:
        try:
            with urllib.request.urlopen(f"{PROXY}/shop/x", timeout=5) as r:
                assert r.status == 200
                break
        except (urllib.error.URLError, AssertionError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    step("routes: an upstream and a route made in the console serve traffic")

    # 2b. The same through the form made from the API's schema.
    go("upstreams")
    visible("#new").click()
    heading("New")
    visible("#form")
    find('#form input[data-path="name"]').send_keys("form-up")
    next(b for b in d.find_elements(By.CSS_SELECTOR, '#form [data-field="targets"] button') if "Add" in b.text).click()
    visible('#form input[data-path="targets[0].address"]').send_keys(UPSTREAM)
    find("#review").click()
    visible("#diff")
    find("#apply").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "object-name"), "form-up"))
    visible("#targets")
    shot("upstream-health")
    step("forms: an upstream made through the generated form is created; its targets show live health")

    # 2c. A validation error is shown at its field in the form.
    go("routes")
    visible("#new").click()
    heading("New")
    visible("#form")
    find('#form input[data-path="name"]').send_keys("bad-form")
    find('#form [data-path="upstream"]').send_keys("no-such-upstream")
    find("#review").click()
    find("#apply").click()
    at_field = visible('#form [data-field="upstream"] .field-error')
    assert "no-such-upstream" in at_field.text, at_field.text
    assert find('#form [data-path="upstream"]').get_attribute("aria-invalid") == "true"
    shot("validation-at-field")
    step(f"forms: the error is shown at its field: {at_field.text!r}")

    # 2c'. A policy chosen in the form (a variant with its own fields) guards the route.
    go("routes")
    visible("#new").click()
    heading("New")
    visible("#form")
    find('#form input[data-path="name"]').send_keys("guarded")
    find('#form textarea[data-path="match.paths"]').send_keys("/guarded/*")
    find('#form [data-path="upstream"]').send_keys("shop-up")
    next(b for b in d.find_elements(By.CSS_SELECTOR, '#form [data-field="policies"] button') if "Add" in b.text).click()
    Select(visible('#form select[data-path="policies[0]"]')).select_by_visible_text("key_auth")
    visible('#form [data-field="policies[0].key_auth"]')
    find("#review").click()
    assert '"key_auth"' in visible("#diff").text
    find("#apply").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "object-name"), "guarded"))
    deadline = time.time() + 10
    while True:
        try:
            urllib.request.urlopen(f"{PROXY}/guarded/x", timeout=5)
            code = 200
        except urllib.error.HTTPError as e:
            code = e.code
        if code == 401:
            break
        assert time.time() < deadline, f"the key_auth policy made in the form does not guard the route: {code}"
        time.sleep(0.2)
    step("forms: a key_auth policy picked in the form guards its route (401 without a key)")

    # 2d. Every field of every form has a control, a label and its documentation.
    total = 0
    for kind in ["upstreams", "routes", "consumers", "certificates", "topics", "subscriptions", "ai-providers", "ai-models"]:
        go(f"{kind}/+new")
        heading("New")
        visible("#form")
        audit = d.execute_async_script(FORM_AUDIT, kind)
        assert not audit["problems"], "\n".join(audit["problems"])
        assert audit["expected"] > 0 and audit["controls"] >= audit["expected"], audit
        total += audit["controls"]
    step(f"forms: {total} controls over 8 kinds, each labelled and documented")

    # 3. A validation error is shown with its path.
    create("routes", {"name": "broken", "match": {"paths": ["/broken"]}, "upstream": "no-such-upstream"})
    err = visible("#result .error")
    assert "no-such-upstream" in err.text and "routes" in err.text, err.text
    shot("validation-error")
    step(f"validation: shown as {err.text.splitlines()[-1]!r}")

    # 4. A hostile name is text, never markup.
    create("routes", {"name": XSS, "match": {"paths": ["/x"]}, "upstream": "shop-up"})
    err = visible("#result .error")
    assert XSS in err.text, err.text
    assert not d.find_elements(By.CSS_SELECTOR, "main img"), "the name became an element"
    no_alert()
    step("xss: the hostile name is rendered as text")

    # 5. A concurrent edit is a conflict, never an overwrite.
    go("routes/shop")
    heading("Routes")
    visible("#mode-json").click()
    visible("#editor")
    status, _, _ = api("PUT", "/api/v1/routes/shop", bearer,
                       {"name": "shop", "match": {"paths": ["/shop/*"]}, "upstream": "shop-up", "priority": 3})
    assert status == 200, status
    set_editor({"name": "shop", "match": {"paths": ["/shop/*"]}, "upstream": "shop-up", "priority": 5})
    find("#review").click()
    find("#apply").click()
    visible("#conflict")
    shot("conflict")
    status, current, _ = api("GET", "/api/v1/routes/shop", bearer)
    assert current.get("priority") == 3, current
    step("conflict: the other edit stands and the console says so")

    # 6. The overview counts the requests sent to the route.
    n = 7
    for _ in range(n):
        with urllib.request.urlopen(f"{PROXY}/shop/count", timeout=5) as r:
            assert r.status == 200
    go("overview")
    heading("Overview")
    cell = '#tops td[data-requests="shop"]'
    try:
        # The node writes call records in batches and the page refreshes every 5 s.
        WebDriverWait(d, 30).until(lambda _: any(
            e.text == str(n + 1) for e in d.find_elements(By.CSS_SELECTOR, cell)))
    except TimeoutException:
        cells = [e.text for e in d.find_elements(By.CSS_SELECTOR, cell)]
        raise AssertionError(f"the overview shows {cells} requests for shop, not {n + 1}")
    shot("overview")
    step(f"overview: {n + 1} requests to the route are counted (the {n} sent here and the first check)")

    axe_check("overview")

    # 7. A consumer's API key, scoped to an AI model, is issued and shown once; it opens a
    # keyed route.
    status, body, _ = api("POST", "/api/v1/ai-providers", bearer, {
        "name": "fake", "kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"})
    assert status == 201, body
    status, body, _ = api("POST", "/api/v1/ai-models", bearer, {"name": "gpt", "targets": ["fake/gpt-4.1"]})
    assert status == 201, body
    create("consumers", {"name": "acme", "credentials": []})
    wait.until(EC.text_to_be_present_in_element((By.ID, "object-name"), "acme"))
    visible("#key-name").send_keys("ci-key")
    find("#key-models").send_keys("gpt")
    find("#issue-key").click()
    key = visible("#issued-key").text
    assert key.startswith("sk-weir-"), key
    assert "ci-key" in visible("#credentials").text
    shot("consumer-key")
    status, _, _ = api("POST", "/api/v1/routes", bearer, {
        "name": "keyed", "match": {"paths": ["/keyed/*"]}, "upstream": "shop-up",
        "policies": [{"key_auth": {}}]})
    assert status == 201, status
    d.refresh()
    visible("#credentials")
    assert key not in d.page_source, "the key was shown again"
    assert not d.find_elements(By.ID, "issued-key")
    deadline = time.time() + 10
    while True:
        req = urllib.request.Request(f"{PROXY}/keyed/x", headers={"authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
                break
        except urllib.error.HTTPError as e:
            if time.time() > deadline:
                raise AssertionError(f"the issued key was refused: {e.code}")
            time.sleep(0.2)
    step("keys: an API key issued in the console is shown once and opens a keyed route")

    # 8. A dead letter replayed from the console is delivered.
    go("events")
    heading("Events")
    visible("#publish-topic").send_keys("orders")
    find("#publish-body").clear()
    find("#publish-body").send_keys('{"order": 42}')
    find("#publish-topic").submit()
    link = visible("form.panel p.ok a")
    event_id = link.text
    deadline = time.time() + 30
    go("events/hooks")
    while True:
        d.refresh()
        heading("Subscription")
        time.sleep(0.5)
        rows = d.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")
        if any(event_id in r.text for r in rows):
            break
        assert time.time() < deadline, "the failing delivery never became a dead letter"
        time.sleep(1)
    shot("dead-letter")
    axe_check("subscription")
    Hook.accept = True
    row = next(r for r in d.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr") if event_id in r.text)
    row.find_element(By.CSS_SELECTOR, "input.pick").click()
    find("#replay-selected").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "replay-result"), "1 delivery"))
    deadline = time.time() + 20
    while event_id not in Hook.delivered:
        assert time.time() < deadline, f"the replayed event was not delivered: {Hook.delivered}"
        time.sleep(0.2)
    step("events: a dead letter replayed from the console was delivered")

    # 9. A screenshot of every page, and axe-core on each; none shows a secret.
    checked = 0
    for page in ["routes", "routes/shop", "upstreams", "consumers", "certificates", "defaults", "events",
                 "topics", "subscriptions", "ai", "ai-providers", "ai-models", "audit", "status", "users"]:
        go(page)
        wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "main h1").text)
        time.sleep(0.3)
        assert PASSWORD not in d.page_source and token not in d.page_source and key not in d.page_source
        shot(page.replace("/", "-"))
        axe_check(page)
        checked += 1
    step(f"pages: every section renders; axe-core found no serious or critical violation on {checked + 3} pages (and the login page below)")

    # 10. A viewer sees no write controls, and the API refuses their writes anyway.
    go("users")
    heading("Users")
    visible("#new-username").send_keys("vera")
    find("#new-password").send_keys("viewer-password-12")
    d.execute_script("arguments[0].value = 'viewer';", find("#new-role"))
    find("#new-username").submit()
    wait.until(lambda _: "vera" in d.find_element(By.CSS_SELECTOR, "main table").text)
    logout()
    axe_check("login")
    step("logout: back to the login page (axe-core: no serious or critical violation)")
    login("vera", "viewer-password-12")
    go("routes")
    heading("Routes")
    assert not d.find_elements(By.ID, "new"), "a viewer sees New"
    go("routes/shop")
    visible("#editor")
    assert d.find_element(By.ID, "editor").get_attribute("readonly") is not None
    assert not d.find_elements(By.ID, "review") and not d.find_elements(By.ID, "delete")
    shot("viewer")
    code = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/session').then(r => r.json()).then(s => fetch('/api/v1/routes/shop', {
          method: 'DELETE', headers: {'x-csrf-token': s.csrf_token}})).then(r => done(r.status));""")
    assert code == 403, code
    step("viewer: no write controls, and a write is refused with 403")
    logout()

    # 11. Bytes for a login plus the overview, from a cold cache.
    d.execute_cdp_cmd("Network.clearBrowserCache", {})
    login("admin", PASSWORD)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#tops table, #tops .help"))
    total = d.execute_script("""
        const nav = performance.getEntriesByType('navigation').map(e => e.transferSize);
        const res = performance.getEntriesByType('resource').map(e => e.transferSize);
        return nav.concat(res).reduce((a, b) => a + b, 0);""")
    assert 0 < total <= 300 * 1024, total
    print(f"console: bytes: login plus overview transferred {total} bytes ({total / 1024:.1f} KiB, budget 300 KiB)")
    no_alert()
    print("console: all checks passed")
except BaseException:
    # What the page showed when a check failed: a screenshot and its text.
    try:
        shot("failure")
        print("console: the page at the failure:\n" + d.find_element(By.ID, "app").text[:4000])
    except Exception:
        pass
    raise
finally:
    d.quit()
