// Notifications: the list, the unread count, and the live WebSocket that keeps both current
// (`/api/notifications/ws`, the token as the `bearer.<token>` subprotocol). After a drop it
// reconnects with backoff and `after_id`, so nothing sent meanwhile is missed; a socket the edge
// closes for a revoked or expired token (4401) refreshes first and, if that fails, the session
// ends. Other parts of the console listen for what arrives (a finished task, a payment).
import { defineStore } from 'pinia'
import { ref } from 'vue'
import { api, unwrap, type Notification } from '~/api/client'
import { useSession } from './session'

type Listener = (n: Notification) => void

export const useNotifications = defineStore('notifications', () => {
  const items = ref<Notification[]>([])
  const unread = ref(0)
  const loaded = ref(false)
  const live = ref(false)
  const listeners = new Set<Listener>()
  let socket: WebSocket | null = null
  let lastId = ''
  let attempts = 0
  let retryTimer: ReturnType<typeof setTimeout> | undefined
  let wanted = false

  async function load() {
    const r = await unwrap(api.GET('/api/notifications', { params: { query: { page_size: 50 } } }))
    items.value = r.notifications ?? []
    unread.value = r.unread_count ?? 0
    lastId = items.value[0]?.id ?? lastId
    loaded.value = true
  }

  async function markRead(ids: string[] | 'all') {
    const body = ids === 'all' ? { all: true } : { ids }
    await unwrap(api.POST('/api/notifications/read', { body }))
    const now = new Date().toISOString()
    for (const n of items.value) if (ids === 'all' || ids.includes(n.id ?? '')) n.read_at ||= now
    unread.value = ids === 'all' ? 0 : items.value.filter((n) => !n.read_at).length
  }

  function onArrival(l: Listener): () => void {
    listeners.add(l)
    return () => listeners.delete(l)
  }

  function arrived(n: Notification) {
    if (n.id && items.value.some((i) => i.id === n.id)) return
    items.value.unshift(n)
    if (items.value.length > 200) items.value.pop()
    if (!n.read_at) unread.value++
    if (n.id) lastId = n.id
    listeners.forEach((l) => l(n))
  }

  async function connect() {
    wanted = true
    const session = useSession()
    const token = await session.token()
    if (!token || !wanted || socket) return
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
    const query = lastId ? `?after_id=${encodeURIComponent(lastId)}` : ''
    const ws = new WebSocket(`${scheme}://${location.host}/api/notifications/ws${query}`, ['skillup.v1', `bearer.${token}`])
    socket = ws
    ws.onopen = () => {
      live.value = true
      attempts = 0
    }
    ws.onmessage = (e) => {
      try {
        arrived(JSON.parse(String(e.data)) as Notification)
      } catch {
        // Not a notification (a control message): nothing to show.
      }
    }
    ws.onclose = (e) => {
      socket = null
      live.value = false
      if (!wanted) return
      if (e.code === 4401) {
        // Revoked or expired: a new token, or the session is over.
        void session.refresh(token).then((ok) => { if (ok) void connect() }).catch(() => retry())
        return
      }
      retry()
    }
  }

  function retry() {
    clearTimeout(retryTimer)
    const delay = Math.min(30_000, 500 * 2 ** attempts++) * (0.5 + Math.random() / 2)
    retryTimer = setTimeout(() => void connect(), delay)
  }

  function disconnect() {
    wanted = false
    clearTimeout(retryTimer)
    socket?.close(1000)
    socket = null
    live.value = false
    items.value = []
    unread.value = 0
    loaded.value = false
    lastId = ''
  }

  return { items, unread, loaded, live, load, markRead, connect, disconnect, onArrival }
})
