// The whole product as a new person meets it, against a real `skillup up`: sign up, confirm the
// address from the emailed link, a streamed text, a queued one that completes live, both found
// in the library, a top-up, a subscription that unlocks a function, notifications, and signing
// out everywhere.
import { readFileSync } from 'node:fs'
import { test, expect, mailedLink, nav, signUp } from './fixtures'

test('a new person goes through the whole product', async ({ page }) => {
  await signUp(page)

  // A short function streams in live.
  await page.getByLabel('Topic', { exact: true }).fill('Photosynthesis')
  await page.getByRole('radio', { name: /Quiz/ }).check()
  await page.getByRole('button', { name: 'Generate', exact: true }).click()
  await expect(page.getByTestId('phase')).toHaveText('Done')
  await expect(page.getByTestId('output')).toContainText(/\w+/)
  const latencies = await page.evaluate(() => performance.getEntriesByName('stream-token').map((e) => e.duration))
  expect(latencies.length).toBeGreaterThan(0)
  test.info().annotations.push({ type: 'stream-token-ms', description: JSON.stringify(summary(latencies)) })

  // A long one goes to the queue and its result arrives through the socket.
  await page.getByRole('radio', { name: /Article/ }).check()
  await page.getByLabel('Topic', { exact: true }).fill('Volcanoes of Kamchatka')
  const queued = page.waitForResponse((r) => r.url().endsWith('/api/generate/tasks') && r.status() === 202)
  await page.getByRole('button', { name: 'Generate', exact: true }).click()
  await queued
  // Well before the fallback poll (15 s): the socket brought it.
  await expect(page.getByTestId('phase')).toHaveText('Done', { timeout: 10_000 })
  await expect(page.getByTestId('output')).toContainText(/\w+/)
  await expect(page.getByRole('status').filter({ hasText: /Volcanoes|Article|ready/i }).first()).toBeVisible()

  // Both are in the library, and search finds each.
  await nav(page, 'Library')
  // The new page's content takes the focus (screen readers announce it; Tab starts there).
  await expect(page.locator('#main')).toBeFocused()
  await expect(page.getByTestId('document')).toHaveCount(2)
  await page.getByLabel('Search').fill('Kamchatka')
  await expect(page.getByTestId('document')).toHaveCount(1)
  await expect(page.getByTestId('document')).toContainText('Kamchatka')
  await page.getByLabel('Search').fill('Photosynthesis')
  await expect(page.getByTestId('document')).toHaveCount(1)
  await expect(page.getByTestId('document')).toContainText('Photosynthesis')
  await page.getByTestId('document').getByRole('link').first().click()
  await expect(page.getByTestId('text')).toContainText(/\w+/)

  // The locked function says why and where to go.
  await nav(page, 'Generate')
  await page.getByRole('radio', { name: /Lesson plan/ }).check()
  await expect(page.getByTestId('locked')).toContainText('Unavailable — subscribe to a plan')

  // Top up, subscribe; the function unlocks.
  await page.getByRole('link', { name: 'See plans' }).click()
  await page.getByLabel('Amount').fill('1000')
  await page.getByRole('button', { name: 'Top up' }).click()
  // The sandbox's hosted page stands in for the provider's: pay there, come back.
  await expect(page).toHaveURL(/\/pay\/sandbox\//)
  await expect(page.getByTestId('pay-amount')).toHaveText('₽1,000.00')
  await page.getByRole('button', { name: 'Pay ₽1,000.00' }).click()
  await expect(page.getByTestId('checkout-status')).toHaveText('Payment received: ₽1,000.00 is on your balance.')
  await expect(page.getByTestId('balance')).toHaveText('₽1,000.00')
  await page.getByRole('button', { name: 'Subscribe' }).first().click()
  await expect(page.getByTestId('current-plan')).toContainText('Basic')
  await expect(page.getByTestId('balance')).toHaveText('₽210.00')
  const month = new Intl.DateTimeFormat('en', { month: 'long', year: 'numeric', timeZone: 'UTC' }).format(new Date())
  await expect(page.getByRole('cell', { name: `Charge — Basic, ${month}` })).toBeVisible()
  await nav(page, 'Generate')
  await page.getByRole('radio', { name: /Lesson plan/ }).check()
  await expect(page.getByTestId('locked')).toHaveCount(0)
  await expect(page.getByRole('button', { name: 'Generate', exact: true })).toBeDisabled()
  await page.getByLabel('Topic', { exact: true }).fill('Fractions')
  await expect(page.getByRole('button', { name: 'Generate', exact: true })).toBeEnabled()

  // Notifications: the finished task and the payment, live in the bell; all read.
  await expect(page.getByTestId('unread')).toBeVisible()
  await page.getByRole('link', { name: /Notifications/ }).click()
  await expect(page.getByTestId('notification').first()).toBeVisible()
  await page.getByRole('button', { name: 'Mark all as read' }).click()
  await expect(page.getByTestId('unread')).toHaveCount(0)

  // Sign out everywhere: back to sign-in, and the session is gone on reload.
  await nav(page, 'Account')
  await page.getByRole('button', { name: 'Sign out everywhere' }).click()
  await expect(page).toHaveURL(/\/signin/)
  await page.goto('/library')
  await expect(page).toHaveURL(/\/signin/)
})

test('a person takes a copy of all their data away', async ({ page }) => {
  const email = await signUp(page)
  await nav(page, 'Account')
  const section = page.locator('#your-data')
  await section.getByRole('button', { name: 'Prepare a copy of my data' }).click()
  await expect(section.getByText('Ready', { exact: true })).toBeVisible({ timeout: 30_000 })
  await expect(section.getByRole('button', { name: 'Prepare a copy of my data' })).toBeEnabled()

  // The emailed link opens the account page at that copy; the download needs the session.
  const link = await mailedLink(email, '/account?export=')
  await page.goto(link)
  await expect(section.getByText('Here is the copy from your email')).toBeVisible()
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    section.getByRole('button', { name: 'Download' }).click(),
  ])
  expect(download.suggestedFilename()).toMatch(/^skillup-data-\d{4}-\d{2}-\d{2}\.zip$/)
  const path = await download.path()
  const head = readFileSync(path).subarray(0, 2).toString('latin1')
  expect(head).toBe('PK')
})

