// The two ways the console runs a person's action: in a form (busy while it runs, its failure
// kept to show beside the form) or from a button (a failure becomes a toast). Either way the
// failure is said in the reader's language (see utils/errors).
import { onMounted, ref, shallowRef } from 'vue'
import { useToasts } from '~/stores/toasts'
import { ApiFailure, describe } from '~/utils/errors'

export function useAction() {
  const busy = ref(false)
  const error = shallowRef<unknown>(null)
  async function run<T>(action: () => Promise<T>): Promise<T | undefined> {
    busy.value = true
    error.value = null
    try {
      return await action()
    } catch (e) {
      error.value = e
      return undefined
    } finally {
      busy.value = false
    }
  }
  return { busy, error, run }
}

export function useAttempt() {
  const { t, te } = useI18n()
  const toasts = useToasts()
  return async function attempt<T>(action: () => Promise<T>): Promise<T | undefined> {
    try {
      return await action()
    } catch (e) {
      toasts.show(describe(e, t, te), 'error')
      return undefined
    }
  }
}

/** A step an emailed link stands for, done on arrival with the link's token. */
export function useLinkStep(step: (token: string) => Promise<void>) {
  const { t } = useI18n()
  const token = useLinkToken()
  const state = ref<'working' | 'done' | 'failed'>('working')
  const error = shallowRef<unknown>(null)
  onMounted(async () => {
    try {
      if (!token) throw new ApiFailure(400, 'LINK_INVALID', t('links.invalid'))
      await step(token)
      state.value = 'done'
    } catch (e) {
      error.value = e
      state.value = 'failed'
    }
  })
  return { state, error }
}
