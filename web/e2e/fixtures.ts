// The tests' helpers: the running platform's URL (from global setup), the emails it wrote, and
// a person who signed up through the console.
import { test as base, expect, type Page } from '@playwright/test'
export type { Page }
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

export const PASSWORD = 'correct horse battery staple'

export const test = base.extend<object>({
  baseURL: async ({}, use) => {
    await use(process.env.E2E_SKILLUP_URL)
  },
})

export { expect }

export function unique(): string {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
}

/** The newest link to `path` in the mail to `to`, waiting for the mail to be written. */
export async function mailedLink(to: string, path: string): Promise<string> {
  const outbox = join(process.env.E2E_DATA_DIR!, 'outbox')
  for (let i = 0; i < 100; i++) {
    const mails = readdirSync(outbox, { withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(outbox, e.name))
      .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
    for (const file of mails) {
      const text = readFileSync(file, 'utf8')
      if (!text.includes(`To: ${to}`)) continue
      // Links a person reads: in the text, not the headers (List-Unsubscribe is a client's).
      const body = text.slice(text.indexOf('\r\n\r\n'))
      const m = new RegExp(`https?://[^\\s]+${path.replace(/[?]/g, '\\?')}[^\\s]+`).exec(body)
      if (m) return new URL(m[0]).pathname + new URL(m[0]).search
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`no mail to ${to} with ${path}`)
}

/** Signs a new person up through the console and confirms the address; lands on Generate. */
export async function signUp(page: Page, name = 'Ada'): Promise<string> {
  const email = `e2e-${unique()}@example.com`
  await page.goto('/signup')
  await page.getByLabel(/^(Name|Имя)/).fill(name)
  await page.getByLabel(/^(Email|Эл. почта)/).fill(email)
  await page.getByLabel(/^(New password|Новый пароль)/).fill(PASSWORD)
  await page.getByRole('button', { name: /Create account|Создать аккаунт/ }).click()
  await expect(page).toHaveURL(/\/generate$/)
  const link = await mailedLink(email, '/verify-email?token=')
  await page.goto(link)
  await expect(page.getByText(/Your email is confirmed|Адрес подтверждён/)).toBeVisible()
  await page.getByRole('link', { name: /Continue|Продолжить/ }).click()
  await expect(page).toHaveURL(/\/generate$/)
  return email
}

/** A link of the main navigation. */
export async function nav(page: Page, name: string | RegExp): Promise<void> {
  await page.getByRole('navigation').getByRole('link', { name, exact: typeof name === 'string' }).click()
}
