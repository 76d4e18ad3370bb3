// Fetch wrapper for the browser apps: JSON in and out, the bearer token when one is set, and errors that carry
// the server's own message (`detail`), so the page can show what went wrong in the API's words.
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ApiClient {
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
  delete<T>(path: string): Promise<T>;
  /** Multipart upload; `onProgress` gets the fraction of the request body sent so far. */
  upload<T>(path: string, form: FormData, onProgress?: (fraction: number) => void): Promise<T>;
}

function messageOf(status: number, body: unknown): string {
  if (body && typeof body === 'object' && 'detail' in body) {
    const d = (body as { detail: unknown }).detail;
    if (typeof d === 'string') return d;
    if (Array.isArray(d)) return d.map((x) => (x && typeof x === 'object' && 'msg' in x ? String((x as { msg: unknown }).msg) : JSON.stringify(x))).join('; ');
  }
  return `HTTP ${status}`;
}

export function createApiClient(base: string, token: () => string | null, onUnauthorized: () => void): ApiClient {
  const headers = (extra: Record<string, string> = {}): Record<string, string> => {
    const t = token();
    return t ? { ...extra, authorization: `Bearer ${t}` } : extra;
  };
  const handle = async <T>(res: Response): Promise<T> => {
    const text = await res.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = { detail: text };
    }
    if (res.status === 401) onUnauthorized();
    if (!res.ok) throw new ApiError(res.status, messageOf(res.status, body));
    return body as T;
  };
  return {
    get: async (path) => handle(await fetch(base + path, { headers: headers() })),
    post: async (path, body) =>
      handle(
        await fetch(base + path, {
          method: 'POST',
          headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }),
          body: body === undefined ? undefined : JSON.stringify(body),
        }),
      ),
    delete: async (path) => handle(await fetch(base + path, { method: 'DELETE', headers: headers() })),
    // XMLHttpRequest, not fetch: only it reports upload progress.
    upload: (path, form, onProgress) =>
      new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open('POST', base + path);
        for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
        xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
        xhr.onerror = () => reject(new ApiError(0, 'network error'));
        xhr.onload = () => {
          handle(new Response(xhr.responseText, { status: xhr.status })).then(resolve as (v: unknown) => void, reject);
        };
        xhr.send(form);
      }),
  };
}
