// Wires the session into the API client and the router: the client asks the session for its
// token and language; when the session ends in any tab, this one goes to the sign-in page.
import { configureAuth } from '~/api/client'
import { useSession } from '~/stores/session'

export default defineNuxtPlugin((nuxtApp) => {
  const session = useSession()
  const i18n = nuxtApp.$i18n as { locale: { value: string } }
  configureAuth({
    token: () => session.token(),
    renew: (rejected) => session.refresh(rejected).catch(() => false),
    locale: () => i18n.locale.value,
  })
  const router = useRouter()
  session.onEnd((why) => {
    const here = router.currentRoute.value
    if (here.meta.public) return
    void router.push({ path: '/signin', query: { next: here.fullPath, why } })
  })
})
