import { describe, expect, it } from 'vitest'
import { usePages } from '~/composables/usePages'

describe('a list read page by page', () => {
  it('starts again on search, appends on more, and keeps a failure without losing the list', async () => {
    const asked: string[] = []
    let fail = false
    const pages = usePages(async (token) => {
      asked.push(token)
      if (fail) throw new Error('down')
      return token === '' ? { items: [1, 2], next: 'p2' } : { items: [3], next: '' }
    })
    expect(pages.loaded.value).toBe(false)
    await pages.search()
    expect([pages.items.value, pages.next.value, pages.loaded.value]).toEqual([[1, 2], 'p2', true])
    await pages.more()
    expect([pages.items.value, pages.next.value]).toEqual([[1, 2, 3], ''])
    fail = true
    await pages.search()
    expect(pages.items.value).toEqual([1, 2, 3])
    expect((pages.error.value as Error).message).toBe('down')
    fail = false
    await pages.search()
    expect([pages.items.value, pages.error.value]).toEqual([[1, 2], null])
    expect(asked).toEqual(['', 'p2', '', ''])
    expect(pages.busy.value).toBe(false)
  })

  it('keeps the newest search when an older answer arrives late', async () => {
    const waiting: Array<() => void> = []
    const pages = usePages(async (token) => {
      const query = waiting.length
      await new Promise<void>((done) => waiting.push(done))
      return { items: [query === 0 ? 'everyone' : 'found'], next: token }
    })
    const first = pages.search()
    const second = pages.search()
    waiting[1]!()
    await second
    waiting[0]!()
    await first
    expect(pages.items.value).toEqual(['found'])
  })
})
