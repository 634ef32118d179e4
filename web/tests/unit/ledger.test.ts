import { describe, expect, it } from 'vitest'
import en from '../../i18n/locales/en.json'
import ru from '../../i18n/locales/ru.json'
import { ledgerLine, monthOf } from '~/utils/ledger'

const title = (p: string) => ({ basic: 'Basic', premium: 'Premium' } as Record<string, string>)[p] ?? p
const month = (m: string) => monthOf('ru', m)

describe('ledger lines', () => {
  it('word the shapes the services write, and keep anything else as written', () => {
    expect(ledgerLine('top-up (sandbox)', title, month)).toEqual({ key: 'ledger.sandbox', values: {} })
    expect(ledgerLine('top-up (yookassa)', title, month)).toEqual({ key: 'ledger.via', values: { provider: 'YooKassa' } })
    expect(ledgerLine('subscription:basic:renewal', title, month)).toEqual({ key: 'ledger.renewal', values: { plan: 'Basic' } })
    expect(ledgerLine('subscription:premium:2026-12', title, month)).toEqual({ key: 'ledger.subscription', values: { plan: 'Premium', month: 'декабрь 2026 г.' } })
    expect(ledgerLine('service credit: the Basic plan missed its service level in 2026-11', title, month))
      .toEqual({ key: 'ledger.credit', values: { plan: 'Basic', month: 'ноябрь 2026 г.' } })
    expect(ledgerLine('adjustment: goodwill for the outage', title, month)).toEqual({ text: 'goodwill for the outage' })
    expect(ledgerLine('refund to card: asked by the customer', title, month)).toEqual({ text: 'asked by the customer' })
    expect(ledgerLine('something else', title, month)).toEqual({ text: 'something else' })
  })

  it('has every key it uses in both languages', () => {
    for (const key of ['sandbox', 'via', 'renewal', 'subscription', 'credit']) {
      expect((en.ledger as Record<string, string>)[key], key).toBeTruthy()
      expect((ru.ledger as Record<string, string>)[key], key).toBeTruthy()
    }
    expect(monthOf('en', '2026-11')).toBe('November 2026')
  })
})
