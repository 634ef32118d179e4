// Sessions done right: the access token in memory only, the refresh token in an HttpOnly cookie,
// silent renewal, one refresh for all tabs, and a session ended elsewhere ends here too.
import { test, expect, nav, signUp, PASSWORD } from './fixtures'

test('the refresh token is never readable by the page', async ({ page, context }) => {
  await signUp(page)
  expect(await page.evaluate(() => document.cookie)).not.toContain('skillup_refresh')
  const cookies = await context.cookies()
  const refresh = cookies.filter((c) => c.name === 'skillup_refresh')
  expect(refresh.length).toBeGreaterThan(0)
  for (const c of refresh) {
    expect(c.httpOnly).toBe(true)
    expect(c.sameSite).toBe('Strict')
    expect(c.path.startsWith('/api/auth/')).toBe(true)
  }
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))
  expect(stored).not.toMatch(/eyJ|refresh/)
  // A reload restores the session from the cookie alone.
  await page.reload()
  await expect(page.getByRole('heading', { name: 'Generate' })).toBeVisible()
})

test('the access token is renewed silently before it expires', async ({ page }) => {
  await page.clock.install()
  await signUp(page)
  const refreshed = page.waitForResponse((r) => r.url().endsWith('/api/auth/refresh') && r.status() === 200)
  // 55 s on: the renewal (due when a fifth of the 60 s life is left) runs on its own.
  await page.clock.fastForward('00:55')
  await refreshed
  await nav(page, 'Library')
  await expect(page).toHaveURL(/\/library$/)
  await expect(page.getByText('Nothing here yet')).toBeVisible()
})

test('an expired access token is renewed silently on the next call', async ({ page }) => {
  test.setTimeout(120_000)
  await page.clock.install()
  await signUp(page)
  // The page's clock stops, so its timer cannot renew early: the token really expires (60 s in
  // the test config; the server allows no grace on expiry). The edge then closes the live
  // socket (4401) and the page renews from the cookie — or, had it no socket, the next call's
  // 401 would (tests/unit/client.test.ts).
  const renewed = page.waitForResponse((r) => r.url().endsWith('/api/auth/refresh') && r.status() === 200, { timeout: 90_000 })
  await page.clock.pauseAt(Date.now() + 1_000)
  await page.waitForTimeout(62_000)
  await renewed
  await page.clock.resume()
  await nav(page, 'Library')
  await expect(page).toHaveURL(/\/library$/)
  await expect(page.getByText('Nothing here yet')).toBeVisible()
})

test('two tabs renewing at once share one refresh and both stay signed in', async ({ context }) => {
  await context.clock.install()
  const a = await context.newPage()
  await signUp(a)
  const b = await context.newPage()
  await b.goto('/library')
  await expect(b.getByRole('heading', { name: 'Library', exact: true })).toBeVisible()
  let refreshes = 0
  context.on('request', (r) => {
    if (r.url().endsWith('/api/auth/refresh')) refreshes++
  })
  // Both tabs' renewal timers come due at the same moment (48 s into the 60 s token). The jump
  // stops soon after: a fast-forward also fires every timer set during it that falls due before
  // its end, and the tab that waits for the other's token waits at most 5 s (a jump to 55 s fired
  // that bound at once, and the tab renewed a second time).
  await context.clock.fastForward('00:50')
  await expect.poll(() => refreshes).toBeGreaterThan(0)
  await a.waitForTimeout(1_000)
  expect(refreshes).toBe(1)
  await nav(a, 'Plans & billing')
  await expect(a.getByTestId('current-plan')).toBeVisible()
  await nav(b, 'Account')
  await expect(b.getByRole('heading', { name: 'Account', exact: true })).toBeVisible()
  await b.reload()
  await expect(b.getByRole('heading', { name: 'Account', exact: true })).toBeVisible()
})

test('signing out in one tab returns the other to sign-in', async ({ context }) => {
  const a = await context.newPage()
  await signUp(a)
  const b = await context.newPage()
  await b.goto('/library')
  await expect(b.getByRole('heading', { name: 'Library', exact: true })).toBeVisible()
  await a.getByRole('button', { name: 'Sign out' }).click()
  await expect(a).toHaveURL(/\/signin/)
  await expect(b).toHaveURL(/\/signin/)
})

test('a session revoked from another device ends here on the next call', async ({ page, browser }) => {
  const email = await signUp(page)
  const other = await browser.newContext({ baseURL: process.env.E2E_SKILLUP_URL })
  const there = await other.newPage()
  await there.goto('/signin')
  await there.getByLabel('Email').fill(email)
  await there.getByLabel('Password').fill(PASSWORD)
  await there.getByRole('button', { name: 'Sign in' }).click()
  await expect(there).toHaveURL(/\/generate$/)
  await nav(there, 'Account')
  await there.getByRole('button', { name: 'Sign out everywhere' }).click()
  await expect(there).toHaveURL(/\/signin/)
  await other.close()
  // Here: the access token is revoked at once; the refresh is refused; back to sign-in.
  await nav(page, 'Library')
  await expect(page).toHaveURL(/\/signin/)
})
