// The dashboard's only way to the server: same-origin fetch with the bearer token and the API's error shape.

export class ApiFailure extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
}

function queryString(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export function createApi(getToken) {
  async function request(method, path, { params, body } = {}) {
    const headers = { Accept: "application/json" };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path + queryString(params), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiFailure(0, "network", "The Flowtel server did not answer: is it running?");
    }
    const text = await resp.text();
    let doc = null;
    try {
      doc = text ? JSON.parse(text) : null;
    } catch {
      doc = null;
    }
    if (!resp.ok) {
      const error = (doc && doc.error) || {};
      throw new ApiFailure(resp.status, error.code || "http_error", error.message || `The server answered ${resp.status}.`, error.details);
    }
    return doc;
  }
  return {
    get: (path, params) => request("GET", path, { params }),
    post: (path, body) => request("POST", path, { body }),
  };
}
