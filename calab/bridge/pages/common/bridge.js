// Bridge client shared by calab's built-in pages (spec bridge-and-apps.md §1.2, §1.10).
//
// The page learns the server from `?bridge=` (loopback http only; the origin is kept) and
// the session secret from `?bridge_secret=`, sent as X-Bridge-Secret on every call.  With
// only `?bridge_secret=` the bridge is the page's own origin (the Colab port proxy case).

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** The bridge origin and secret from the page URL, or null when not in bridge mode. */
export function getBridge(search = window.location.search) {
  const params = new URLSearchParams(search);
  const secret = params.get("bridge_secret");
  let raw = params.get("bridge");
  if (raw === null) {
    return secret === null ? null : { origin: window.location.origin, secret };
  }
  if (!raw.includes("://")) raw = `http://${raw}`;
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" || !LOOPBACK_HOSTS.has(url.hostname)) return null;
  return { origin: url.origin, secret };
}

export class BridgeError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** Calls to one bridge server, with the secret header and JSON error messages. */
export class BridgeClient {
  constructor({ origin, secret }) {
    this.origin = origin;
    this.secret = secret;
    this.heartbeatTimer = null;
  }

  headers(extra = {}) {
    return this.secret ? { "X-Bridge-Secret": this.secret, ...extra } : { ...extra };
  }

  async request(path, { method = "GET", body, contentType, signal } = {}) {
    const headers = this.headers(contentType ? { "Content-Type": contentType } : {});
    const response = await fetch(this.origin + path, { method, body, headers, signal });
    if (!response.ok) {
      let message = `${method} ${path} failed (${response.status})`;
      try {
        const data = await response.json();
        if (data && data.error) message = `${data.error} (${response.status})`;
      } catch {
        /* not JSON: keep the status line */
      }
      throw new BridgeError(message, response.status);
    }
    return response;
  }

  async getJSON(path, options) {
    return (await this.request(path, options)).json();
  }

  async postJSON(path, value, options = {}) {
    const response = await this.request(path, {
      ...options, method: "POST", body: JSON.stringify(value), contentType: "application/json",
    });
    return response.json();
  }

  /** POST /api/v1/heartbeat every 3 s; a network failure stops the beat (HTTP errors do not). */
  startHeartbeat(intervalMs = 3000) {
    this.stopHeartbeat();
    this.heartbeatTimer = setInterval(async () => {
      try {
        await fetch(`${this.origin}/api/v1/heartbeat`, { method: "POST", headers: this.headers() });
      } catch {
        this.stopHeartbeat();
      }
    }, intervalMs);
  }

  stopHeartbeat() {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }
}
