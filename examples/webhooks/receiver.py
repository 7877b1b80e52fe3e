#!/usr/bin/env python3
"""A keyward webhook receiver that checks Standard Webhooks signatures (Python standard library only).

    WEBHOOK_SECRET=whsec_... python3 receiver.py --port 8080

For each POST it checks, in this order, and answers:
  400  a webhook-id, webhook-timestamp or webhook-signature header is missing or malformed,
       or the timestamp is more than --tolerance seconds (default 300) from this machine's clock
  401  no v1 signature in webhook-signature matches HMAC-SHA256(secret, "{id}.{timestamp}.{body}")
  204  the notice is genuine; it is printed as one JSON line on stdout. A notice whose
       webhook-id was seen before (keyward retries, or a new leader repeats a step) is
       answered 204 again and printed with "duplicate": true, so a handler can skip it.

The secret is what the ApiKeyWebhook's Secret holds: "whsec_" and base64 (the prefix is optional).
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def decode_secret(value):
    """The signing key's bytes from "whsec_<base64>" (or bare base64)."""
    value = value.strip()
    if value.startswith("whsec_"):
        value = value[len("whsec_"):]
    return base64.b64decode(value, validate=True)


def signature(key, msg_id, timestamp, body):
    """The v1 signature keyward sends: base64 of HMAC-SHA256 over "{id}.{timestamp}.{body}"."""
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(key, headers, body, tolerance, now=None):
    """(status, reason): 204 when the headers carry a valid signature of body within tolerance."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        return 400, "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        timestamp = int(timestamp)
    except ValueError:
        return 400, "webhook-timestamp is not an integer"
    now = int(time.time()) if now is None else now
    if abs(now - timestamp) > tolerance:
        return 400, "webhook-timestamp is outside the tolerance (replayed or clock skew)"
    expected = signature(key, msg_id, timestamp, body)
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        # compare_digest: the time taken does not tell how much of a forged signature matched.
        if version == "v1" and hmac.compare_digest(value, expected):
            return 204, "verified"
    return 401, "no valid v1 signature"


class Handler(BaseHTTPRequestHandler):
    key = b""
    tolerance = 300
    seen = set()

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        status, reason = verify(self.key, self.headers, body, self.tolerance)
        if status == 204:
            msg_id = self.headers["webhook-id"]
            notice = json.loads(body)
            notice["webhookId"] = msg_id
            notice["duplicate"] = msg_id in self.seen
            self.seen.add(msg_id)
            print(json.dumps(notice, sort_keys=True), flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
        if status != 204:
            # The reason is ours, never an echo of what was sent.
            print(json.dumps({"refused": status, "reason": reason}), file=sys.stderr, flush=True)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--tolerance", type=int, default=300, help="seconds a timestamp may be off")
    args = parser.parse_args()
    try:
        Handler.key = decode_secret(os.environ["WEBHOOK_SECRET"])
    except KeyError:
        sys.exit("set WEBHOOK_SECRET to the signing secret (whsec_...)")
    except (binascii.Error, ValueError):
        sys.exit("WEBHOOK_SECRET is not whsec_ followed by base64")
    Handler.tolerance = args.tolerance
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(json.dumps({"listening": "http://%s:%d/" % server.server_address[:2]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
