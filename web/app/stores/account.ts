// What the person may use: the catalog (functions with their parameters, topics), the plans and
// the current subscription — loaded once, refreshed after subscribing.
import { defineStore } from 'pinia'
import { ref, computed } from 'vue'
import { api, unwrap, type CatalogFunction, type Plan, type Subscription, type Topic } from '~/api/client'

export const useAccount = defineStore('account', () => {
  const functions = ref<CatalogFunction[]>([])
  const topics = ref<Topic[]>([])
  const plans = ref<Plan[]>([])
  /** The one currency this deployment sells in (money is paid and plans are priced in it). */
  const currency = ref('')
  const subscription = ref<Subscription | null>(null)
  const loaded = ref(false)

  /** The plan in force: the subscription's, else the free plan. */
  const plan = computed<Plan | undefined>(() => {
    const sub = subscription.value
    if (sub?.plan && sub.status !== 'SUBSCRIPTION_STATUS_EXPIRED') return sub.plan
    return plans.value.find((p) => p.id === 'free') ?? plans.value[0]
  })

  function allowed(fn: CatalogFunction | undefined): boolean {
    if (!fn) return false
    const list = plan.value?.functions ?? []
    return list.includes('*') || list.includes(fn.id ?? '')
  }

  /** The cheapest plan that has `fn`. */
  function planFor(fn: CatalogFunction | undefined): Plan | undefined {
    return [...plans.value]
      .sort((a, b) => Number(a.price?.amount_minor ?? 0) - Number(b.price?.amount_minor ?? 0))
      .find((p) => p.functions?.includes('*') || p.functions?.includes(fn?.id ?? ''))
  }

  async function loadSubscription() {
    try {
      subscription.value = await unwrap(api.GET('/api/subscriptions/me'))
    } catch (e) {
      // No subscription yet is a 404: the free plan applies.
      if ((e as { status?: number }).status === 404) subscription.value = null
      else throw e
    }
  }

  async function load(force = false) {
    if (loaded.value && !force) return
    const [f, tp, p] = await Promise.all([
      unwrap(api.GET('/api/catalog/functions')),
      unwrap(api.GET('/api/catalog/topics')),
      unwrap(api.GET('/api/subscriptions/plans')),
      loadSubscription(),
    ])
    functions.value = f.functions ?? []
    topics.value = tp.topics ?? []
    plans.value = p.plans ?? []
    currency.value = p.currency ?? ''
    loaded.value = true
  }

  return { functions, topics, plans, currency, subscription, plan, loaded, allowed, planFor, load, loadSubscription }
})
