// Pages are for signed-in people unless they say `public: true`; the session is restored from
// its cookie once, on the first navigation.
import { useSession } from '~/stores/session'

export default defineNuxtRouteMiddleware(async (to) => {
  const session = useSession()
  await session.restore()
  if (to.meta.public) {
    if (to.meta.guestOnly && session.signedIn) return navigateTo('/generate')
    return
  }
  if (!session.signedIn) {
    return navigateTo({ path: '/signin', query: to.fullPath === '/' ? {} : { next: to.fullPath } })
  }
})
