// The token and the calls the console makes to Ferry's native API (same
// origin, `Authorization: Bearer <token>` on every request). Errors come back
// as ApiError with the server's own message ({"error":{"code","message"}}).

let token = ''
let unauthorized = () => {}

export function getToken() {
  return token
}

export function setToken(t) {
  token = t || ''
}

export function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {}
}

// Called when the server answers 401 to a console call: the token is no
// longer valid (the uploader does the same on a tus 401).
export function onUnauthorized(fn) {
  unauthorized = fn
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

// "a/b c/d" → "a/b%20c/d": each segment percent-encoded, slashes kept.
export function encodePath(p) {
  return String(p)
    .split('/')
    .filter((s) => s !== '')
    .map(encodeURIComponent)
    .join('/')
}

async function errorOf(res) {
  let code = `http_${res.status}`
  let message = `Ferry answered ${res.status} ${res.statusText || ''}`.trim()
  try {
    const j = await res.json()
    if (j && j.error) {
      code = j.error.code || code
      message = j.error.message || message
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message)
}

async function request(method, path, body) {
  const init = { method, headers: { ...authHeaders() }, cache: 'no-store', credentials: 'omit' }
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  let res
  try {
    res = await fetch(path, init)
  } catch {
    throw new ApiError(0, 'network', 'Ferry could not be reached. Check your connection and try again.')
  }
  if (!res.ok) {
    const err = await errorOf(res)
    if (res.status === 401) unauthorized(err)
    throw err
  }
  return res
}

// JSON in, JSON out (null for an empty answer such as 204).
export async function api(method, path, body) {
  const res = await request(method, path, body)
  if (res.status === 204) return null
  const text = await res.text()
  return text ? JSON.parse(text) : null
}

export async function apiBlob(path) {
  const res = await request('GET', path)
  return res.blob()
}

export const fileUrl = (space, path) => `/v1/spaces/${encodeURIComponent(space)}/files/${encodePath(path)}`
export const listUrl = (space, prefix) => `/v1/spaces/${encodeURIComponent(space)}/list/${encodePath(prefix)}`
