// The console's service worker: shows the notifications SkillUp pushes (Web Push; the server
// encrypts each one for this browser, the browser decrypts it before this runs) and opens the
// page a notification is about when it is clicked. It caches nothing: the console is served
// fresh by the edge.
/* eslint-env serviceworker */

self.addEventListener('install', () => {
  self.skipWaiting()
})

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim())
})

/** A path of this site: a pushed link is only ever opened here, never on another origin. */
function ownPage(url) {
  try {
    const u = new URL(url || '/', self.location.origin)
    return u.pathname + u.search + u.hash
  } catch {
    return '/notifications'
  }
}

function payloadOf(event) {
  if (!event.data) return {}
  try {
    return event.data.json()
  } catch {
    return { body: event.data.text() }
  }
}

self.addEventListener('push', (event) => {
  const p = payloadOf(event)
  const title = typeof p.title === 'string' && p.title ? p.title : 'SkillUp'
  const options = {
    body: typeof p.body === 'string' ? p.body : '',
    icon: '/favicon.svg',
    badge: '/favicon.svg',
    // A newer state of the same task or payment replaces the older one.
    tag: typeof p.tag === 'string' && p.tag ? p.tag : undefined,
    renotify: Boolean(p.tag),
    data: { url: ownPage(p.url), id: p.id, kind: p.kind },
  }
  event.waitUntil(self.registration.showNotification(title, options))
})

self.addEventListener('notificationclick', (event) => {
  event.notification.close()
  const page = ownPage(event.notification.data && event.notification.data.url)
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true })
      for (const w of windows) {
        if (new URL(w.url).origin !== self.location.origin) continue
        await w.focus()
        if ('navigate' in w) return w.navigate(page)
        return undefined
      }
      return self.clients.openWindow(page)
    })(),
  )
})
