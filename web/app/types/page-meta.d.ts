declare module '#app' {
  interface PageMeta {
    /** Open without signing in. */
    public?: boolean
    /** Only for people not signed in (a signed-in person goes to Generate). */
    guestOnly?: boolean
  }
}

export {}
