// Web Push in the browser: the console registers its service worker, and a push message
// delivered to it (through the DevTools protocol, as the browser's push service would hand it
// over after decrypting) becomes a notification with the pushed title, text and page — in
// Chromium, against a real `skillup up`. The server's side (VAPID, encryption, retries) is
// tested against a push service stand-in in services/notification/tests.
import { test, expect, mailedLink, signUp } from './fixtures'

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
  // Every registration of this origin the browser reports (tests before this one may leave
  // theirs in other contexts): the message goes to each live one; only this page's shows it.
  const registrations = new Map<string, boolean>()
  cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations: all }) => {
    for (const r of all) if (r.scopeURL === scope) registrations.set(r.registrationId, !r.isDeleted)
  })
  await cdp.send('ServiceWorker.enable')
  await expect.poll(() => [...registrations.values()].some(Boolean)).toBe(true)
  const origin = new URL(baseURL!).origin
  const deliver = async (payload: object) => {
    for (const [registrationId, live] of registrations) {
      if (!live) continue
      await cdp.send('ServiceWorker.deliverPushMessage', { origin, registrationId, data: JSON.stringify(payload) }).catch(() => {})
    }
  }

  await deliver({ title: 'Your lesson plan about «Tides» is ready', body: 'Start with a question.', url: 'http://elsewhere.example/library/t1', tag: 'task1', kind: 'generation_completed', id: 'n1' })
  const shown = () =>
    page.evaluate(async () =>
      (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag, url: n.data?.url })),
    )
  // The page it opens is always this site's, whatever the message says.
  await expect.poll(shown).toEqual([{ title: 'Your lesson plan about «Tides» is ready', body: 'Start with a question.', tag: 'task1', url: '/library/t1' }])

  // A newer state of the same task replaces it; another task's stands beside it.
  await deliver({ title: 'Your lesson plan about «Tides» could not be written', body: '', url: '/library/t1', tag: 'task1', kind: 'generation_failed', id: 'n2' })
  await deliver({ title: 'Payment of ₽790.00 went through', body: '', url: '/billing', tag: 'pay1', kind: 'payment_succeeded', id: 'n3' })
  await expect.poll(async () => (await shown()).map((n) => n.title).sort()).toEqual([
    'Payment of ₽790.00 went through',
    'Your lesson plan about «Tides» could not be written',
  ])
})

test('each event is chosen per channel, and an email’s unsubscribe link stops its emails without signing in', async ({ page, browser }) => {
  const email = await signUp(page)
  await page.goto('/notifications')
  const row = (name: string) => page.getByRole('row', { name: new RegExp(name) })
  await expect(row('A queued generation is ready').getByRole('combobox', { name: 'Email: A queued generation is ready' })).toHaveValue('DELIVERY_IMMEDIATE')
  await page.getByRole('combobox', { name: 'Email: A queued generation is ready' }).selectOption('DELIVERY_DIGEST')
  await page.getByRole('combobox', { name: 'Push: A payment was refused' }).selectOption('DELIVERY_OFF')
  await page.getByRole('button', { name: 'Save' }).click()
  await expect(page.getByText('Saved')).toBeVisible()
  await page.reload()
  await expect(page.getByRole('combobox', { name: 'Email: A queued generation is ready' })).toHaveValue('DELIVERY_DIGEST')
  await expect(page.getByRole('combobox', { name: 'Push: A payment was refused' })).toHaveValue('DELIVERY_OFF')
  await expect(page.getByRole('combobox', { name: 'Email: Payment received or refunded' })).toHaveValue('DELIVERY_IMMEDIATE')

  // Money in: emailed at once, with its unsubscribe link.
  await page.goto('/billing')
  await page.getByLabel('Amount').fill('12.50')
  await page.getByRole('button', { name: 'Top up' }).click()
  await page.getByRole('button', { name: 'Pay ₽12.50' }).click()
  await expect(page.getByTestId('balance')).toHaveText('₽12.50')
  const link = await mailedLink(email, '/unsubscribe?token=')
  expect(link).toContain('event=NOTIFICATION_EVENT_PAYMENT_RECEIVED')

  // Opened where nobody is signed in: one click, and that event's emails stop.
  const stranger = await browser.newPage({ baseURL: page.url() })
  await stranger.goto(link)
  await expect(stranger.getByRole('heading', { name: 'Stop these emails' })).toBeVisible()
  await expect(stranger.getByText('No more emails about “Payment received or refunded” will be sent to this address.')).toBeVisible()
  await stranger.getByRole('button', { name: 'Unsubscribe' }).click()
  await expect(stranger.locator('p[role=status]')).toHaveText('Done: no more emails about “Payment received or refunded”.')
  await stranger.close()
  // A forged link names nobody.
  const forged = await browser.newPage({ baseURL: page.url() })
  await forged.goto(link.replace(/token=[^&]+/, 'token=00000000000000000000000000000000.nope'))
  await forged.getByRole('button', { name: 'Unsubscribe' }).click()
  await expect(forged.getByRole('alert')).toBeVisible()
  await forged.close()

  await page.goto('/notifications')
  await expect(page.getByRole('combobox', { name: 'Email: Payment received or refunded' })).toHaveValue('DELIVERY_OFF')
  await expect(page.getByRole('combobox', { name: 'Email: A queued generation is ready' })).toHaveValue('DELIVERY_DIGEST')
})
