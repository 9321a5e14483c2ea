"""The official CloudEvents Python SDK as the receiving side of Weir's deliveries.

Reads a JSON file: the events as published (each CloudEvent in structured form, keyed by
its id; the ids Weir gave to plain events) and every request a subscription received
(its mode, headers and base64 body). Each received request is parsed with the SDK's HTTP
binding and compared with the SDK's own reading of what was published. Prints
"checked N deliveries" and exits 0, or names every mismatch and exits 1.
"""

import base64
import json
import sys

from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat


def normal(data):
    """Data as the SDK may give it (bytes, text or parsed JSON), in one comparable form."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return ("bytes", bytes(data))
    if isinstance(data, str):
        try:
            return ("json", json.loads(data))
        except ValueError:
            return ("text", data)
    return ("json", data)


def main(path):
    doc = json.load(open(path))
    fmt = JSONFormat()
    expected = {k: fmt.read(None, v.encode()) for k, v in doc["expected"].items()}
    plain = doc["plain"]
    problems, seen = [], {}
    for r in doc["received"]:
        mode, headers = r["mode"], r["headers"]
        body = base64.b64decode(r["body_b64"])
        if mode == "plain" and "ce-specversion" not in headers:
            if plain.get(headers.get("webhook-id")) != r["body_b64"]:
                problems.append(f"plain: an unknown plain event {headers}")
            seen[("plain", headers.get("webhook-id"))] = True
            continue
        try:
            ev = http.from_http(http.HTTPMessage(headers, body), fmt)
        except Exception as e:  # the SDK refusing a delivery is the failure under test
            problems.append(f"{mode}: the SDK refused {headers} {body!r}: {e}")
            continue
        attrs = ev.get_attributes()
        seen[(mode, attrs["id"])] = True
        if attrs["id"] in plain:
            if attrs["type"] != "weir.event" or not attrs["source"].startswith("/weir/topics/"):
                problems.append(f"{mode}: a plain event's attributes {attrs}")
            if base64.b64encode(body).decode() != plain[attrs["id"]] and mode != "structured":
                problems.append(f"{mode}: a plain event's data {body!r}")
            continue
        want = expected.get(attrs["id"])
        if want is None:
            problems.append(f"{mode}: an unknown event {attrs}")
            continue
        want_attrs = dict(want.get_attributes())
        if "time" not in json.loads(doc["expected"][attrs["id"]]):
            # The SDK stamps a time on an event read without one: the delivery must not
            # have carried one, and the stamps are not compared.
            sent = headers if mode != "structured" else json.loads(body)
            if "ce-time" in sent or "time" in sent:
                problems.append(f"{mode}: a time was added to {attrs['id']}")
            attrs = {k: v for k, v in attrs.items() if k != "time"}
            want_attrs.pop("time", None)
        if attrs != want_attrs:
            problems.append(f"{mode}: attributes {attrs} != {want_attrs}")
        if normal(ev.get_data()) != normal(want.get_data()):
            problems.append(f"{mode}: data {ev.get_data()!r} != {want.get_data()!r}")
    for mode in ("binary", "structured", "plain"):
        for eid in list(expected) + list(plain):
            if (mode, eid) not in seen:
                problems.append(f"{mode}: event {eid} was not received")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"checked {len(doc['received'])} deliveries")


if __name__ == "__main__":
    main(sys.argv[1])
