import { describe, expect, it } from 'vitest'
import { formatMoney, formatShare, formatWait, toMajor, toMinor } from '~/utils/format'
import { fileNameOf } from '~/composables/useExport'

describe('money and names', () => {
  it('formats minor units by the currency in the reader locale', () => {
    expect(formatMoney('en', { currency: 'USD', amount_minor: '1510' })).toBe('$15.10')
    expect(formatMoney('ru', { currency: 'USD', amount_minor: '1510' }).replace(/\s/g, ' ')).toBe('15,10 $')
    expect(formatMoney('en', { currency: 'JPY', amount_minor: 500 })).toBe('¥500')
    expect(formatMoney('en', { currency: 'RUB', amount_minor: '79000' })).toBe('₽790.00')
    expect(formatMoney('ru', { currency: 'RUB', amount_minor: '79000' }).replace(/\s/g, ' ')).toBe('790,00 ₽')
    expect(formatMoney('en', { amount_minor: '100' })).toBe('₽1.00')
    expect(toMinor('en', 'USD', 12.5)).toBe(1250)
    expect(toMajor('en', { currency: 'RUB', amount_minor: '79000' })).toBe(790)
    expect(toMajor('en', { currency: 'JPY', amount_minor: 500 })).toBe(500)
  })

  it('words service levels: waits and shares', () => {
    expect(formatWait('en', 60_000)).toBe('1 min')
    expect(formatWait('en', 15_000)).toBe('15 sec')
    expect(formatWait('ru', 15_000)).toBe('15 с')
    expect(formatWait('en', 1_500)).toBe('1.5 sec')
    expect(formatShare('en', 9_950)).toBe('99.5%')
    expect(formatShare('ru', 9_900).replace(/\s/g, ' ')).toBe('99 %')
  })

  it('reads the download name the server gives, Cyrillic included', () => {
    const d = "attachment; filename=\"Fotosintez.md\"; filename*=UTF-8''%D0%A4%D0%BE%D1%82%D0%BE%D1%81%D0%B8%D0%BD%D1%82%D0%B5%D0%B7.md"
    expect(fileNameOf(d, 'x.md')).toBe('Фотосинтез.md')
    expect(fileNameOf('attachment; filename="a.txt"', 'x')).toBe('a.txt')
    expect(fileNameOf(null, 'x.md')).toBe('x.md')
  })
})
