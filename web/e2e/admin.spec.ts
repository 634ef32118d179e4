// The Admin section as an operator meets it: `skillup admin grant` makes the first admin of the
// running platform; after signing in again the Admin link appears; the admin finds a person,
// deactivates them, credits their balance, refunds part of their payment to the card and reads
// it all back in the audit log — in both
// languages and both themes (screenshots in docs/screenshots), with axe-core finding nothing
// serious. Someone who is no admin sees neither the link nor the section.
import AxeBuilder from '@axe-core/playwright'
import { execFileSync } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { test, expect, nav, signUp, unique, PASSWORD, type Page } from './fixtures'

const shots = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url))

async function axe(page: Page, what: string) {
  const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze()
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
  expect(bad.map((v) => `${what}: ${v.id} (${v.impact}) ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([])
}

/** `skillup admin grant EMAIL` against the platform the tests run on, as operator `e2e-ops`. */
function grant(email: string) {
  execFileSync(
    process.env.E2E_SKILLUP_BIN!,
    ['admin', 'grant', email, '--reason', 'e2e operator', '--addr', process.env.E2E_GRPC_ADDR!, '--data-dir', process.env.E2E_DATA_DIR!],
    { env: { ...process.env, USER: 'e2e-ops' }, stdio: ['ignore', 'pipe', 'inherit'] },
  )
}

const words = {
  en: { signOut: 'Sign out', email: 'Email', password: 'Password', signIn: 'Sign in', admin: 'Admin', manage: /^Manage /, reason: /^Reason/, deactivate: 'Deactivate', amount: /^Amount/, adjust: 'Adjust balance', audit: 'Audit log', accountsTab: 'Accounts', queue: 'Queue', plans: 'Plans', newPlan: 'New plan', code: /^Code/, title: /^Title/, price: /^Price per period/, save: 'Save', archive: /^Archive /, planCreated: /is on offer/, planArchived: /is archived/, noDead: 'No task gave up.', show: 'Show', deactivated: /is deactivated/, adjusted: /Adjusted by/, refundAmount: /^Refund to card \(at most/, refund: 'Refund to card', refunded: /₽4\.00 went back to the card/, refundLine: 'Refund of ₽4.00: returned', actions: ['Plan archived', 'Plan created', 'Refund to card', 'Balance credited', 'Account deactivated'] },
  ru: { signOut: 'Выйти', email: 'Эл. почта', password: 'Пароль', signIn: 'Войти', admin: 'Администрирование', manage: /^Управлять /, reason: /^Причина/, deactivate: 'Отключить', amount: /^Сумма/, adjust: 'Изменить баланс', audit: 'Журнал действий', accountsTab: 'Учётные записи', queue: 'Очередь', plans: 'Тарифы', newPlan: 'Новый тариф', code: /^Код/, title: /^Название/, price: /^Цена за период/, save: 'Сохранить', archive: /^В архив /, planCreated: /в продаже/, planArchived: /в архиве/, noDead: 'Невыполненных задач нет.', show: 'Показать', deactivated: /отключена/, adjusted: /Изменено на/, refundAmount: /^Вернуть на карту \(не больше/, refund: 'Вернуть на карту', refunded: /4,00\s₽ возвращено на карту/, refundLine: /Возврат 4,00\s₽: возвращено/, actions: ['Тариф убран в архив', 'Создан тариф', 'Возврат на карту', 'Баланс пополнен', 'Учётная запись отключена'] },
} as const

for (const locale of ['en', 'ru'] as const) {
  for (const scheme of ['light', 'dark'] as const) {
    test.describe(`${locale}, ${scheme}`, () => {
      test.use({ locale: locale === 'ru' ? 'ru-RU' : 'en-US', colorScheme: scheme, viewport: { width: 1280, height: 900 } })

      test(`an admin manages an account and reads the audit log (${locale}, ${scheme})`, async ({ page, request }) => {
        const w = words[locale]
        mkdirSync(shots, { recursive: true })
        // The person the admin will act on.
        const victim = `victim-${unique()}@example.com`
        const made = await request.post('/api/auth/register', { data: { email: victim, password: PASSWORD } })
        expect(made.status()).toBe(201)
        // They paid 10 in on the sandbox's page (through the API here).
        const signedIn = await request.post('/api/auth/login', { data: { email: victim, password: PASSWORD } })
        const token = (await signedIn.json()).access_token as string
        const auth = { Authorization: `Bearer ${token}` }
        const checkout = await request.post('/api/payments/checkouts', { headers: { ...auth, 'Idempotency-Key': `co-${unique()}` }, data: { amount_minor: 1000 } })
        expect(checkout.status()).toBe(201)
        const paid = await request.post(`/api/payments/sandbox/checkouts/${(await checkout.json()).id}:complete`, { headers: auth, data: { outcome: 'SANDBOX_OUTCOME_PAID' } })
        expect((await paid.json()).status).toBe('CHECKOUT_STATUS_SUCCEEDED')

        const email = await signUp(page, locale === 'ru' ? 'Анна' : 'Ann')
        // Not an admin yet: no link, and the section says so.
        await expect(page.getByRole('navigation').getByRole('link', { name: w.admin })).toHaveCount(0)
        await page.goto('/admin')
        await expect(page.getByTestId('not-admin')).toBeVisible()

        grant(email)
        await page.getByRole('button', { name: w.signOut, exact: true }).click()
        await expect(page).toHaveURL(/\/signin/)
        await page.getByLabel(w.email).fill(email)
        await page.getByLabel(w.password, { exact: true }).fill(PASSWORD)
        await page.getByRole('button', { name: w.signIn, exact: true }).click()
        await expect(page).toHaveURL(/\/generate$/)
        await nav(page, w.admin)
        await expect(page.getByRole('heading', { level: 1, name: w.admin })).toBeVisible()

        await page.getByRole('searchbox').fill(victim.slice(0, 14))
        await page.getByRole('searchbox').press('Enter')
        await expect(page.getByTestId('admin-user')).toHaveCount(1)
        await page.getByRole('button', { name: w.manage }).click()
        await page.getByLabel(w.reason).fill(locale === 'ru' ? 'рассылка спама' : 'sends spam')
        await page.getByRole('button', { name: w.deactivate, exact: true }).click()
        await expect(page.getByRole('status').filter({ hasText: w.deactivated })).toBeVisible()
        await page.getByLabel(w.amount).fill('5')
        await page.getByRole('button', { name: w.adjust }).click()
        await expect(page.getByRole('status').filter({ hasText: w.adjusted })).toBeVisible()
        // 4 of their 10 back to the card.
        await expect(page.getByTestId('admin-checkout')).toHaveCount(1)
        await page.getByLabel(w.refundAmount).fill('4')
        await page.getByRole('button', { name: w.refund, exact: true }).click()
        await expect(page.getByRole('status').filter({ hasText: w.refunded })).toBeVisible()
        await expect(page.getByTestId('admin-checkout')).toContainText(w.refundLine)
        await axe(page, '/admin accounts')
        await page.screenshot({ path: `${shots}admin-accounts-${locale}-${scheme}.png` })

        // Plans: a new one on offer at once, then archived.
        await page.getByRole('tab', { name: w.plans }).click()
        await page.getByRole('button', { name: w.newPlan }).click()
        const code = `p${unique()}`
        await page.getByLabel(w.code).fill(code)
        await page.getByLabel(w.title, { exact: false }).fill(`Team ${code}`)
        await page.getByLabel(w.price).fill('12.50')
        await page.getByRole('button', { name: w.save, exact: true }).click()
        await expect(page.getByRole('status').filter({ hasText: w.planCreated })).toBeVisible()
        const offered = await request.get('/api/subscriptions/plans')
        expect(((await offered.json()).plans as Array<{ id: string }>).map((p) => p.id)).toContain(code)
        await axe(page, '/admin plans')
        await page.screenshot({ path: `${shots}admin-plans-${locale}-${scheme}.png`, fullPage: true })
        await page.getByTestId('admin-plan').filter({ hasText: code }).getByRole('button', { name: w.archive }).click()
        await expect(page.getByRole('status').filter({ hasText: w.planArchived })).toBeVisible()
        const left = await request.get('/api/subscriptions/plans')
        expect(((await left.json()).plans as Array<{ id: string }>).map((p) => p.id)).not.toContain(code)

        // The queue: its depths, and no task that gave up.
        await page.getByRole('tab', { name: w.queue }).click()
        await expect(page.getByTestId('queue-stats')).toBeVisible()
        await expect(page.getByText(w.noDead)).toBeVisible()
        await axe(page, '/admin queue')

        await page.getByRole('tab', { name: w.audit }).click()
        const entries = page.getByTestId('audit-entry')
        // Entries are stored moments after each change (auth consumes them): ask again until
        // the last one is there. Newest first: the plan archived, created, the refund to the
        // card, the balance credited, the account deactivated — by this admin.
        await expect(async () => {
          await page.getByRole('button', { name: w.show, exact: true }).click()
          await expect(entries.first()).toContainText(w.actions[0], { timeout: 1_000 })
        }).toPass()
        for (const [i, action] of w.actions.entries()) {
          await expect(entries.nth(i)).toContainText(action)
          await expect(entries.nth(i)).toContainText(email)
        }
        await expect(page.getByText('operator:e2e-ops').first()).toBeVisible()
        await axe(page, '/admin audit')
        await page.screenshot({ path: `${shots}admin-audit-${locale}-${scheme}.png`, fullPage: true })

        // On a phone: every tab fits 360 px (pictured: the accounts).
        await page.setViewportSize({ width: 360, height: 740 })
        for (const tab of [w.audit, w.queue, w.plans, w.accountsTab]) {
          await page.getByRole('tab', { name: tab }).click()
          await expect(page.getByRole('tab', { name: tab })).toHaveAttribute('aria-selected', 'true')
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
          expect(overflow, `${tab} scrolls sideways`).toBeLessThanOrEqual(0)
        }
        await page.screenshot({ path: `${shots}admin-phone-${locale}-${scheme}.png`, fullPage: true })

        // The person is signed out and cannot sign in.
        const login = await request.post('/api/auth/login', { data: { email: victim, password: PASSWORD } })
        expect(login.status()).toBe(403)
      })
    })
  }
}
