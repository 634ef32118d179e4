// The signed-in session. The access token lives in memory only; the refresh token is an
// HttpOnly cookie the edge sets and reads (JavaScript never sees it). Refreshes are silent
// (before expiry), and one at a time across every tab of the browser: a Web Lock serialises
// them, a BroadcastChannel hands the new access token to the other tabs, and a renewal count
// (utils/renewals.ts) tells a tab that waited for the lock that another tab already renewed, so
// one renewal serves every tab and rotation's reuse detection never signs a person out. Signing
// out here or elsewhere returns every tab to the sign-in page.
import { defineStore } from 'pinia'
import { ref, computed } from 'vue'
import { SESSION_TRANSPORT, type AuthResponse, type User } from '~/api/client'
import { failureOf, networkFailure } from '~/utils/errors'
import { renewals, renewed } from '~/utils/renewals'

const LOCK = 'skillup-session-refresh'
const CHANNEL = 'skillup-session'
/** How long a tab waits for a token another tab has renewed and is broadcasting. */
const HANDOVER_MS = 5_000

/** `renewal`: the renewal count the token was issued at (utils/renewals.ts). */
type Tokens = { access: string; expiresAt: number; renewal: number; user?: User }
type Message = ({ type: 'tokens' } & Tokens) | { type: 'signed-out' } | { type: 'user'; user: User }

