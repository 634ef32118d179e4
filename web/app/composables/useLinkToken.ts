// The token of an emailed link (`?token=…`), taken out of the address bar at once so it stays
// out of the history, screenshots and any later Referer.
export function useLinkToken(): string {
  const route = useRoute()
  const token = typeof route.query.token === 'string' ? route.query.token : ''
  if (token && typeof history !== 'undefined') {
    history.replaceState(history.state, '', route.path)
  }
  return token
}
