// The SkillUp web console: a single-page app (no server rendering) built by `nuxt generate`
// into static files the edge embeds and serves at `/` (see scripts/build-console.mjs).
export default defineNuxtConfig({
  compatibilityDate: '2026-11-01',
  ssr: false,
  telemetry: false,
  devtools: { enabled: false },
  modules: ['@pinia/nuxt', '@nuxtjs/i18n'],
  css: ['~/assets/styles/main.scss'],
  // One fixed id: the build is reproducible (the edge's copy is checked against a fresh one).
  buildId: 'console',
  experimental: { appManifest: false, payloadExtraction: false },
  app: {
    head: {
      title: 'SkillUp',
      meta: [
        { name: 'description', content: 'SkillUp — AI writing for teachers, authors and teams' },
        { name: 'color-scheme', content: 'light dark' },
        { name: 'theme-color', content: '#ffffff', media: '(prefers-color-scheme: light)' },
        { name: 'theme-color', content: '#14161a', media: '(prefers-color-scheme: dark)' },
      ],
      link: [{ rel: 'icon', type: 'image/svg+xml', href: '/favicon.svg' }],
    },
  },
  i18n: {
    strategy: 'no_prefix',
    vueI18n: './i18n.config.ts',
    defaultLocale: 'en',
    locales: [
      // The messages come from i18n.config.ts (bundled: lazy files get keys hashed from their
      // absolute path, which would make the build depend on where the checkout is).
      { code: 'en', language: 'en-US', name: 'English' },
      { code: 'ru', language: 'ru-RU', name: 'Русский' },
    ],
    detectBrowserLanguage: {
      useCookie: true,
      cookieKey: 'skillup_locale',
      redirectOn: 'no prefix',
      fallbackLocale: 'en',
    },
  },
  typescript: { strict: true, typeCheck: false },
  vite: { build: { target: 'es2022' } },
  devServer: { port: 3000 },
  // `nuxt dev` talks to a local `skillup up`.
  nitro: {
    // Only the app's shell: every page is the same document, routed in the browser.
    prerender: { crawlLinks: false, routes: ['/'] },
    devProxy: { '/api': { target: 'http://127.0.0.1:8080/api', ws: true, changeOrigin: false } },
  },
})
