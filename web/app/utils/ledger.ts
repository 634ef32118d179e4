// A ledger entry's line in the reader's language. The services write their entries' reasons
// in fixed shapes (`top-up (stripe)`, `subscription:basic:2026-12`, `subscription:basic:renewal`,
// `service credit: the Basic plan missed its service level in 2026-11`); those are worded here,
// anything else (an operator's own reason) is shown as written.

/** What to say: a message key with its values, or the text as written. */
export type Line = { key: string, values: Record<string, string> } | { text: string }

const PROVIDERS: Record<string, string> = { stripe: 'Stripe', yookassa: 'YooKassa' }

/** The line of `description`, with plan titles from `title` and months worded by `month`. */
export function ledgerLine(description: string, title: (plan: string) => string, month: (yyyyMm: string) => string): Line {
  const d = description.trim()
  let m = /^top-up \(([a-z]+)\)$/.exec(d)
  if (m) {
    const provider = m[1] ?? ''
    return provider === 'sandbox' ? { key: 'ledger.sandbox', values: {} } : { key: 'ledger.via', values: { provider: PROVIDERS[provider] ?? provider } }
  }
  m = /^subscription:([a-z0-9_-]+):renewal$/.exec(d)
  if (m) return { key: 'ledger.renewal', values: { plan: title(m[1] ?? '') } }
  m = /^subscription:([a-z0-9_-]+):(\d{4}-\d{2})$/.exec(d)
  if (m) return { key: 'ledger.subscription', values: { plan: title(m[1] ?? ''), month: month(m[2] ?? '') } }
  m = /^service credit: the (.+) plan missed its service level in (\d{4}-\d{2})$/.exec(d)
  if (m) return { key: 'ledger.credit', values: { plan: m[1] ?? '', month: month(m[2] ?? '') } }
  m = /^(?:adjustment|refund to card): (.*)$/s.exec(d)
  if (m) return { text: m[1] ?? '' }
  return { text: d }
}

/** `YYYY-MM` as a month and year in `locale` (UTC). */
export function monthOf(locale: string, yyyyMm: string): string {
  const [y, mo] = yyyyMm.split('-').map(Number)
  if (!y || !mo) return yyyyMm
  return new Intl.DateTimeFormat(locale, { month: 'long', year: 'numeric', timeZone: 'UTC' }).format(Date.UTC(y, mo - 1, 1))
}
