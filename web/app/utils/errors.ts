// A failed API call as the console shows it: the edge's `{"error": {code, message, field}}`,
// the HTTP status, and the wait a rate limit asks for. Network failures and answers that are
// not the edge's shape become `NETWORK` / `UNAVAILABLE`, so every failure has a code.

export interface ErrorBody {
  error?: { code?: string; message?: string; field?: string; request_id?: string }
}

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    /** Seconds to wait (429, 503 with `Retry-After`). */
    readonly retryAfter?: number,
  ) {
    super(message)
    this.name = 'ApiFailure'
  }

  /** Worth trying again as it is (the network, an outage, a rate limit). */
  get retryable(): boolean {
    return this.code === 'NETWORK' || this.status === 429 || this.status >= 500
  }
}

/** The failure an answer stands for (`body` as parsed JSON, when it was JSON). */
export function failureOf(status: number, body: unknown, headers?: Headers): ApiFailure {
  const e = (body as ErrorBody | undefined)?.error
  const retry = Number(headers?.get('retry-after'))
  const wait = Number.isFinite(retry) && retry > 0 ? Math.ceil(retry) : undefined
  if (e && typeof e.code === 'string') {
    return new ApiFailure(status, e.code, e.message ?? e.code, e.field, wait)
  }
  const code = status === 429 ? 'RATE_LIMITED' : status >= 500 ? 'UNAVAILABLE' : 'UNKNOWN'
  return new ApiFailure(status, code, `HTTP ${status}`, undefined, wait)
}

export function networkFailure(cause: unknown): ApiFailure {
  const why = cause instanceof Error ? cause.message : String(cause)
  return new ApiFailure(0, 'NETWORK', why)
}

/** `e` as an ApiFailure (a thrown one as it is, anything else as a network failure). */
export function asFailure(e: unknown): ApiFailure {
  return e instanceof ApiFailure ? e : networkFailure(e)
}

type Translate = (key: string, named?: Record<string, unknown>) => string
type Has = (key: string) => boolean

/**
 * A sentence for a person: the catalogue's words for the code when it has them (`errors.CODE`),
 * else the service's own message — services word their refusals in the reader's language
 * already (the console sends `Accept-Language`). Never raw JSON.
 */
export function describe(e: unknown, t: Translate, has: Has): string {
  const f = asFailure(e)
  if (f.status === 429 || f.code === 'RATE_LIMITED') {
    return f.retryAfter ? t('errors.RATE_LIMITED_WAIT', { seconds: f.retryAfter }) : t('errors.RATE_LIMITED')
  }
  if (f.code === 'NETWORK') return t('errors.NETWORK')
  if (f.code === 'INVALID_ARGUMENT') {
    // The detail is the service's precise rule; the lead names the field in the reader's words.
    const name = f.field && has(`fieldNames.${f.field}`) ? t(`fieldNames.${f.field}`) : f.field
    const lead = name ? t('errors.INVALID_FIELD', { field: name }) : t('errors.INVALID_ARGUMENT')
    return f.message ? `${lead} ${f.message}` : lead
  }
  // A service's worded refusal reads better than a generic line for its code.
  const serviceWorded = f.status >= 400 && f.status < 500 && f.message && !f.message.startsWith('HTTP ')
  if (serviceWorded && f.status !== 401) return f.message
  const key = `errors.${f.code}`
  if (has(key)) return t(key)
  if (f.status >= 500) return t('errors.UNAVAILABLE')
  return f.message || t('errors.UNKNOWN')
}
