"""schemathesis hooks for app-backend's test (app-backend/tests/schemathesis.rs).

`no_secret_in_response`: fails a case whose response carries a secret. The
test passes the secrets it knows (database passwords, JWT signing keys, the
GitHub stand-in's tokens, the demo users' passwords, OpenBao's root token)
in ZT_ST_SECRETS_FILE, one per line; the failure names the kind of secret,
never the value. Shapes that are secrets whoever made them are caught too:
argon2 password hashes and OpenBao tokens.
"""

import os
import re

import schemathesis

_SECRETS = []
_path = os.environ.get("ZT_ST_SECRETS_FILE")
if _path:
    with open(_path, encoding="utf-8") as f:
        for line in f:
            kind, _, value = line.rstrip("\n").partition("\t")
            if len(value) >= 6:
                _SECRETS.append((kind, value.encode()))

# An argon2 PHC string, an OpenBao/Vault token (s.…, hvs.…, b.…, hvb.…).
_SHAPES = [
    ("a password hash", re.compile(rb"\$argon2(id|i|d)\$")),
    ("an OpenBao token", re.compile(rb"\b(hv[sb]|[sb])\.[A-Za-z0-9_-]{20,}")),
]


@schemathesis.check
def no_secret_in_response(ctx, response, case):
    body = response.content or b""
    headers = "\n".join(f"{k}: {', '.join(v)}" for k, v in response.headers.items()).encode()
    for where, data in (("body", body), ("headers", headers)):
        for kind, value in _SECRETS:
            if value in data:
                raise AssertionError(f"the response {where} contains a secret: {kind}")
        for kind, pattern in _SHAPES:
            if pattern.search(data):
                raise AssertionError(f"the response {where} contains {kind}")
    return None
