// How many times the session has been renewed in this browser: a count, never a token, kept
// where every tab reads the same value in the same order. Tabs take turns renewing under a Web
// Lock; the count tells the tab that gets the lock next whether another tab renewed after its own
// token was issued (then that tab's token is on its way by broadcast and renewing again would be
// wasted). IndexedDB, because its transactions are serialised by the browser for the whole
// origin: a count written before the lock is let go is read by whoever takes it next.
// localStorage would not do — Chromium keeps a copy per tab process and updates it after the
// fact — and clocks are no order either (each tab's may differ, as fake clocks in tests do).
// Where IndexedDB is missing the count stays 0 and tabs simply renew in turn, which is safe.

const DB = 'skillup-session'
const STORE = 'renewals'
const KEY = 'count'

let opening: Promise<IDBDatabase | undefined> | undefined

function open(): Promise<IDBDatabase | undefined> {
  opening ??= new Promise((done) => {
    try {
      if (typeof indexedDB === 'undefined') return done(undefined)
      const req = indexedDB.open(DB, 1)
      req.onupgradeneeded = () => req.result.createObjectStore(STORE)
      req.onsuccess = () => done(req.result)
      req.onerror = () => done(undefined)
      req.onblocked = () => done(undefined)
    } catch {
      done(undefined)
    }
  })
  return opening
}

function run(mode: IDBTransactionMode, step: (store: IDBObjectStore, set: (n: number) => void) => void): Promise<number> {
  return open().then(
    (db) =>
      new Promise<number>((done) => {
        if (!db) return done(0)
        let n = 0
        try {
          const tx = db.transaction(STORE, mode)
          step(tx.objectStore(STORE), (v) => (n = v))
          // The value counts once its transaction has committed, not before.
          tx.oncomplete = () => done(n)
          tx.onerror = () => done(0)
          tx.onabort = () => done(0)
        } catch {
          done(0)
        }
      }),
  )
}

/** The number of renewals so far (0 when unknown). */
export function renewals(): Promise<number> {
  return run('readonly', (store, set) => {
    const req = store.get(KEY)
    req.onsuccess = () => set(Number(req.result ?? 0))
  })
}

/** Counts one more renewal; the new count, committed (0 when unknown). */
export function renewed(): Promise<number> {
  return run('readwrite', (store, set) => {
    const req = store.get(KEY)
    req.onsuccess = () => {
      const next = Number(req.result ?? 0) + 1
      store.put(next, KEY)
      set(next)
    }
  })
}
