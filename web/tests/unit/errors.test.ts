import { describe, expect, it } from 'vitest'
import { ApiFailure, describe as describeError, failureOf } from '~/utils/errors'

const catalogue: Record<string, string> = {
  'errors.NETWORK': 'offline',
  'errors.RATE_LIMITED': 'slow down',
  'errors.RATE_LIMITED_WAIT': 'wait {seconds}',
  'errors.UNAVAILABLE': 'down',
  'errors.INVALID_CREDENTIALS': 'bad password',
  'errors.INVALID_FIELD': 'check {field}:',
  'errors.INVALID_ARGUMENT': 'check input',
  'errors.UNKNOWN': 'unknown',
  'fieldNames.password': 'Пароль',
}
const t = (k: string, named?: Record<string, unknown>) =>
  (catalogue[k] ?? k).replace(/\{(\w+)\}/g, (_, n: string) => String(named?.[n] ?? ''))
const has = (k: string) => k in catalogue

describe('errors for people', () => {
  it('reads the edge error shape and Retry-After', () => {
    const f = failureOf(429, { error: { code: 'RATE_LIMITED', message: 'x' } }, new Headers({ 'retry-after': '7' }))
    expect(f).toBeInstanceOf(ApiFailure)
    expect([f.code, f.retryAfter, f.retryable]).toEqual(['RATE_LIMITED', 7, true])
    expect(describeError(f, t, has)).toBe('wait 7')
  })

  it('never shows raw JSON: an unknown body becomes a code', () => {
    expect(failureOf(502, '<html>').code).toBe('UNAVAILABLE')
    expect(describeError(failureOf(502, '<html>'), t, has)).toBe('down')
    expect(describeError(new TypeError('Failed to fetch'), t, has)).toBe('offline')
  })

  it("shows a service's worded refusal, and the catalogue's words for sign-in", () => {
    const refusal = failureOf(402, { error: { code: 'SUBSCRIPTION_REQUIRED', message: 'Недоступно — оформите подписку' } })
    expect(describeError(refusal, t, has)).toBe('Недоступно — оформите подписку')
    const login = failureOf(401, { error: { code: 'INVALID_CREDENTIALS', message: 'invalid email or password' } })
    expect(describeError(login, t, has)).toBe('bad password')
  })

  it('names the field of bad input in the reader words', () => {
    const f = failureOf(400, { error: { code: 'INVALID_ARGUMENT', message: 'too short', field: 'password' } })
    expect(describeError(f, t, has)).toBe('check Пароль: too short')
  })
})