test('a person makes an API key, uses it from an OpenAI client, and revokes it', async ({ page }) => {
  await signUp(page)
  await nav(page, 'Account')
  const section = page.locator('#api-keys')
  await expect(section.getByText('You have no API keys yet.')).toBeVisible()
  await expect(section.getByTestId('base-url')).toHaveText(/\/v1$/)
  await section.getByLabel('Key name').fill('My script')
  await section.getByLabel('Expires').selectOption({ label: 'In 90 days' })
  await section.getByRole('button', { name: 'Create key' }).click()
  const secret = await section.getByLabel('The new API key').inputValue()
  expect(secret).toMatch(/^sk-skillup-[A-Za-z0-9_-]{43}$/)
  const listed = section.getByTestId('api-key')
  await expect(listed).toHaveCount(1)
  await expect(listed).toContainText('My script')
  await expect(listed).toContainText(secret.slice(0, 17))
  await expect(listed).toContainText('never used')

  // What an OpenAI client sends, with the key.
  const ask = () =>
    page.request.post('/v1/chat/completions', {
      headers: { authorization: `Bearer ${secret}` },
      data: { model: 'skillup/quiz', messages: [{ role: 'user', content: 'Photosynthesis' }] },
    })
  const answer = await ask()
  expect(answer.status()).toBe(200)
  const body = await answer.json()
  expect(body.object).toBe('chat.completion')
  expect(body.choices[0].message.content).toContain('Photosynthesis')
  await page.reload()
  await expect(section.getByTestId('api-key')).toContainText('last used')
  // The answer is in the library, marked as made through the API.
  await nav(page, 'Library')
  await expect(page.getByTestId('document')).toHaveCount(1)
  await expect(page.getByTestId('document')).toContainText('API')
  await nav(page, 'Account')

  await section.getByRole('button', { name: 'Revoke the key “My script”' }).click()
  await expect(section.getByText('You have no API keys yet.')).toBeVisible()
  const refused = await ask()
  expect(refused.status()).toBe(401)
  expect((await refused.json()).error.code).toBe('invalid_api_key')
})

function summary(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b)
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!
  return { n: s.length, p50: at(0.5), p95: at(0.95), max: s[s.length - 1] }
}
