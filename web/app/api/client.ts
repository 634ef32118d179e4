// The typed API client: openapi-fetch over the types generated from the edge's OpenAPI
// document, so a contract change that breaks the console breaks its typecheck. Every call
// carries the access token (refreshed first when it is about to expire, and once more after a
// 401), the reader's language, and asks for the session's tokens to travel as cookies.
import createClient from 'openapi-fetch'
import type { paths, components } from './schema'
import { failureOf, networkFailure } from '~/utils/errors'

export type Schemas = components['schemas']
export type User = Schemas['skillup.auth.v1.User']
export type AuthResponse = Schemas['skillup.auth.v1.AuthResponse']
export type Task = Schemas['skillup.ai.v1.Task']
export type CatalogFunction = Schemas['skillup.prompt.v1.Function']
export type Topic = Schemas['skillup.prompt.v1.Topic']
export type Plan = Schemas['skillup.subscribe.v1.Plan']
export type Subscription = Schemas['skillup.subscribe.v1.Subscription']
export type Usage = Schemas['skillup.subscribe.v1.Usage']
export type UsageHistory = Schemas['skillup.subscribe.v1.UsageHistory']
export type ServiceRecord = Schemas['skillup.subscribe.v1.ServiceRecord']
export type Balance = Schemas['skillup.payment.v1.Balance']
export type Transaction = Schemas['skillup.payment.v1.Transaction']
export type Checkout = Schemas['skillup.payment.v1.Checkout']
export type CheckoutWithRefunds = Schemas['skillup.payment.v1.CheckoutWithRefunds']
export type Notification = Schemas['skillup.notification.v1.Notification']
export type Preferences = Schemas['skillup.notification.v1.Preferences']
export type SessionInfo = Schemas['skillup.auth.v1.Session']
export type DataExport = Schemas['skillup.auth.v1.DataExport']
export type ApiKey = Schemas['skillup.auth.v1.ApiKey']

/** What the client needs from the session, set by the session plugin. */
export interface Auth {
  /** A valid access token (refreshed first when about to expire), or null when signed out. */
  token(): Promise<string | null>
  /** After a 401: refresh once; true when there is a new token to try again with. */
  renew(rejected: string): Promise<boolean>
  locale(): string
}

let auth: Auth = {
  token: async () => null,
  renew: async () => false,
  locale: () => 'en',
}

export function configureAuth(a: Auth): void {
  auth = a
}

export const SESSION_TRANSPORT = { 'x-session-transport': 'cookie' }

async function send(request: Request, token: string | null): Promise<Response> {
  const headers = new Headers(request.headers)
  if (token) headers.set('authorization', `Bearer ${token}`)
  headers.set('accept-language', auth.locale())
  for (const [k, v] of Object.entries(SESSION_TRANSPORT)) headers.set(k, v)
  return fetch(new Request(request, { headers, credentials: 'same-origin' }))
}

/** `fetch` with the session: used by the typed client and by streams. */
export async function authedFetch(request: Request): Promise<Response> {
  const retry = request.clone()
  const token = await auth.token()
  const res = await send(request, token)
  if (res.status === 401 && token && (await auth.renew(token))) {
    return send(retry, await auth.token())
  }
  return res
}

export const api = createClient<paths>({ baseUrl: '', fetch: authedFetch })

/** The data of a typed call, or its failure thrown as an ApiFailure. */
export async function unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let r: { data?: T; error?: unknown; response: Response }
  try {
    r = await call
  } catch (e) {
    throw networkFailure(e)
  }
  if (!r.response.ok) throw failureOf(r.response.status, r.error, r.response.headers)
  return r.data as T
}

/** A fresh idempotency key for a write that may be retried. */
export function idempotencyKey(): string {
  return crypto.randomUUID()
}
