// Numbers, money and dates in the reader's locale, through Intl.

export interface Money {
  currency?: string | null
  amount_minor?: string | number | null
}

const cache = new Map<string, Intl.NumberFormat | Intl.DateTimeFormat>()

function numberFormat(locale: string, options: Intl.NumberFormatOptions): Intl.NumberFormat {
  const key = `n|${locale}|${JSON.stringify(options)}`
  let f = cache.get(key) as Intl.NumberFormat | undefined
  if (!f) cache.set(key, (f = new Intl.NumberFormat(locale, options)))
  return f
}

export function formatNumber(locale: string, n: number | string | null | undefined): string {
  return numberFormat(locale, {}).format(Number(n ?? 0))
}

/** The platform's selling currency when a deployment names none (`payment.currency`'s default). */
export const DEFAULT_CURRENCY = 'RUB'

/** `{currency, amount_minor}` as money (minor units by the currency's own digits). */
export function formatMoney(locale: string, money: Money | null | undefined): string {
  const currency = money?.currency || DEFAULT_CURRENCY
  // The narrow symbol: `₽790.00` rather than `RUB 790.00` for English readers.
  const f = numberFormat(locale, { style: 'currency', currency, currencyDisplay: 'narrowSymbol' })
  const digits = f.resolvedOptions().maximumFractionDigits ?? 2
  return f.format(Number(money?.amount_minor ?? 0) / 10 ** digits)
}

/** Minor units from the API → major units for a person to read or edit (`1250` USD → `12.5`). */
export function toMajor(locale: string, money: Money): number {
  const currency = money.currency || DEFAULT_CURRENCY
  const digits = numberFormat(locale, { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2
  return Number(money.amount_minor ?? 0) / 10 ** digits
}

/** Major units typed by a person → minor units for the API (`12.5` USD → `1250`). */
export function toMinor(locale: string, currency: string, major: number): number {
  const digits = numberFormat(locale, { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2
  return Math.round(major * 10 ** digits)
}

export function formatDate(locale: string, iso: string | null | undefined, withTime = true, timeZone?: string): string {
  if (!iso) return ''
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return ''
  const key = `d|${locale}|${withTime}|${timeZone ?? ''}`
  let f = cache.get(key) as Intl.DateTimeFormat | undefined
  if (!f) {
    f = new Intl.DateTimeFormat(locale, {
      dateStyle: 'medium',
      ...(withTime ? { timeStyle: 'short' } : {}),
      ...(timeZone ? { timeZone } : {}),
    })
    cache.set(key, f)
  }
  return f.format(d)
}

/** "3 minutes ago" in the reader's language. */
export function formatRelative(locale: string, iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return ''
  const secs = Math.round((new Date(iso).getTime() - now) / 1000)
  const rtf = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' })
  const abs = Math.abs(secs)
  if (abs < 60) return rtf.format(secs, 'second')
  if (abs < 3600) return rtf.format(Math.round(secs / 60), 'minute')
  if (abs < 86400) return rtf.format(Math.round(secs / 3600), 'hour')
  return rtf.format(Math.round(secs / 86400), 'day')
}

/** A wait as a person reads it: whole minutes as minutes, else seconds (`1 min`, `15 s`). */
export function formatWait(locale: string, ms: number | string | null | undefined): string {
  const n = Number(ms ?? 0)
  if (n >= 60_000 && n % 60_000 === 0) return numberFormat(locale, { style: 'unit', unit: 'minute', unitDisplay: 'short' }).format(n / 60_000)
  return numberFormat(locale, { style: 'unit', unit: 'second', unitDisplay: 'short', maximumFractionDigits: 1 }).format(n / 1000)
}

/** Basis points as a share (`9950` → `99.5%`). */
export function formatShare(locale: string, bp: number | string | null | undefined): string {
  return numberFormat(locale, { style: 'percent', maximumFractionDigits: 2 }).format(Number(bp ?? 0) / 10_000)
}
