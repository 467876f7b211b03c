// GetToken from the page: a Volcengine V4 (HMAC-SHA256) signed `POST /?Action=GetToken`, as the
// official SDKs send it. SHA-256 is written out here because WebCrypto exists only on HTTPS or
// localhost pages, and a gateway on a LAN address is served over plain HTTP.
import { Unreachable } from "./api.js";

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const utf8 = (text) => new TextEncoder().encode(text);
const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** SHA-256 of bytes (FIPS 180-4). */
export function sha256(bytes) {
  const length = bytes.length;
  const padded = new Uint8Array(((length + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length << 3) >>> 0);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, hh].forEach((value, i) => { h[i] = (h[i] + value) >>> 0; });
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  h.forEach((value, i) => outView.setUint32(4 * i, value));
  return out;
}

/** HMAC-SHA256 (RFC 2104) of bytes under a key of bytes. */
export function hmac(key, message) {
  const block = new Uint8Array(64);
  block.set(key.length > 64 ? sha256(key) : key);
  const inner = new Uint8Array(64 + message.length);
  const outer = new Uint8Array(64 + 32);
  for (let i = 0; i < 64; i++) {
    inner[i] = block[i] ^ 0x36;
    outer[i] = block[i] ^ 0x5c;
  }
  inner.set(message, 64);
  outer.set(sha256(inner), 64);
  return sha256(outer);
}

export const hex = (bytes) => Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");

export const SERVICE = "sami";
export const REGION = "cn-north-1";
export const QUERY = "Action=GetToken&Version=2021-07-27";  // already in canonical (sorted) order
const SIGNED_HEADERS = "content-type;host;x-content-sha256;x-date";

/** The V4 signature headers of `POST /?Action=GetToken&Version=2021-07-27` with `body` (a string)
 *  to `host`, signed at `date` (a Date) with the access key pair. */
export function signGetToken(accessKey, secretKey, host, body, date) {
  const xDate = date.toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
  const day = xDate.slice(0, 8);
  const bodyHash = hex(sha256(utf8(body)));
  const canonical = ["POST", "/", QUERY,
                     `content-type:application/json\nhost:${host}\nx-content-sha256:${bodyHash}\nx-date:${xDate}\n`,
                     SIGNED_HEADERS, bodyHash].join("\n");
  const scope = `${day}/${REGION}/${SERVICE}/request`;
  const toSign = ["HMAC-SHA256", xDate, scope, hex(sha256(utf8(canonical)))].join("\n");
  let key = utf8(secretKey);
  for (const part of [day, REGION, SERVICE, "request"]) key = hmac(key, utf8(part));
  return {
    "Content-Type": "application/json",
    "X-Date": xDate,
    "X-Content-Sha256": bodyHash,
    Authorization: `HMAC-SHA256 Credential=${accessKey}/${scope}, SignedHeaders=${SIGNED_HEADERS}, `
                   + `Signature=${hex(hmac(key, utf8(toSign)))}`,
  };
}

/** A SAMI token for `appkey` from this gateway's GetToken: {token, expires_at}; throws Unreachable
 *  without an answer, else an Error whose message and `code` are the OpenAPI error's. The gateway's
 *  GetToken answers at its root path: the folder of this page (behind a proxy that adds a path
 *  prefix, the prefix; the gateway still sees, and the signature names, "/"). */
export async function getToken(accessKey, secretKey, appkey, expiration = 3600) {
  const body = JSON.stringify({ token_version: "volc-auth-v1", appkey, expiration });
  const root = new URL(".", document.baseURI);
  const headers = signGetToken(accessKey, secretKey, root.host, body, new Date());
  let response;
  try {
    response = await fetch(`${root.pathname}?${QUERY}`, { method: "POST", headers, body });
  } catch (err) {
    throw new Unreachable(String(err.message || err));
  }
  const answer = await response.json().catch(() => ({}));
  if (response.ok && answer.token) return answer;
  const error = (answer.ResponseMetadata && answer.ResponseMetadata.Error) || {};
  const failure = new Error(error.Message || `GetToken answered HTTP ${response.status}`);
  failure.code = error.Code || "";
  throw failure;
}
