import { describe, expect, it } from 'vitest'
import en from '../../i18n/locales/en.json'
import ru from '../../i18n/locales/ru.json'

function keys(o: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(o).flatMap(([k, v]) => (v && typeof v === 'object' ? keys(v as Record<string, unknown>, `${prefix}${k}.`) : [`${prefix}${k}`]))
}

function at(o: Record<string, unknown>, path: string): string {
  return path.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], o) as string
}

describe('the catalogues', () => {
  it('say the same things in English and Russian', () => {
    expect(keys(ru).sort()).toEqual(keys(en).sort())
  })

  it('use the same placeholders in both, and Russian plurals have their three forms', () => {
    for (const key of keys(en)) {
      const names = (s: string) => [...new Set([...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]))].sort()
      expect(names(at(ru, key)), key).toEqual(names(at(en, key)))
      const forms = at(en, key).split(' | ').length
      if (forms > 1) expect(at(ru, key).split(' | ').length, key).toBe(3)
    }
  })

  it('never use the characters vue-i18n reads as syntax', () => {
    for (const [name, c] of [['en', en], ['ru', ru]] as const) {
      for (const key of keys(c)) expect(at(c, key), `${name}: ${key}`).not.toMatch(/[@$]|\{[^a-z}]/)
    }
  })
})
