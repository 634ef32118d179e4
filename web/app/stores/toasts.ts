// Short messages in a live region: results that arrived, saved changes, failures.
import { defineStore } from 'pinia'
import { ref } from 'vue'

export interface Toast {
  id: number
  text: string
  kind: 'info' | 'success' | 'error'
  /** Where "Open" goes, if anywhere. */
  to?: string
}

export const useToasts = defineStore('toasts', () => {
  const items = ref<Toast[]>([])
  let next = 1

  function show(text: string, kind: Toast['kind'] = 'info', to?: string, ms = 6000) {
    const id = next++
    items.value.push({ id, text, kind, to })
    if (items.value.length > 4) items.value.shift()
    setTimeout(() => dismiss(id), ms)
    return id
  }

  function dismiss(id: number) {
    items.value = items.value.filter((t) => t.id !== id)
  }

  return { items, show, dismiss }
})
