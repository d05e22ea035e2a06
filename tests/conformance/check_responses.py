"""Checks real responses of a running notary against its OpenAPI document.

Drives every endpoint through its main paths (success and the usual errors),
and for each response checks that the status is documented for that
operation, the content type is one the document lists, the JSON body
validates against the documented schema, and documented constant headers
(Cache-Control: no-store) are present. Prints one line per request and a
summary; exits non-zero on any mismatch.

Usage: check_responses.py BASE_URL CA_PEM ADMIN_KEY
"""

import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

from jsonschema import Draft202012Validator

BASE, CA, ADMIN = sys.argv[1], sys.argv[2], sys.argv[3]
CONTEXT = ssl.create_default_context(cafile=CA)
GRANT = "urn:ietf:params:oauth:grant-type:pre-authorized_code"


def call(method, path, body=None, content_type=None, key=None, accept=None):
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if accept:
        headers["Accept"] = accept
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, context=CONTEXT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def resolve(node, doc):
    """Inlines every local $ref (the document has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return resolve(target, doc)
        return {k: resolve(v, doc) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, doc) for v in node]
    return node


status, _, raw = call("GET", "/openapi.json")
assert status == 200, status
DOC = resolve(json.loads(raw), json.loads(raw))
failures = []
checked = 0


def check(name, template, method, response):
    global checked
    checked += 1
    status, headers, raw = response
    headers = {k.lower(): v for k, v in headers.items()}
    problems = []
    operation = DOC["paths"].get(template, {}).get(method.lower())
    if operation is None:
        problems.append(f"{method} {template} is not in the document")
    else:
        documented = operation["responses"].get(str(status))
        if documented is None:
            problems.append(f"status {status} is not documented")
        else:
            for header, spec in documented.get("headers", {}).items():
                const = spec.get("schema", {}).get("const")
                if const is not None and headers.get(header.lower()) != const:
                    problems.append(f"header {header} should be {const!r}, is {headers.get(header.lower())!r}")
            content = documented.get("content", {})
            media = headers.get("content-type", "").split(";")[0].strip()
            if content and media not in content:
                problems.append(f"content type {media!r} is not one of {sorted(content)}")
            elif media == "application/json":
                schema = content[media].get("schema", {})
                body = json.loads(raw)
                for error in Draft202012Validator(schema).iter_errors(body):
                    problems.append(f"body: {error.message} at {list(error.absolute_path)}")
    line = f"{'ok  ' if not problems else 'FAIL'} {name}: {method} {template} -> {status}"
    print(line)
    for p in problems:
        print(f"       {p}")
    if problems:
        failures.append(name)
    return status, headers, raw


def offer(body, name):
    r = check(name, "/v1/openid/offers/pre-authorized", "POST",
              call("POST", "/v1/openid/offers/pre-authorized", json.dumps(body), "application/json", ADMIN))
    return json.loads(r[2])


def code_of(created):
    query = created["uri"].split("?", 1)[1]
    (name, value), = urllib.parse.parse_qsl(query)
    if name == "credential_offer":
        o = json.loads(value)
    else:
        ref_path = urllib.parse.urlparse(value).path
        o = json.loads(check("offer by reference (JSON)", "/oid4vci/credential-offer/{reference}", "GET",
                             call("GET", ref_path, accept="application/json"))[2])
        check("offer by reference (HTML)", "/oid4vci/credential-offer/{reference}", "GET",
              call("GET", ref_path, accept="text/html"))
    return o["grants"][GRANT]["pre-authorized_code"]


for path in ["/healthz", "/readyz", "/.well-known/oauth-authorization-server",
             "/.well-known/openid-credential-issuer", "/.well-known/jwks.json", "/openapi.json",
             "/.well-known/jwt-vc-issuer", "/.well-known/did.json"]:
    check(path, path, "GET", call("GET", path))
check("nonce", "/oid4vci/nonce", "POST", call("POST", "/oid4vci/nonce"))

by_value = offer({"credentials": ["UniversityDegree_jwt"], "userId": "alice"}, "create by value")
by_ref = offer({"credentials": ["UniversityDegree_jwt"], "byReference": True, "transactionCode": False},
               "create by reference")
check("create: unknown field", "/v1/openid/offers/pre-authorized", "POST",
      call("POST", "/v1/openid/offers/pre-authorized", '{"credentials":["UniversityDegree_jwt"],"x":1}',
           "application/json", ADMIN))
check("create: no key", "/v1/openid/offers/pre-authorized", "POST",
      call("POST", "/v1/openid/offers/pre-authorized", "{}", "application/json"))

details = json.dumps([{"type": "openid_credential", "credential_configuration_id": "UniversityDegree_jwt"}])
form = urllib.parse.urlencode({"grant_type": GRANT, "pre-authorized_code": code_of(by_value),
                               "tx_code": by_value["transactionCode"], "authorization_details": details})
token = json.loads(check("token", "/oid4vci/token", "POST",
                         call("POST", "/oid4vci/token", form, "application/x-www-form-urlencoded"))[2])
check("token replayed", "/oid4vci/token", "POST", call("POST", "/oid4vci/token", form, "application/x-www-form-urlencoded"))
check("token by reference (JSON body)", "/oid4vci/token", "POST",
      call("POST", "/oid4vci/token", json.dumps({"grant_type": GRANT, "pre-authorized_code": code_of(by_ref)}),
           "application/json"))
check("token: wrong content type", "/oid4vci/token", "POST", call("POST", "/oid4vci/token", "x", "text/plain"))
check("token: wrong grant", "/oid4vci/token", "POST",
      call("POST", "/oid4vci/token", "grant_type=password", "application/x-www-form-urlencoded"))

def bearer_call(path, body, access_token):
    request = urllib.request.Request(BASE + path, data=body.encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {access_token}"})
    try:
        with urllib.request.urlopen(request, context=CONTEXT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


at = token["access_token"]
check("credential: no token", "/oid4vci/credential", "POST",
      call("POST", "/oid4vci/credential", "{}", "application/json"))
check("credential: foreign token", "/oid4vci/credential", "POST",
      bearer_call("/oid4vci/credential", "{}", "x.y.z"))
check("credential: not JSON", "/oid4vci/credential", "POST", bearer_call("/oid4vci/credential", "[", at))
check("credential: no proof", "/oid4vci/credential", "POST",
      bearer_call("/oid4vci/credential", json.dumps({"credential_configuration_id": "UniversityDegree_jwt"}), at))
check("credential: bad proof", "/oid4vci/credential", "POST",
      bearer_call("/oid4vci/credential", json.dumps({"credential_configuration_id": "UniversityDegree_jwt",
                                                      "proofs": {"jwt": ["a.b.c"]}}), at))
check("credential: unknown configuration", "/oid4vci/credential", "POST",
      bearer_call("/oid4vci/credential", json.dumps({"credential_configuration_id": "Nope",
                                                      "proofs": {"jwt": ["a.b.c"]}}), at))
check("notification: unknown id", "/oid4vci/notification", "POST",
      bearer_call("/oid4vci/notification", json.dumps({"notification_id": "x", "event": "credential_accepted"}), at))
check("notification: no token", "/oid4vci/notification", "POST",
      call("POST", "/oid4vci/notification", "{}", "application/json"))

intro = urllib.parse.urlencode({"token": token["access_token"]})
check("introspect", "/introspect", "POST", call("POST", "/introspect", intro, "application/x-www-form-urlencoded", ADMIN))
check("introspect: garbage", "/introspect", "POST",
      call("POST", "/introspect", "token=x", "application/x-www-form-urlencoded", ADMIN))
check("introspect: no key", "/introspect", "POST", call("POST", "/introspect", intro, "application/x-www-form-urlencoded"))

check("list offers", "/v1/openid/offers", "GET", call("GET", "/v1/openid/offers?limit=2", key=ADMIN))
check("list: bad state", "/v1/openid/offers", "GET", call("GET", "/v1/openid/offers?state=nope", key=ADMIN))
check("get offer", "/v1/openid/offers/{id}", "GET", call("GET", f"/v1/openid/offers/{by_value['id']}", key=ADMIN))
check("get unknown offer", "/v1/openid/offers/{id}", "GET", call("GET", "/v1/openid/offers/nope", key=ADMIN))
pending = offer({"credentials": ["UniversityDegree_jwt"]}, "create to revoke")
check("revoke", "/v1/openid/offers/{id}", "DELETE", call("DELETE", f"/v1/openid/offers/{pending['id']}", key=ADMIN))
check("revoke again", "/v1/openid/offers/{id}", "DELETE", call("DELETE", f"/v1/openid/offers/{pending['id']}", key=ADMIN))
check("offer by reference, redeemed", "/oid4vci/credential-offer/{reference}", "GET",
      call("GET", urllib.parse.urlparse(urllib.parse.parse_qsl(by_ref["uri"].split("?", 1)[1])[0][1]).path))
check("audit", "/v1/audit", "GET", call("GET", "/v1/audit?limit=5", key=ADMIN))
check("audit: bad limit", "/v1/audit", "GET", call("GET", "/v1/audit?limit=0", key=ADMIN))
check("custody", "/v1/custody", "GET", call("GET", "/v1/custody", key=ADMIN))

print(f"openapi conformance: {checked - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
