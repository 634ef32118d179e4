// Web Push on this device. The service worker (public/sw.js) shows what the server pushes and
// opens its page on a click; this turns push on (the browser's permission, the server's VAPID
// key, `pushManager.subscribe`, the subscription filed with the server) and off (the device
// deleted on the server, the browser unsubscribed), and says which it is. The state is one for
// the whole page (module scope): the layout reads it to avoid showing a notification twice.
import { ref } from 'vue'
import { api, unwrap } from '~/api/client'
import { ApiFailure } from '~/utils/errors'

export type PushState = 'unsupported' | 'unavailable' | 'denied' | 'off' | 'on'

const state = ref<PushState>('off')
const busy = ref(false)

function supported(): boolean {
  return (
    typeof navigator !== 'undefined' &&
    'serviceWorker' in navigator &&
    typeof window !== 'undefined' &&
    'PushManager' in window &&
    typeof Notification !== 'undefined'
  )
}

/** The VAPID key (base64url) as `applicationServerKey` takes it. */
export function keyBytes(base64url: string): Uint8Array<ArrayBuffer> {
  const b64 = base64url.replace(/-/g, '+').replace(/_/g, '/')
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
  const out = new Uint8Array(new ArrayBuffer(raw.length))
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i)
  return out
}

/** Registers the service worker (once per page; the browser keeps it between visits). */
export async function registerWorker(): Promise<ServiceWorkerRegistration | null> {
  if (typeof navigator === 'undefined' || !('serviceWorker' in navigator)) return null
  try {
    return await navigator.serviceWorker.register('/sw.js', { scope: '/' })
  } catch {
    return null
  }
}

async function currentSubscription(): Promise<PushSubscription | null> {
  const reg = await navigator.serviceWorker.getRegistration('/')
  return (await reg?.pushManager.getSubscription()) ?? null
}

function offHere(e: unknown): boolean {
  return e instanceof ApiFailure && e.status === 404
}

export function usePush() {
  /** Reads the state: push on when this browser's subscription is filed with the server. */
  async function refresh() {
    if (!supported()) {
      state.value = 'unsupported'
      return
    }
    if (Notification.permission === 'denied') {
      state.value = 'denied'
      return
    }
    try {
      const sub = await currentSubscription()
      const r = await unwrap(api.GET('/api/notifications/push/subscriptions'))
      state.value = sub && (r.devices ?? []).some((d) => d.endpoint === sub.endpoint) ? 'on' : 'off'
    } catch (e) {
      if (!offHere(e)) throw e
      state.value = 'unavailable'
    }
  }

  /** Turns push on for this device; throws what went wrong (the caller says it). */
  async function enable() {
    busy.value = true
    try {
      const permission = await Notification.requestPermission()
      if (permission !== 'granted') {
        state.value = permission === 'denied' ? 'denied' : 'off'
        return
      }
      const { public_key: key } = await unwrap(api.GET('/api/notifications/push/key'))
      const reg = (await registerWorker()) ?? (await navigator.serviceWorker.ready)
      let sub = await reg.pushManager.getSubscription()
      // A subscription made with another key (the server's key changed) cannot be used.
      if (sub && sub.options.applicationServerKey) {
        const had = new Uint8Array(sub.options.applicationServerKey)
        const want = keyBytes(key ?? '')
        if (had.length !== want.length || had.some((b, i) => b !== want[i])) {
          await sub.unsubscribe()
          sub = null
        }
      }
      sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key ?? '') })
      const json = sub.toJSON()
      await unwrap(
        api.POST('/api/notifications/push/subscriptions', {
          body: {
            endpoint: json.endpoint ?? '',
            expiration_time: json.expirationTime == null ? undefined : String(json.expirationTime),
            keys: { p256dh: json.keys?.p256dh ?? '', auth: json.keys?.auth ?? '' },
          },
        }),
      )
      state.value = 'on'
    } catch (e) {
      if (offHere(e)) state.value = 'unavailable'
      throw e
    } finally {
      busy.value = false
    }
  }

  /** Turns push off for this device. */
  async function disable() {
    busy.value = true
    try {
      const sub = await currentSubscription()
      if (sub) {
        const r = await unwrap(api.GET('/api/notifications/push/subscriptions'))
        const mine = (r.devices ?? []).find((d) => d.endpoint === sub.endpoint)
        if (mine?.id) {
          await unwrap(api.DELETE('/api/notifications/push/subscriptions/{id}', { params: { path: { id: mine.id } } }))
        }
        await sub.unsubscribe()
      }
      state.value = 'off'
    } finally {
      busy.value = false
    }
  }

  return { state, busy, refresh, enable, disable }
}
