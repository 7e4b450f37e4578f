// The admin API as the page uses it: same-origin requests with the session cookie, a 401
// sends the browser to the login page, and actions carry the session's CSRF token.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function toLogin() {
  const back = encodeURIComponent(location.pathname + location.hash);
  location.assign(`/login?next=${back}`);
}

async function problemText(response) {
  // RFC 9457 problem documents carry the reason; anything else, the status line
  try {
    const body = await response.json();
    return body.detail || body.title || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function request(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    cache: "no-store",
    // a request's Origin is sent as "null" under a no-referrer policy, and the admin
    // listener refuses a POST whose Origin is not its own: same-origin sends the real one
    referrerPolicy: "same-origin",
    ...options,
    headers: { Accept: "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "not logged in");
  }
  if (!response.ok) throw new ApiError(response.status, await problemText(response));
  return response.json();
}

export function getJson(path) {
  return request(path);
}

let csrfToken = null;

async function csrf() {
  if (csrfToken === null) csrfToken = (await request("/api/session")).csrf;
  return csrfToken;
}

export async function postJson(path, body) {
  const send = async () => request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": await csrf() },
    body: JSON.stringify(body),
  });
  try {
    return await send();
  } catch (error) {
    // a token from before a restart of the admin listener: fetch a new one, once
    if (error.status !== 403) throw error;
    csrfToken = null;
    return send();
  }
}

export async function logout() {
  try {
    await fetch("/logout", {
      method: "POST",
      credentials: "same-origin",
      referrerPolicy: "same-origin",
      headers: { "X-CSRF-Token": await csrf() },
    });
  } finally {
    location.assign("/login");
  }
}

/**
 * Follow /api/live: `onEvent(json)` once a second, `onState("open" | "retrying")`.
 * EventSource reconnects by itself; when it gives up (the server refused the stream, e.g. an
 * expired session) the session is checked so that a 401 leads to the login page.
 * Returns a function that closes the stream.
 */
export function follow(onEvent, onState) {
  let source = null;
  let timer = null;
  let closed = false;
  const open = () => {
    source = new EventSource("/api/live", { withCredentials: true });
    source.onopen = () => onState("open");
    source.onmessage = (message) => {
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        console.error("unreadable live event", error);
      }
    };
    source.onerror = () => {
      onState("retrying");
      if (source.readyState === EventSource.CLOSED && !closed) {
        getJson("/api/session").then(
          () => { timer = setTimeout(open, 2000); },
          () => { timer = setTimeout(open, 5000); },
        );
      }
    };
  };
  open();
  return () => {
    closed = true;
    clearTimeout(timer);
    if (source) source.close();
  };
}
