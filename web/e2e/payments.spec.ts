// Paying money in as a person meets it: "Top up" opens a checkout and sends them to the
// provider's hosted page (the sandbox's, on `skillup up`); declining the card there brings them
// back to a note that nothing was charged; paying brings them back to the money on their balance
// — credited once the provider's word is in, never by the console. Both languages, both themes
// (screenshots in docs/screenshots), axe-core finding nothing serious.
import AxeBuilder from '@axe-core/playwright'
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { test, expect, nav, signUp, type Page } from './fixtures'

const shots = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url))

async function axe(page: Page, what: string) {
  const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze()
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
  expect(bad.map((v) => `${what}: ${v.id} (${v.impact}) ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([])
}

const words = {
  en: { billing: 'Plans & billing', amount: 'Amount', topUp: 'Top up', pay: 'Pay ₽12.50', decline: 'Simulate a declined card', paid: 'Payment received: ₽12.50 is on your balance.', canceled: 'The payment of ₽12.50 was canceled; nothing was charged.', balance: '₽12.50', zero: '₽0.00', canceledRow: 'Canceled', paidRow: 'Paid', continuePayment: 'Continue payment', cancel: 'Cancel and go back', promise: 'Queued work starts within 1 min (95%)', levels: 'Service levels', noneYet: 'no generations yet', ledger: 'Top-up — test payment (sandbox)' },
  ru: { billing: 'Тарифы и оплата', amount: 'Сумма', topUp: 'Пополнить', pay: /^Оплатить 12,50\s₽$/, decline: 'Сымитировать отказ карты', paid: /^Оплата получена: 12,50\s₽ зачислено на баланс\.$/, canceled: /^Оплата 12,50\s₽ отменена; деньги не списаны\.$/, balance: /^12,50\s₽$/, zero: /^0,00\s₽$/, canceledRow: 'Отменено', paidRow: 'Оплачено', continuePayment: 'Продолжить оплату', cancel: 'Отменить и вернуться', promise: 'Задачи из очереди стартуют за 1 мин (95 %)', levels: 'Уровень сервиса', noneYet: 'генераций пока нет', ledger: 'Пополнение — тестовая оплата (песочница)' },
} as const

for (const locale of ['en', 'ru'] as const) {
  for (const scheme of ['light', 'dark'] as const) {
    test.describe(`${locale}, ${scheme}`, () => {
      test.use({ locale: locale === 'ru' ? 'ru-RU' : 'en-US', colorScheme: scheme, viewport: { width: 1280, height: 900 } })

      test(`a person pays in on the hosted page (${locale}, ${scheme})`, async ({ page }) => {
        const w = words[locale]
        mkdirSync(shots, { recursive: true })
        await signUp(page, locale === 'ru' ? 'Анна' : 'Ann')
        await nav(page, w.billing)

        // A declined card: back on billing, nothing charged.
        await page.getByLabel(w.amount).fill('12.50')
        await page.getByRole('button', { name: w.topUp }).click()
        await expect(page).toHaveURL(/\/pay\/sandbox\/[0-9a-f-]{36}$/)
        await expect(page.getByRole('button', { name: w.pay })).toBeVisible()
        await axe(page, 'the hosted page')
        await page.screenshot({ path: `${shots}pay-sandbox-${locale}-${scheme}.png` })
        await page.getByRole('button', { name: w.decline }).click()
        await expect(page.getByTestId('checkout-status')).toHaveText(w.canceled)
        await expect(page.getByTestId('balance')).toHaveText(w.zero)
        await expect(page.getByTestId('my-checkout').first()).toContainText(w.canceledRow)

        // Paid: the balance has it, the ledger shows the top-up.
        await page.getByLabel(w.amount).fill('12.50')
        await page.getByRole('button', { name: w.topUp }).click()
        await expect(page).toHaveURL(/\/pay\/sandbox\/[0-9a-f-]{36}$/)
        const hosted = page.url()
        await page.getByRole('button', { name: w.pay }).click()
        await expect(page.getByTestId('checkout-status')).toHaveText(w.paid)
        await expect(page.getByTestId('balance')).toHaveText(w.balance)
        await expect(page).toHaveURL(/\/billing$/)
        await expect(page.getByTestId('my-checkout').first()).toContainText(w.paidRow)

        // The ledger's line in the reader's language.
        await expect(page.getByRole('cell', { name: w.ledger })).toBeVisible()
        // What the plans promise, and how each is doing this month (nobody generated yet).
        await expect(page.getByTestId('promise').first()).toHaveText(w.promise)
        await expect(page.getByRole('heading', { name: w.levels })).toBeVisible()
        const record = page.getByTestId('service-record')
        // (This month's and the closed ones', which depend on the day the server started.)
        await expect(record.first()).toBeVisible()
        await expect(record.filter({ hasText: w.noneYet }).first()).toBeVisible()
        await axe(page, 'billing after paying')
        await page.screenshot({ path: `${shots}pay-done-${locale}-${scheme}.png`, fullPage: true })

        // Given up on the provider's page without a word: the payment waits, and the person
        // can go back to it from billing.
        await page.getByLabel(w.amount).fill('3')
        await page.getByRole('button', { name: w.topUp }).click()
        await expect(page).toHaveURL(/\/pay\/sandbox\//)
        await page.goto('/billing')
        await page.getByRole('button', { name: w.continuePayment }).click()
        await expect(page).toHaveURL(/\/pay\/sandbox\//)
        await page.getByRole('button', { name: w.cancel }).click()
        await expect(page.getByTestId('checkout-status')).toBeVisible()
        await page.goto('/billing')
        await expect(page.getByTestId('my-checkout')).toHaveCount(3)
        await axe(page, 'billing with its payments')

        // The hosted page of a finished checkout says so, and pays nothing again.
        await page.goto(hosted)
        await expect(page.getByTestId('pay-done')).toBeVisible()
        await expect(page.getByRole('button', { name: w.pay })).toHaveCount(0)
      })
    })
  }
}
