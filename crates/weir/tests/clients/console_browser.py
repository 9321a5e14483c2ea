"""Drives the Weir console in Debian's Chromium (headless) through chromedriver and Selenium,
as an operator would: first-run setup with the token file, create an upstream and a route and
see the proxy serve them, a validation error, a hostile name shown as text, a concurrent edit
shown as a conflict, the overview counting requests, a viewer without write controls, logout,
and the bytes a login plus the overview transfer. Saves a screenshot of each page.

Usage: console_browser.py CONSOLE_URL PROXY_URL TOKEN_FILE UPSTREAM_ADDR ARTIFACT_DIR
Prints one line per step; exits non-zero at the first failed check.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE, PROXY, TOKEN_FILE, UPSTREAM, ARTIFACTS = sys.argv[1:6]
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
    d.get(f"{BASE}/#/{hash_}")


def set_editor(value):
    ed = visible("#editor")
    d.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
        ed, json.dumps(value, indent=2))


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

    # 7. A screenshot of every page; none shows a provider key or a password.
    for page in ["routes", "upstreams", "consumers", "certificates", "defaults", "events", "ai", "audit", "users"]:
        go(page)
        wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "main h1").text)
        time.sleep(0.3)
        assert PASSWORD not in d.page_source and token not in d.page_source
        shot(page)
    step("pages: every section renders")

    # 8. A viewer sees no write controls, and the API refuses their writes anyway.
    go("users")
    heading("Users")
    visible("#new-username").send_keys("vera")
    find("#new-password").send_keys("viewer-password-12")
    d.execute_script("arguments[0].value = 'viewer';", find("#new-role"))
    find("#new-username").submit()
    wait.until(lambda _: "vera" in d.find_element(By.CSS_SELECTOR, "main table").text)
    logout()
    step("logout: back to the login page")
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

    # 9. Bytes for a login plus the overview, from a cold cache.
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
finally:
    d.quit()
