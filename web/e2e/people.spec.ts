// The console in Russian, on a phone, and by keyboard and screen reader: axe-core finds no
// serious or critical violation on any page; screenshots of the main pages in both languages
// and both themes go to docs/screenshots.
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

async function generateOne(page: Page, topic: string, fn: RegExp) {
  await page.getByLabel(/^\s*(Topic|Тема)\s*$/).fill(topic)
  await page.getByRole('radio', { name: fn }).check()
  await page.getByRole('button', { name: /^(Generate|Сгенерировать)$/ }).click()
  await expect(page.getByTestId('phase')).toHaveText(/^(Done|Готово)$/)
}

test.describe('in Russian', () => {
  test.use({ locale: 'ru-RU' })

  test('the whole console speaks Russian, refusals and errors included', async ({ page }) => {
    await page.goto('/signin')
    await expect(page.getByRole('heading', { name: 'Вход' })).toBeVisible()
    await expect(page.locator('html')).toHaveAttribute('lang', 'ru')
    await page.getByLabel('Эл. почта').fill('nobody@example.com')
    await page.getByLabel('Пароль').fill('wrong password here')
    await page.getByRole('button', { name: 'Войти' }).click()
    await expect(page.getByRole('alert')).toHaveText('Неверная почта или пароль.')
    await signUp(page, 'Анна')
    await generateOne(page, 'Фотосинтез', /Тест/)
    await page.getByRole('radio', { name: /План урока/ }).check()
    await expect(page.getByTestId('locked')).toContainText('Недоступно — оформите подписку')
    await nav(page, 'Тарифы и оплата')
    await expect(page.getByRole('heading', { name: 'Тарифы и оплата' })).toBeVisible()
    await expect(page.getByText(/300 генераций/)).toBeVisible()
  })
})

test.describe('on a phone', () => {
  test.use({ viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true })

  test('every page fits a 360 px screen and works', async ({ page }) => {
    await signUp(page)
    await generateOne(page, 'Tides', /Summary/)
    for (const [link, heading] of [['Library', 'Library'], ['Plans & billing', 'Plans & billing'], ['Account', 'Account'], ['Generate', 'Generate']] as const) {
      await nav(page, link)
      await expect(page.getByRole('heading', { name: heading, exact: true }).first()).toBeVisible()
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
      expect(overflow, `${link} scrolls sideways`).toBeLessThanOrEqual(0)
    }
  })
})

for (const locale of ['en', 'ru'] as const) {
  for (const scheme of ['light', 'dark'] as const) {
    test.describe(`${locale}, ${scheme}`, () => {
      test.use({ locale: locale === 'ru' ? 'ru-RU' : 'en-US', colorScheme: scheme, viewport: { width: 1280, height: 860 } })

      test(`every page passes axe and the main ones are pictured (${locale}, ${scheme})`, async ({ page }) => {
        mkdirSync(shots, { recursive: true })
        const shot = (name: string) => page.screenshot({ path: `${shots}${name}-${locale}-${scheme}.png` })
        for (const path of ['/signin', '/signup', '/forgot-password']) {
          await page.goto(path)
          await expect(page.getByRole('heading', { level: 1 })).toBeVisible()
          await axe(page, path)
        }
        await page.goto('/signin')
        await shot('signin')
        await signUp(page, locale === 'ru' ? 'Анна' : 'Ada')
        await generateOne(page, locale === 'ru' ? 'Вулканы Камчатки' : 'Volcanoes of Kamchatka', locale === 'ru' ? /Конспект/ : /Summary/)
        await axe(page, '/generate')
        await shot('generate')
        await nav(page, locale === 'ru' ? 'Библиотека' : 'Library')
        await expect(page.getByTestId('document')).toHaveCount(1)
        await axe(page, '/library')
        await shot('library')
        await page.getByTestId('document').getByRole('link').first().click()
        await expect(page.getByTestId('text')).toBeVisible()
        await axe(page, '/library/{id}')
        await nav(page, locale === 'ru' ? 'Тарифы и оплата' : 'Plans & billing')
        await expect(page.getByTestId('current-plan')).toBeVisible()
        await axe(page, '/billing')
        await shot('billing')
        await page.goto('/notifications')
        await expect(page.getByRole('heading', { level: 1 })).toBeVisible()
        await expect(page.getByTestId('push')).toContainText(locale === 'ru' ? 'Push-уведомления на этом устройстве выключены' : 'Push notifications are off on this device')
        await axe(page, '/notifications')
        await shot('notifications')
        await page.goto('/account')
        await expect(page.getByRole('heading', { level: 1 })).toBeVisible()
        const data = page.locator('#your-data')
        await data.getByRole('button', { name: locale === 'ru' ? 'Подготовить копию моих данных' : 'Prepare a copy of my data' }).click()
        await expect(data.getByRole('button', { name: locale === 'ru' ? 'Скачать' : 'Download' })).toBeVisible({ timeout: 30_000 })
        const keys = page.locator('#api-keys')
        await keys.getByLabel(locale === 'ru' ? 'Название ключа' : 'Key name').fill(locale === 'ru' ? 'Мой скрипт' : 'My script')
        await keys.getByRole('button', { name: locale === 'ru' ? 'Создать ключ' : 'Create key' }).click()
        await expect(keys.getByTestId('new-key')).toBeVisible()
        await axe(page, '/account')
        await data.screenshot({ path: `${shots}account-data-${locale}-${scheme}.png` })
        await keys.screenshot({ path: `${shots}account-keys-${locale}-${scheme}.png` })
      })
    })
  }
}
