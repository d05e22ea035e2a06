// What the wallet libraries send and get back, seen from outside them.
//
// @sphereon/oid4vci-client (and web-did-resolver) go through cross-fetch ->
// node-fetch@2 -> https.request, looked up at call time, so wrapping
// https.request sees them. @openid4vc/openid4vci takes a `fetch` callback, so
// it gets a wrapped fetch. The script's own requests use the global fetch and
// are not recorded.
//
// Every exchange is appended to `exchanges` ({who, method, url, status}),
// which lets the harness read a status a library does not report (Sphereon's
// sendNotification hides it). With INTEROP_TRACE=1 each one is also printed
// on stderr, bodies included: that shows codes and PINs, so only against a
// test server.

import https from 'node:https';

export const exchanges = [];
const trace = Boolean(process.env.INTEROP_TRACE);

function show(who, method, url, extra) {
  if (trace) console.error(`  [${who}] ${method} ${url} ${extra}`);
}

let hooked = false;
// Every node-fetch user shares one hook: the Sphereon wallet, and
// web-did-resolver (the jwt_vc_json verifier's did.json fetch).
export function hookHttpsRequest(who = 'node-fetch') {
  if (hooked) return;
  hooked = true;
  const orig = https.request;
  https.request = function tracedRequest(...args) {
    const req = orig.apply(this, args);
    const chunks = [];
    const write = req.write.bind(req);
    const end = req.end.bind(req);
    req.write = (c, ...rest) => {
      if (c && typeof c !== 'function') chunks.push(Buffer.from(c));
      return write(c, ...rest);
    };
    req.end = (c, ...rest) => {
      if (c && typeof c !== 'function') chunks.push(Buffer.from(c));
      const h = req.getHeaders();
      const url = `https://${h.host}${req.path}`;
      const entry = { who, method: req.method, url, status: undefined };
      exchanges.push(entry);
      const shown = {
        ...(h.authorization && { authorization: `${String(h.authorization).split(' ')[0]} ...` }),
        ...(h.dpop && { dpop: `${String(h.dpop).slice(0, 24)}...` }),
        'content-type': h['content-type'],
      };
      show(who, req.method, url, `${JSON.stringify(shown)} ${Buffer.concat(chunks).toString().slice(0, 600)}`);
      req.once('response', (res) => {
        entry.status = res.statusCode;
        show(who, '  <-', res.statusCode, res.headers['content-type'] ?? '');
      });
      return end(c, ...rest);
    };
    return req;
  };
}

export function tracingFetch(who) {
  return async (input, init) => {
    const url = typeof input === 'string' ? input : input.url ?? String(input);
    const method = init?.method ?? 'GET';
    const entry = { who, method, url, status: undefined };
    exchanges.push(entry);
    if (trace) {
      const h = new Headers(init?.headers ?? {});
      const shown = {
        ...(h.get('authorization') && { authorization: `${h.get('authorization').split(' ')[0]} ...` }),
        ...(h.get('dpop') && { dpop: `${h.get('dpop').slice(0, 24)}...` }),
        'content-type': h.get('content-type') ?? undefined,
      };
      const body = typeof init?.body === 'string' ? init.body : init?.body ? String(init.body) : '';
      show(who, method, url, `${JSON.stringify(shown)} ${body.slice(0, 600)}`);
    }
    const res = await fetch(input, init);
    entry.status = res.status;
    show(who, '  <-', res.status, res.headers.get('content-type') ?? '');
    return res;
  };
}

// The last exchange with this method and URL since `mark`.
export function lastExchange(method, url, mark = 0) {
  for (let i = exchanges.length - 1; i >= mark; i--) {
    if (exchanges[i].method === method && exchanges[i].url === url) return exchanges[i];
  }
  return undefined;
}