export const useSession = defineStore('session', () => {
  const access = ref<string | null>(null)
  const expiresAt = ref(0)
  const user = ref<User | null>(null)
  /** Whether the first restore attempt (on load) has finished. */
  const restored = ref(false)
  /** Why the session ended, for the sign-in page ('expired', 'signed-out'). */
  const ended = ref<string | null>(null)
  let timer: ReturnType<typeof setTimeout> | undefined
  let channel: BroadcastChannel | undefined
  let restoring: Promise<void> | undefined
  const listeners = new Set<(why: string) => void>()
  /** The renewal count this tab's token was issued at. */
  let held = 0
  let handovers: Array<() => void> = []

  const signedIn = computed(() => access.value !== null)

  function post(m: Message) {
    channel?.postMessage(m)
  }

  function schedule() {
    clearTimeout(timer)
    if (!access.value) return
    const left = expiresAt.value - Date.now()
    // Renew when a fifth of the life (at most a minute) is left.
    const early = Math.min(60_000, Math.max(1_000, (left * 1) / 5))
    timer = setTimeout(() => void refresh().catch(() => {}), Math.max(500, left - early))
  }

  function adopt(a: Tokens) {
    held = a.renewal
    access.value = a.access
    expiresAt.value = a.expiresAt
    if (a.user) user.value = a.user
    ended.value = null
    schedule()
  }

  function fromAnswer(r: AuthResponse, renewal: number) {
    const a = {
      access: r.access_token ?? '',
      expiresAt: Date.now() + (r.expires_in ?? 3600) * 1000,
      renewal,
      user: r.user ?? undefined,
    }
    adopt(a)
    post({ type: 'tokens', ...a })
  }

  function clear(why: string) {
    const was = access.value !== null
    clearTimeout(timer)
    access.value = null
    expiresAt.value = 0
    user.value = null
    ended.value = why
    if (was) listeners.forEach((l) => l(why))
  }

  /** Called when the session ends (any tab, any reason). */
  function onEnd(listener: (why: string) => void): () => void {
    listeners.add(listener)
    return () => listeners.delete(listener)
  }

  function listen() {
    if (channel || typeof BroadcastChannel === 'undefined') return
    channel = new BroadcastChannel(CHANNEL)
    channel.onmessage = (e: MessageEvent<Message>) => {
      const m = e.data
      if (m.type === 'tokens') {
        // Tabs renew one at a time, so tokens arrive in order; an older one is never taken back.
        if (m.renewal < held) return
        adopt(m)
        handovers.forEach((w) => w())
      }
      else if (m.type === 'user') user.value = m.user
      else if (m.type === 'signed-out') clear('signed-out')
    }
  }

  async function exclusive<T>(run: () => Promise<T>): Promise<T> {
    if (typeof navigator !== 'undefined' && navigator.locks) {
      return navigator.locks.request(LOCK, run) as Promise<T>
    }
    return run()
  }

  /** Whether a token of at least renewal `n` is here, or arrives by broadcast within `ms`. */
  function handover(n: number, ms: number): Promise<boolean> {
    return new Promise((done) => {
      const check = () => {
        if (held < n) return false
        clearTimeout(timer)
        handovers = handovers.filter((w) => w !== check)
        done(true)
        return true
      }
      const timer = setTimeout(() => {
        handovers = handovers.filter((w) => w !== check)
        done(false)
      }, ms)
      if (!check()) handovers.push(check)
    })
  }

  /**
   * A new access token from the refresh cookie, unless another tab renewed meanwhile (its token
   * is taken from the broadcast) or the current one is still fresh and nothing rejected it.
   * `rejected`: the token the edge refused. False: the session is over.
   */
  async function refresh(rejected?: string): Promise<boolean> {
    const seen = access.value
    return exclusive(async () => {
      const usable = () => access.value !== null && access.value !== rejected
      // Another tab's token came by broadcast while this one waited for the lock.
      if (access.value !== seen && usable()) return true
      if (access.value) {
        // Another tab renewed after this tab's token was issued: that tab broadcast its token
        // before it let go of the lock, so it is on its way. (Without a token there is nothing to
        // compare: a tab just opened renews from the cookie.)
        const newest = await renewals()
        if (newest > held && (await handover(newest, HANDOVER_MS)) && usable()) return true
      }
      if (!rejected && access.value && expiresAt.value - Date.now() > 60_000) return true
      let res: Response
      try {
        res = await fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...SESSION_TRANSPORT },
          body: '{}',
          credentials: 'same-origin',
        })
      } catch (e) {
        throw networkFailure(e)
      }
      if (res.ok) {
        const answer = (await res.json()) as AuthResponse
        fromAnswer(answer, await renewed())
        return true
      }
      if (res.status === 401 || res.status === 400 || res.status === 403) {
        clear(access.value ? 'expired' : 'none')
        post({ type: 'signed-out' })
        return false
      }
      throw failureOf(res.status, await res.json().catch(() => undefined), res.headers)
    })
  }

  /** On load: the session the refresh cookie still holds, if any. */
  function restore(): Promise<void> {
    listen()
    restoring ??= (async () => {
      try {
        await refresh()
      } catch {
        // Offline or the platform is down: stay signed out; pages say why when they call.
      } finally {
        restored.value = true
      }
    })()
    return restoring
  }

  /** A token good for at least a few seconds more, or null. */
  async function token(): Promise<string | null> {
    if (!access.value) return null
    if (expiresAt.value - Date.now() < 5_000) {
      try {
        await refresh()
      } catch {
        // The call goes out with what there is; its answer tells.
      }
    }
    return access.value
  }

  async function signIn(email: string, password: string, locale: string): Promise<void> {
    let res: Response
    try {
      res = await fetch('/api/auth/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'accept-language': locale, ...SESSION_TRANSPORT },
        body: JSON.stringify({ email, password }),
        credentials: 'same-origin',
      })
    } catch (e) {
      throw networkFailure(e)
    }
    const body = await res.json().catch(() => undefined)
    if (!res.ok) throw failureOf(res.status, body, res.headers)
    fromAnswer(body as AuthResponse, await renewed())
  }

  async function signOut(everywhere = false): Promise<void> {
    const t = await token()
    if (t) {
      await fetch(everywhere ? '/api/auth/logout/all' : '/api/auth/logout', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${t}`, ...SESSION_TRANSPORT },
        body: '{}',
        credentials: 'same-origin',
      }).catch(() => {})
    }
    clear('signed-out')
    post({ type: 'signed-out' })
  }

  function setUser(u: User) {
    user.value = u
    post({ type: 'user', user: u })
  }

  return {
    access,
    expiresAt,
    user,
    restored,
    ended,
    signedIn,
    restore,
    refresh,
    token,
    signIn,
    signOut,
    setUser,
    onEnd,
    clear,
  }
})
