// A list read page by page (the API's cursor pages): the first page again on `search`, the next
// one appended on `more`; busy and the failure as in useAction. Only the newest request's
// answer is kept: a search typed while the first page is still loading is never overwritten by
// that older answer arriving late.
import { ref, type Ref } from 'vue'
import { useAction } from './useAction'

export function usePages<T>(fetch: (token: string) => Promise<{ items: T[]; next: string }>) {
  const action = useAction()
  const items = ref([]) as Ref<T[]>
  const next = ref('')
  const loaded = ref(false)
  let latest = 0

  async function search() {
    const mine = ++latest
    const got = await action.run(() => fetch(''))
    if (mine !== latest) return
    loaded.value = true
    if (!got) return
    items.value = got.items
    next.value = got.next
  }

  async function more() {
    const mine = ++latest
    const got = await action.run(() => fetch(next.value))
    if (mine !== latest || !got) return
    items.value = [...items.value, ...got.items]
    next.value = got.next
  }

  return { items, next, loaded, busy: action.busy, error: action.error, search, more }
}
