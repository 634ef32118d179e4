// The signed-in session. The access token lives in memory only; the refresh token is an
// HttpOnly cookie the edge sets and reads (JavaScript never sees it). Refreshes are silent
// (before expiry), and one at a time across every tab of the browser: a Web Lock serialises
// them and a BroadcastChannel hands the new access token to the other tabs, so rotation's reuse
// detection never signs a person out. Signing out here or elsewhere returns every tab to the
// sign-in page.
import { defineStore } from 'pinia'
import { ref, computed } from 'vue'
import { SESSION_TRANSPORT, type AuthResponse, type User } from '~/api/client'
import { failureOf, networkFailure } from '~/utils/errors'

const LOCK = 'skillup-session-refresh'
const CHANNEL = 'skillup-session'
/** When a tab last renewed (a time, never a token): a tab that waited for the lock meanwhile
 * takes that tab's token from the broadcast instead of renewing again. */
const RENEWED = 'skillup-session-renewed'
/** This tab, to tell its own renewals from the others'. */
const TAB = Math.random().toString(36).slice(2)

type Message =
  | { type: 'tokens'; access: string; expiresAt: number; user?: User }
  | { type: 'signed-out' }
  | { type: 'user'; user: User }

function safeStorage(): Storage | undefined {
  try {
    return typeof localStorage === 'undefined' ? undefined : localStorage
  } catch {
    return undefined
  }
}

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
  let tokenWaiters: Array<() => void> = []

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

  function adopt(a: { access: string; expiresAt: number; user?: User }) {
    access.value = a.access
    expiresAt.value = a.expiresAt
    if (a.user) user.value = a.user
    ended.value = null
    schedule()
  }

  function fromAnswer(r: AuthResponse) {
    const a = { access: r.access_token ?? '', expiresAt: Date.now() + (r.expires_in ?? 3600) * 1000, user: r.user ?? undefined }
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
        adopt(m)
        tokenWaiters.forEach((w) => w())
        tokenWaiters = []
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

  /**
   * A new access token from the refresh cookie, unless another tab got one meanwhile (or the
   * current one is still fresh and nothing rejected it). False: the session is over.
   */
  /** Whether another tab's token arrives by broadcast within `ms`. */
  function broadcastToken(ms: number): Promise<boolean> {
    return new Promise((done) => {
      const timer = setTimeout(() => done(false), ms)
      tokenWaiters.push(() => {
        clearTimeout(timer)
        done(true)
      })
    })
  }

  async function refresh(rejected?: string): Promise<boolean> {
    const seen = access.value
    const asked = Date.now()
    return exclusive(async () => {
      // Another tab refreshed while this one waited for the lock: its token came by broadcast,
      // or is on its way.
      const renewedByOther = () => access.value && access.value !== seen && access.value !== rejected
      if (renewedByOther()) return true
      const [tab, at] = (safeStorage()?.getItem(RENEWED) ?? '').split(':')
      const byOther = tab !== TAB && Number(at) >= asked
      if (byOther && (await broadcastToken(2_000)) && renewedByOther()) return true
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
        safeStorage()?.setItem(RENEWED, `${TAB}:${Date.now()}`)
        fromAnswer(answer)
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
    fromAnswer(body as AuthResponse)
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
