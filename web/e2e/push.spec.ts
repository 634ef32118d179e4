// Web Push in the browser: the console registers its service worker, and a push message
// delivered to it (through the DevTools protocol, as the browser's push service would hand it
// over after decrypting) becomes a notification with the pushed title, text and page — in
// Chromium, against a real `skillup up`. The server's side (VAPID, encryption, retries) is
// tested against a push service stand-in in services/notification/tests.
import { test, expect, signUp } from './fixtures'

test('a pushed message is shown by the service worker, and the platform gives its key', async ({ page, context, baseURL }) => {
  await context.grantPermissions(['notifications'], { origin: baseURL })
  await signUp(page)
  await page.goto('/notifications')
  // Permission granted, not subscribed yet: push is off here and can be turned on.
  await expect(page.getByTestId('push')).toContainText('Push notifications are off on this device')
  await expect(page.getByRole('button', { name: 'Turn on push' })).toBeVisible()

  const key = await page.evaluate(async () => (await (await fetch('/api/notifications/push/key')).json()).public_key)
  expect(key).toMatch(/^[A-Za-z0-9_-]{87}$/)

  const scope = await page.evaluate(async () => (await navigator.serviceWorker.ready).scope)
  expect(scope).toBe(new URL('/', baseURL).href)

  const cdp = await context.newCDPSession(page)
  const registration = new Promise<string>((resolve) => {
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const mine = registrations.find((r) => r.scopeURL === scope && !r.isDeleted)
      if (mine) resolve(mine.registrationId)
    })
  })
  await cdp.send('ServiceWorker.enable')
  const registrationId = await registration
  const origin = new URL(baseURL!).origin
  const deliver = (payload: object) =>
    cdp.send('ServiceWorker.deliverPushMessage', { origin, registrationId, data: JSON.stringify(payload) })

  await deliver({ title: 'Your lesson plan about «Tides» is ready', body: 'Start with a question.', url: 'http://elsewhere.example/library/t1', tag: 'task1', kind: 'generation_completed', id: 'n1' })
  const shown = () =>
    page.evaluate(async () =>
      (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag, url: n.data?.url })),
    )
  // The page it opens is always this site's, whatever the message says.
  await expect.poll(shown).toEqual([{ title: 'Your lesson plan about «Tides» is ready', body: 'Start with a question.', tag: 'task1', url: '/library/t1' }])

  // A newer state of the same task replaces it; another task's stands beside it.
  await deliver({ title: 'Your lesson plan about «Tides» could not be written', body: '', url: '/library/t1', tag: 'task1', kind: 'generation_failed', id: 'n2' })
  await deliver({ title: 'Payment of 790.00 RUB went through', body: '', url: '/billing', tag: 'pay1', kind: 'payment_succeeded', id: 'n3' })
  await expect.poll(async () => (await shown()).map((n) => n.title).sort()).toEqual([
    'Payment of 790.00 RUB went through',
    'Your lesson plan about «Tides» could not be written',
  ])
})
